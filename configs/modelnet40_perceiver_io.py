"""The Perceiver's ModelNet40 point-cloud classifier (TFDS 'modelnet40'): Perceiver paper, 85.7%.

Model: `point_cloud_classification` 'modelnet40' (perceiver_jax/tasks/point_cloud_classification
.py): 2,048 points + 64 Fourier bands of xyz (max resolution 2240), 512 latents x 1024, 2
cross-attends and 2 blocks of 6 self-attention layers, a Perceiver IO classification query.
Recipe (paper, Sec. 4.3): LAMB at a constant 1e-3, batch 512, 50,000 steps (no weight decay:
our choice). The points are normalised into the unit sphere; training rotates them about z
(up_axis 2), scales them by [0.8, 1.25] and jitters them (std 0.01 clipped at 0.05), the common
PointNet++ augmentation (our choice: the paper does not list its own); eval reads 2,048 points
per mesh.

Prepare the data once: download ModelNet40.zip (https://modelnet.cs.princeton.edu/) into DIR,
then `tfds build modelnet40 --imports=perceiver_jax.data.datasets --manual_dir=DIR`
(perceiver_jax/data/datasets/modelnet40.py samples 2,048 points per mesh).

Options: the size, 'full' (default) or 'tiny' (a test-size model reading 16 points, 2 steps).

  python -m experiments.train --config=configs/modelnet40_perceiver_io.py --workdir=workdirs/mn40
"""

import ml_collections

from configs import common
from perceiver_jax import tasks

OPTIONS = {"size": common.SIZES}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """The ModelNet40 experiment with the options `arg` (see the module docstring)."""
  options = common.parse_options(arg, OPTIONS)
  c = common.get_config()
  c.model = tasks.default_config("point_cloud_classification", "modelnet40")
  c.data.update(name="modelnet40", task="point_cloud")
  c.data.point_cloud.update(num_points=c.model.num_points, rotate=True, up_axis=2,
                            scale_range=(0.8, 1.25), jitter_std=0.01, jitter_clip=0.05)
  c.optimizer.update(name="lamb", learning_rate=1e-3, schedule="constant", weight_decay=0.0)
  c.batch_size = 512
  c.eval_batch_size = 512
  c.num_train_steps = 50_000
  c.log_every_steps = 100
  c.eval_every_steps = 2_500
  c.checkpoint_every_steps = 2_500
  if options.size == "tiny":
    c.model = tasks.tiny_config("point_cloud_classification", "modelnet40")
    c.model.num_classes = 40
    c.data.point_cloud.num_points = c.model.num_points
    common.tiny_run(c)
  return c
