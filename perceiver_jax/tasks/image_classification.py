"""Perceiver IO image classification (ImageNet), in the paper's three input variants.

images [batch, H, W, 3] -> ImageAdapter -> PerceiverEncoder -> one TrainableQuery ->
PerceiverDecoder(output_channels=num_classes) -> ClassificationOutput -> logits [batch, classes].

Variants (Perceiver IO paper, ImageNet, 512 latents x 1024, 8 blocks x 6 self-attention layers
with shared weights, 1 cross-attention head, 8 self-attention heads, widening 1; decoder query
[1, 1024], one head):
- 'fourier': raw pixels + 2-D Fourier features (64 bands, max resolution 224): 79.0% top-1.
- 'learned': 1x1 conv to 256 channels + learned positions [224*224, 256] projected by a
  Dense(256): 72.7%. The official code decodes it without the query residual.
- 'conv': 7x7/2 conv (64) + BatchNorm + ReLU + 3x3/2 max-pool, then Fourier features of the
  56x56 grid (64 bands, max resolution 56): 82.1%.
Hardware assumed for the paper figures: TPU pods, batch 1024, bf16-friendly.
The transformers ports of these models (`perceiver_jax.convert`) differ in two settings: their
conv stem pads as PyTorch does (input_adapter.stem_padding='transformers': 55x55 grid at 224)
and their learned variant decodes with the query residual.
"""

import ml_collections
import jax.numpy as jnp

from perceiver_jax.io.adapters import ImageAdapter
from perceiver_jax.nn.models import PerceiverIO
from perceiver_jax.tasks.building import classification_model, imagenet_encoder, task_config

TASK = "image_classification"
VARIANTS = ("fourier", "learned", "conv")

_INPUT_ADAPTERS = {
    "fourier": dict(prep_type="pixels", position_encoding="fourier", num_frequency_bands=64,
                    max_resolution=(224, 224)),
    "learned": dict(prep_type="conv1x1", out_channels=256, position_encoding="trainable",
                    num_position_channels=256, project_pos_dim=256),
    "conv": dict(prep_type="conv", out_channels=64, position_encoding="fourier",
                 num_frequency_bands=64, max_resolution=(56, 56)),
}


def default_config(variant: str = None) -> ml_collections.ConfigDict:
  """The Perceiver IO ImageNet model of `variant` ('fourier' by default)."""
  c = task_config(TASK, VARIANTS, variant)
  c.image_shape = (224, 224, 3)
  c.num_classes = 1000
  c.input_adapter = dict(_INPUT_ADAPTERS[c.variant])
  c.encoder = imagenet_encoder(num_cross_attention_layers=1, num_self_attention_blocks=8,
                               num_self_attention_layers_per_block=6)
  c.query_channels = 1024
  c.decoder = dict(num_heads=1, widening_factor=1, use_query_residual=c.variant != "learned")
  return c


def tiny_config(variant: str = None) -> ml_collections.ConfigDict:
  """The same model at test size: 8x8 images, 10 classes, 4 latents x 16, one layer."""
  c = default_config(variant)
  c.image_shape, c.num_classes = (8, 8, 3), 10
  c.input_adapter.update(dict(
      fourier=dict(num_frequency_bands=2, max_resolution=(8, 8)),
      learned=dict(out_channels=6, num_position_channels=5, project_pos_dim=4),
      conv=dict(out_channels=6, num_frequency_bands=2, max_resolution=(2, 2)))[c.variant])
  c.encoder.update(num_latents=4, num_latent_channels=16, num_self_attention_blocks=2,
                   num_self_attention_layers_per_block=1, num_self_attention_heads=2)
  c.query_channels = 12
  return c


def build(config) -> PerceiverIO:
  """The PerceiverIO model `config` describes."""
  return classification_model(config, ImageAdapter)


def example_inputs(config, batch_size: int = 1):
  """Zero images [batch_size, *config.image_shape]."""
  return jnp.zeros((batch_size,) + tuple(config.image_shape), jnp.float32)
