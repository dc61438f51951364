"""Perceiver IO optical flow (the paper's Sintel/KITTI model).

frames [batch, 2, H, W, 3] -> FlowAdapter (3x3 patches of both frames, Dense(64), 2-D Fourier
features) -> PerceiverEncoder -> InputQuery (every pixel's adapted input is its query) ->
PerceiverDecoder(output_channels=2) -> FlowOutput (x config.output_scale, officially 1/100)
-> flow [batch, H, W, 2].
Decode a random subset of pixels in training with `subsampled_points` ([k] flat pixel indices):
the output is then [batch, k, 2].

Paper model: 368x496 training crops (AutoFlow), 2048 latents x 512, one cross-attend (1 head),
24 self-attention layers (16 heads), widening 1, decoder 1 head without query residual;
64 Fourier bands at max resolution (368, 496). Sintel EPE 1.81 clean / 2.42 final, KITTI 4.98.
"""

import jax.numpy as jnp
import ml_collections

from perceiver_jax.io.adapters import FlowAdapter
from perceiver_jax.nn.decoder import PerceiverDecoder
from perceiver_jax.nn.encoder import PerceiverEncoder
from perceiver_jax.nn.models import PerceiverIO
from perceiver_jax.io.output_adapters import FlowOutput
from perceiver_jax.io.output_queries import InputQuery
from perceiver_jax.tasks.building import make, task_config

TASK = "optical_flow"
VARIANTS = ("default",)


def default_config(variant: str = None) -> ml_collections.ConfigDict:
  """The paper's optical-flow model at its 368x496 training size."""
  c = task_config(TASK, VARIANTS, variant)
  c.image_size = (368, 496)
  c.input_adapter = dict(out_channels=64, num_frequency_bands=64, max_resolution=(368, 496))
  c.encoder = dict(
      num_latents=2048, num_latent_channels=512, num_cross_attention_layers=1,
      num_self_attention_blocks=1, num_self_attention_layers_per_block=24,
      num_cross_attention_heads=1, num_self_attention_heads=16,
      cross_attention_widening_factor=1, self_attention_widening_factor=1,
      use_query_residual=True, dropout_rate=0.0, attention=dict(dropout_rate=0.0))
  c.decoder = dict(num_heads=1, widening_factor=1, use_query_residual=False)
  # FlowOutput multiplies the decoder's output by this: the official 1/100 (the paper's long
  # training); a larger one lets a short run reach flows of a few pixels sooner.
  c.output_scale = 0.01
  return c


def tiny_config(variant: str = None) -> ml_collections.ConfigDict:
  """The same model at test size: 6x8 frames, 4 latents x 16."""
  c = default_config(variant)
  c.image_size = (6, 8)
  c.input_adapter.update(out_channels=8, num_frequency_bands=2, max_resolution=(6, 8))
  c.encoder.update(num_latents=4, num_latent_channels=16, num_self_attention_layers_per_block=2,
                   num_self_attention_heads=2)
  return c


def build(config) -> PerceiverIO:
  """The PerceiverIO model `config` describes."""
  scale = config.output_scale
  if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
    raise ValueError(f"config.output_scale must be a number > 0 (the official 0.01), got "
                     f"{scale!r}.")
  return PerceiverIO(
      encoder=make(PerceiverEncoder, config.encoder, "config.encoder", config),
      output_query=InputQuery(),
      decoder=make(PerceiverDecoder, config.decoder, "config.decoder", config,
                   output_channels=2),
      input_adapter=make(FlowAdapter, config.input_adapter, "config.input_adapter", config),
      output_adapter=FlowOutput(tuple(config.image_size), scale=config.output_scale))


def example_inputs(config, batch_size: int = 1):
  """Zero frame pairs [batch_size, 2, H, W, 3]."""
  return jnp.zeros((batch_size, 2) + tuple(config.image_size) + (3,), jnp.float32)
