"""Point-cloud classification (ModelNet40), the Perceiver paper's setting as a Perceiver IO model.

points [batch, N, 3] (zero-centred, in the unit cube) -> PointCloudAdapter (xyz + Fourier
features of xyz) -> PerceiverEncoder -> one TrainableQuery -> PerceiverDecoder(output_channels=
num_classes) -> ClassificationOutput -> logits [batch, 40].

Paper (Perceiver, ICML 2021, Sec. 4.3): about 2,000 points; 64 Fourier bands with a maximum
frequency of 1120 (max_resolution 2240, ten times ImageNet's); 2 cross-attends and 6
self-attention layers per block, otherwise the ImageNet architecture (512 latents x 1024,
cross-attend 1 head, self-attention 8 heads, weights shared after the first cross-attend and
block); LAMB at a constant 1e-3, batch 512, 50k steps: 85.7% top-1. The original Perceiver
averages the latents into a linear layer; here the Perceiver IO classification query decodes.
"""

import jax.numpy as jnp
import ml_collections

from perceiver_jax.io.adapters import PointCloudAdapter
from perceiver_jax.nn.models import PerceiverIO
from perceiver_jax.tasks.building import classification_model, imagenet_encoder, task_config

TASK = "point_cloud_classification"
VARIANTS = ("modelnet40",)


def default_config(variant: str = None) -> ml_collections.ConfigDict:
  """The paper's ModelNet40 model."""
  c = task_config(TASK, VARIANTS, variant)
  c.num_points, c.num_point_channels = 2048, 3
  c.num_classes = 40
  c.input_adapter = dict(max_resolution=2240.0, num_frequency_bands=64, num_position_dims=3)
  c.encoder = imagenet_encoder(num_cross_attention_layers=2, num_self_attention_blocks=2,
                               num_self_attention_layers_per_block=6)
  c.query_channels = 1024
  c.decoder = dict(num_heads=1, widening_factor=1, use_query_residual=True)
  return c


def tiny_config(variant: str = None) -> ml_collections.ConfigDict:
  """The same model at test size: 16 points, 5 classes, 4 latents x 16."""
  c = default_config(variant)
  c.num_points, c.num_classes = 16, 5
  c.input_adapter.num_frequency_bands = 3
  c.encoder.update(num_latents=4, num_latent_channels=16, num_self_attention_layers_per_block=1,
                   num_self_attention_heads=2)
  c.query_channels = 12
  return c


def build(config) -> PerceiverIO:
  """The PerceiverIO model `config` describes."""
  return classification_model(config, PointCloudAdapter)


def example_inputs(config, batch_size: int = 1):
  """Zero points [batch_size, num_points, num_point_channels]."""
  return jnp.zeros((batch_size, config.num_points, config.num_point_channels), jnp.float32)
