"""A Perceiver IO point-cloud classifier on TFDS 'synthetic_solids' (offline, 2-core CPU).

12 kinds of solids (box, torus, cone, ...) in random upright poses, 1,024 noisy surface
points each, 6,000 train / 1,200 test (perceiver_jax/data/datasets/synthetic_solids.py). The
model reads 128 points (a random subset in training, evenly spaced in eval), normalised into
the unit sphere, with 8 Fourier bands of xyz; 32 latents x 128, one cross-attend and 3
self-attention layers; training rotates about z, scales and jitters the points.

Options: the size, 'full' (default) or 'tiny' (a test-size model on `synthetic_solids/small`
for 2 steps).

  python -m experiments.train --config=configs/solids_perceiver_io.py --workdir=workdirs/solids
"""

import ml_collections

from configs import common
from perceiver_jax import tasks

OPTIONS = {"size": common.SIZES}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """The synthetic solids experiment with the options `arg` (see the module docstring)."""
  options = common.parse_options(arg, OPTIONS)
  c = common.get_config()
  c.model = tasks.default_config("point_cloud_classification")
  c.model.num_points, c.model.num_classes = 128, 12
  c.model.input_adapter.update(max_resolution=32.0, num_frequency_bands=8)
  c.model.encoder.update(num_latents=32, num_latent_channels=128, num_cross_attention_layers=1,
                         num_self_attention_blocks=1, num_self_attention_layers_per_block=3,
                         num_self_attention_heads=4, cross_attention_widening_factor=2,
                         self_attention_widening_factor=2)
  c.model.query_channels = 128
  c.data.update(name="synthetic_solids", task="point_cloud", shuffle_buffer=6000)
  c.data.point_cloud.update(num_points=128, rotate=True, up_axis=2, scale_range=(0.85, 1.15),
                            jitter_std=0.01, jitter_clip=0.03)
  c.optimizer.update(name="adamw", learning_rate=1e-3, weight_decay=0.01,
                     schedule="warmup_cosine", warmup_steps=100, clip_norm=1.0)
  c.batch_size = 32
  c.eval_batch_size = 200
  c.num_train_steps = 3000  # 16 epochs of 6,000 solids (2,000 steps gave 88.8%).
  c.log_every_steps = 50
  c.eval_every_steps = 1000
  c.checkpoint_every_steps = 1000
  if options.size == "tiny":
    c.model = tasks.tiny_config("point_cloud_classification")
    c.model.num_classes = 12
    c.data.update(name="synthetic_solids/small", shuffle_buffer=64)
    c.data.point_cloud.num_points = c.model.num_points
    common.tiny_run(c)
  return c
