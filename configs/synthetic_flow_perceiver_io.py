"""Perceiver IO optical flow on moving random textures (TFDS 'synthetic_flow', offline).

32x32 frame pairs of a random texture moved by a smooth random flow (a global translation,
rotation and zoom plus local Gaussian bumps; perceiver_jax/data/datasets/synthetic_flow.py),
4,000 train / 500 test. The paper's flow model (3x3 patches of both frames, Fourier
features, every pixel's input as its decoder query, FlowOutput) at CPU size: 64 latents x 64,
trained on random 24x24 crops with random flips, decoding 256 random pixels per crop, on the
mean end-point error; evaluated on the centre 24x24 crops. Runs on a 2-core CPU.

Options: the size, 'full' (default) or 'tiny' (16x16 frames, a smaller model for 2 steps).

  python -m experiments.train --config=configs/synthetic_flow_perceiver_io.py \\
      --workdir=workdirs/synthetic_flow
"""

import ml_collections

from configs import common
from perceiver_jax import tasks

OPTIONS = {"size": common.SIZES}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """The synthetic-flow experiment with the options `arg` (see the module docstring)."""
  options = common.parse_options(arg, OPTIONS)
  c = common.get_config()
  c.model = tasks.default_config("optical_flow")
  c.model.image_size = (24, 24)
  c.model.output_scale = 1.0  # Not the official 1/100: the flow's pixel scale within minutes.
  c.model.input_adapter.update(out_channels=64, num_frequency_bands=8, max_resolution=(24, 24))
  c.model.encoder.update(num_latents=64, num_latent_channels=64,
                         num_self_attention_layers_per_block=4, num_self_attention_heads=4,
                         cross_attention_widening_factor=2, self_attention_widening_factor=2)
  c.data.update(name="synthetic_flow", task="optical_flow", shuffle_buffer=4000)
  c.data.flow.update(crop_size=(24, 24), flip_horizontal=True, flip_vertical=True)
  c.flow.train_points = 256  # Of the crop's 576 pixels.
  c.optimizer.update(name="adamw", learning_rate=1e-3, weight_decay=0.01,
                     schedule="warmup_cosine", warmup_steps=100, clip_norm=1.0)
  c.checkpoint.update(best_metric="epe", best_mode="min")
  c.batch_size = 32
  c.eval_batch_size = 128
  c.num_train_steps = 1200
  c.log_every_steps = 50
  c.eval_every_steps = 400
  c.checkpoint_every_steps = 400
  if options.size == "tiny":
    c.model = tasks.tiny_config("optical_flow")
    c.model.image_size = (16, 16)
    c.model.input_adapter.max_resolution = (16, 16)
    c.data.name = "synthetic_flow/tiny"
    c.data.flow.crop_size = None  # Full 16x16 frames.
    c.flow.train_points = 64
    common.tiny_run(c)
    c.batch_size, c.eval_batch_size = 8, 8
  return c
