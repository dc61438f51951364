"""A Perceiver on scikit-learn's handwritten digits (TFDS 'sklearn_digits', offline).

1,797 8x8 grey images, a fixed split of 1,437 train / 360 test. The model concatenates 2-D
Fourier features to the pixels, cross-attends with 32 latents x 64 and classifies by
mean-pooling the latents (the original Perceiver head). Runs on a 2-core CPU.

Options: the size, 'full' (default) or 'tiny' (a smaller model for 6 steps).

  python -m experiments.train --config=configs/digits_perceiver.py --workdir=workdirs/digits
"""

import ml_collections

from configs import common
from perceiver_jax import tasks

OPTIONS = {"size": common.SIZES}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """The digits experiment with the options `arg` (see the module docstring)."""
  options = common.parse_options(arg, OPTIONS)
  c = common.get_config()
  c.model = tasks.default_config("perceiver_classification", "cifar10_study")
  c.model.input_shape, c.model.num_classes = (8, 8, 1), 10
  c.model.fourier = dict(num_frequency_bands=8, max_resolution=(8, 8))
  c.model.encoder.update(num_latents=32, num_latent_channels=64, num_self_attention_blocks=2,
                         num_self_attention_layers_per_block=2, num_self_attention_heads=4,
                         cross_attention_widening_factor=2, self_attention_widening_factor=2,
                         dropout_rate=0.1)
  c.data.update(name="sklearn_digits", train_augment="none", shuffle_buffer=2048)
  c.optimizer.update(name="adamw", learning_rate=2e-3, weight_decay=0.05,
                     schedule="warmup_cosine", warmup_steps=100, clip_norm=1.0)
  c.label_smoothing = 0.1  # With the weight decay: 96.4-98.9% over seeds and device counts.
  c.batch_size = 64
  c.eval_batch_size = 120
  c.num_train_steps = 1350  # 60 epochs of 1,437 images.
  c.log_every_steps = 50
  c.eval_every_steps = 225
  c.checkpoint_every_steps = 225
  if options.size == "tiny":
    c.model.encoder.update(num_latents=8, num_latent_channels=16, num_self_attention_blocks=1,
                           num_self_attention_layers_per_block=1, num_self_attention_heads=2)
    c.model.fourier.num_frequency_bands = 2
    c.optimizer.warmup_steps = 2
    c.batch_size = 16
    c.num_train_steps, c.log_every_steps = 6, 2
    c.eval_every_steps, c.checkpoint_every_steps = 6, 3
  return c
