"""Autoregressive byte language modelling with Perceiver AR.

ids [batch, max_context] (BytesTokenizer ids) -> PerceiverAR -> logits [batch, num_latents,
262] for the last num_latents positions. Training feeds max_context + 1 packed bytes per row
(`objectives`: inputs are the first max_context, targets the next byte at every latent
position) and reports bits per byte; `generation.generate` samples with a key/value cache.

Variants:
- 'bytes_8k': an 8,192-byte context with 1,024 latents x 1,024 channels, 12 self-attention
  layers (16 heads), squared-ReLU MLPs (x4), rotary embeddings on half of each head's dims:
  sized like the paper's long-context byte models (Hawthorne et al., 2022, trained on PG-19
  and Books); not a reproduction of one of its table rows.
"""

import jax.numpy as jnp
import ml_collections

from perceiver_jax.nn.perceiver_ar import PerceiverAR
from perceiver_jax.tasks.building import make, task_config
from perceiver_jax.data.tokenizer import VOCAB_SIZE

TASK = "language_modeling"
VARIANTS = ("bytes_8k",)


def default_config(variant: str = None) -> ml_collections.ConfigDict:
  """The 8k-context byte model."""
  c = task_config(TASK, VARIANTS, variant)
  c.perceiver_ar = dict(
      vocab_size=VOCAB_SIZE, max_context=8192, num_latents=1024, num_channels=1024,
      num_heads=16, num_layers=12, widening_factor=4, activation="squared_relu",
      rotary_fraction=0.5, num_self_attention_rotary_layers=-1, absolute_positions=False,
      dropout_rate=0.0, cross_attention_dropout=0.0, attention=dict(dropout_rate=0.0),
      tied_embeddings=False, output_bias=True, final_norm=True, latent_kv_query_norm=False,
      qkv_bias=True, cross_attention_out_bias=True, self_attention_out_bias=True,
      mlp_bias=True, remat=False)
  return c


def tiny_config(variant: str = None) -> ml_collections.ConfigDict:
  """The same model at test size: 32-byte context, 8 latents x 16, 2 layers."""
  c = default_config(variant)
  c.perceiver_ar.update(max_context=32, num_latents=8, num_channels=16, num_heads=2,
                        num_layers=2, widening_factor=2)
  return c


def build(config) -> PerceiverAR:
  """The PerceiverAR `config` describes."""
  return make(PerceiverAR, config.perceiver_ar, "config.perceiver_ar", config)


def example_inputs(config, batch_size: int = 1):
  """PAD ids [batch_size, max_context] (int32)."""
  return jnp.zeros((batch_size, config.perceiver_ar.max_context), jnp.int32)
