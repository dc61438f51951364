"""Perceiver IO masked language modelling on UTF-8 bytes (the paper's byte-level BERT).

ids [batch, max_seq_len] (BytesTokenizer ids, padded with PAD; `pad_mask = ids != PAD`) ->
TextAdapter (byte embedding + learned positions) -> PerceiverEncoder -> TrainableQuery
[max_seq_len, 768] -> PerceiverDecoder -> EmbeddingOutput (logits tied to the byte embedding +
bias) -> logits [batch, max_seq_len, 262]. Trained by `train.objectives` (the
`masked_language_modeling` objective): `masking.mask_tokens`, scored at the masked positions only.
With `output_query_channels` set (None by default: the tied head), the queries have that width
and a Dense layer maps the decoded queries to the logits instead (GridOutput; krasserm's
untied MLM). With `output_query='inputs'` the queries are the adapted inputs themselves
(InputQuery: each position's embedding, position and, with `input_adapter.conv_width`, its
neighbours), as Perceiver IO's flow decoder queries; the paper's MLM uses 'trainable'.

Paper model (Perceiver IO, App. F.2 / Table 11; qk and head counts from the official code):
2048 bytes x 768 channels, 256 latents x 1280, one cross-attend (8 heads, qk 256, v 1280),
26 self-attention layers (8 heads, qk 256, v 1280, MLP 1280), 2048 output queries x 768
decoded with 8 heads (qk 256, v 768, MLP 768), no query residual: about 201M parameters.
Pre-trained with LAMB (lr 1.25e-3, 500k steps; TF Model Garden's config uses batch 512) on
C4 + Wikipedia; TPU pods.
"""

import jax.numpy as jnp
import ml_collections

from perceiver_jax.io.adapters import TextAdapter
from perceiver_jax.nn.decoder import PerceiverDecoder, TrainableQuery
from perceiver_jax.nn.encoder import PerceiverEncoder
from perceiver_jax.nn.models import PerceiverIO
from perceiver_jax.io.output_adapters import EmbeddingOutput, GridOutput
from perceiver_jax.io.output_queries import InputQuery
from perceiver_jax.tasks.building import dtypes, make, task_config
from perceiver_jax.data.tokenizer import VOCAB_SIZE

TASK = "masked_language_modeling"
VARIANTS = ("bytes",)
OUTPUT_QUERIES = ("trainable", "inputs")


def text_encoder_config() -> dict:
  """The byte model's encoder (shared with sequence classification)."""
  return dict(
      num_latents=256, num_latent_channels=1280, num_cross_attention_layers=1,
      num_self_attention_blocks=1, num_self_attention_layers_per_block=26,
      num_cross_attention_heads=8, num_self_attention_heads=8,
      cross_attention_qk_channels=256, cross_attention_v_channels=1280,
      self_attention_qk_channels=256, self_attention_v_channels=1280,
      cross_attention_widening_factor=1, self_attention_widening_factor=1,
      use_query_residual=True, dropout_rate=0.0, attention=dict(dropout_rate=0.0))


def tiny_text_encoder_config() -> dict:
  return dict(text_encoder_config(), num_latents=4, num_latent_channels=16,
              num_self_attention_layers_per_block=2, num_cross_attention_heads=2,
              num_self_attention_heads=2, cross_attention_qk_channels=8,
              cross_attention_v_channels=16, self_attention_qk_channels=8,
              self_attention_v_channels=16)


def default_config(variant: str = None) -> ml_collections.ConfigDict:
  """The paper's byte-level MLM model."""
  c = task_config(TASK, VARIANTS, variant)
  c.max_seq_len = 2048
  c.vocab_size = VOCAB_SIZE
  c.input_adapter = dict(num_channels=768, position_init="normal", conv_width=0)
  c.encoder = text_encoder_config()
  c.decoder = dict(num_heads=8, qk_channels=256, v_channels=768, widening_factor=1,
                   use_query_residual=False)
  c.output_query_channels = None  # None: queries of the input width, logits tied to the embedding.
  c.output_query = "trainable"  # Or 'inputs': the adapted inputs are the decoder queries.
  return c


def tiny_config(variant: str = None) -> ml_collections.ConfigDict:
  """The same model at test size: 12 bytes x 8 channels, 4 latents x 16."""
  c = default_config(variant)
  c.max_seq_len = 12
  c.input_adapter.num_channels = 8
  c.encoder = tiny_text_encoder_config()
  c.decoder.update(num_heads=2, qk_channels=8, v_channels=8)
  return c


def build(config) -> PerceiverIO:
  """The PerceiverIO model `config` describes."""
  adapter = make(TextAdapter, config.input_adapter, "config.input_adapter", config,
                 vocab_size=config.vocab_size, max_seq_len=config.max_seq_len)
  query_channels = config.get("output_query_channels")  # Absent from older saved configs.
  query_kind = config.get("output_query", "trainable")
  if query_kind not in OUTPUT_QUERIES:
    raise ValueError(f"config.output_query must be one of {OUTPUT_QUERIES}, got {query_kind!r}.")
  if query_kind == "inputs" and query_channels is not None:
    raise ValueError(f"config.output_query='inputs' decodes queries of the input width "
                     f"(config.input_adapter.num_channels); set config.output_query_channels "
                     f"to None, got {query_channels!r}.")
  if query_channels is not None and (not isinstance(query_channels, int) or query_channels < 1):
    raise ValueError(f"config.output_query_channels must be a positive int (an untied output "
                     f"layer) or None (logits tied to the input embedding), got "
                     f"{query_channels!r}.")
  if query_channels is None:
    query_channels = adapter.num_channels
    output_adapter = EmbeddingOutput(config.vocab_size, **dtypes(config))
  else:
    output_adapter = GridOutput((config.max_seq_len,), num_output_channels=config.vocab_size,
                                **dtypes(config))
  if query_kind == "inputs":
    output_query = InputQuery()
  else:
    output_query = TrainableQuery(config.max_seq_len, query_channels, **dtypes(config))
  return PerceiverIO(
      encoder=make(PerceiverEncoder, config.encoder, "config.encoder", config),
      output_query=output_query,
      decoder=make(PerceiverDecoder, config.decoder, "config.decoder", config),
      input_adapter=adapter,
      output_adapter=output_adapter)


def example_inputs(config, batch_size: int = 1):
  """PAD ids [batch_size, max_seq_len] (int32)."""
  return jnp.zeros((batch_size, config.max_seq_len), jnp.int32)
