"""The original Perceiver classifier (Jaegle et al., ICML 2021) over any grid input.

inputs [batch, *index_dims, channels] -> concat Fourier features of the grid -> PerceiverEncoder
(interleaved cross-attends and latent blocks) -> ProjectionDecoder (mean over latents ->
zero-initialised linear) -> logits [batch, num_classes].
Any number of index dims: signals [T, C], images [H, W, C], volumes [D, H, W, C]
(config.fourier.max_resolution has one entry per index dim; None: the index dims).

Variants:
- 'imagenet': the paper's ImageNet model, 224x224 RGB, 64 bands at max resolution 224, 512
  latents x 1024, 8 cross-attends (1 head) each followed by a block of 6 self-attention layers
  (8 heads), widening 1; weights shared by all cross-attends but the first and by all blocks:
  44.9M parameters, 78.0% top-1 (LAMB, 120 epochs, batch 1024, TPU pods).
- 'cifar10_study': the minimal study's model, 32x32 RGB, 128 latents x 256, one cross-attend
  and 4 self-attention layers; about 52% CIFAR-10 accuracy in 10 epochs with AdamW.
"""

import jax.numpy as jnp
import ml_collections

from perceiver_jax.nn.decoder import ProjectionDecoder
from perceiver_jax.nn.encoder import PerceiverEncoder
from perceiver_jax.nn.models import Perceiver
from perceiver_jax.tasks.building import dtypes, make, task_config

TASK = "perceiver_classification"
VARIANTS = ("imagenet", "cifar10_study")


def default_config(variant: str = None) -> ml_collections.ConfigDict:
  """The original Perceiver of `variant` ('imagenet' by default)."""
  c = task_config(TASK, VARIANTS, variant)
  encoder = dict(num_cross_attention_heads=1, cross_attention_widening_factor=1,
                 self_attention_widening_factor=1, use_query_residual=True,
                 first_cross_attention_layer_shared=False,
                 first_self_attention_block_shared=True, dropout_rate=0.0,
                 attention=dict(dropout_rate=0.0))
  if c.variant == "imagenet":
    c.input_shape, c.num_classes = (224, 224, 3), 1000
    c.fourier = dict(num_frequency_bands=64, max_resolution=(224, 224))
    c.encoder = dict(encoder, num_latents=512, num_latent_channels=1024,
                     num_cross_attention_layers=8, num_self_attention_blocks=8,
                     num_self_attention_layers_per_block=6, num_self_attention_heads=8)
  else:
    c.input_shape, c.num_classes = (32, 32, 3), 10
    c.fourier = dict(num_frequency_bands=64, max_resolution=(32, 32))
    c.encoder = dict(encoder, num_latents=128, num_latent_channels=256,
                     num_cross_attention_layers=1, num_self_attention_blocks=1,
                     num_self_attention_layers_per_block=4, num_self_attention_heads=8)
  return c


def tiny_config(variant: str = None) -> ml_collections.ConfigDict:
  """The same structure at test size: 8x8 RGB, 10 classes, 4 latents x 16."""
  c = default_config(variant)
  c.input_shape, c.num_classes = (8, 8, 3), 10
  c.fourier = dict(num_frequency_bands=2, max_resolution=(8, 8))
  c.encoder.update(num_latents=4, num_latent_channels=16, num_self_attention_heads=2,
                   num_cross_attention_layers=min(c.encoder.num_cross_attention_layers, 2),
                   num_self_attention_blocks=min(c.encoder.num_self_attention_blocks, 2),
                   num_self_attention_layers_per_block=1)
  return c


def build(config) -> Perceiver:
  """The Perceiver model `config` describes; ValueError when config.fourier.max_resolution
  does not have one entry per index dim of config.input_shape (None: the index dims)."""
  fourier = dict(config.fourier)
  index_dims = tuple(config.input_shape)[:-1]
  resolution = fourier.get("max_resolution")
  if resolution is not None:
    if len(resolution) != len(index_dims):
      raise ValueError(f"config.model.fourier.max_resolution={tuple(resolution)} needs one "
                       f"entry per index dim of config.model.input_shape="
                       f"{tuple(config.input_shape)}, i.e. {len(index_dims)}: set it to e.g. "
                       f"{index_dims} (or None, the index dims).")
    fourier["max_resolution"] = tuple(resolution)
  return Perceiver(make(PerceiverEncoder, config.encoder, "config.encoder", config),
                   ProjectionDecoder(config.num_classes, **dtypes(config)), **fourier)


def example_inputs(config, batch_size: int = 1):
  """Zero inputs [batch_size, *config.input_shape]."""
  return jnp.zeros((batch_size,) + tuple(config.input_shape), jnp.float32)
