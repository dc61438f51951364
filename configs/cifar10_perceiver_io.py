"""Perceiver IO on CIFAR-10 (TFDS 'cifar10'): our small-scale IO baseline, not a paper figure.

The `image_classification` 'fourier' model (pixels + 2-D Fourier features, a trainable query
decoded by cross-attention) scaled down to match the CIFAR-10 Perceiver study: 32x32 RGB, 64
Fourier bands at max resolution 32, 128 latents x 256, one cross-attend and one block of 4
self-attention layers, a [1, 256] query. Everything else is `configs/cifar10_perceiver.py`
(AdamW, 10 epochs at batch 64, flips, CIFAR-10 normalisation), so the two runs compare the
decoders: the original Perceiver's mean-pooled latents against a Perceiver IO query. Assumes
one GPU. Prepare the data once (download): `tfds build cifar10`.

Options: the size, 'full' (default) or 'tiny' (a test-size model, 2 steps).

  python -m experiments.train --config=configs/cifar10_perceiver_io.py --workdir=workdirs/cifar_io
"""

import ml_collections

from configs import cifar10_perceiver, common
from perceiver_jax import tasks

OPTIONS = cifar10_perceiver.OPTIONS


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """The CIFAR-10 Perceiver IO run with the options `arg` (see the module docstring)."""
  options = common.parse_options(arg, OPTIONS)
  c = cifar10_perceiver.get_config(arg)
  if options.size == "tiny":
    c.model = tasks.tiny_config("image_classification", "fourier")
    c.model.input_adapter.max_resolution = (32, 32)
  else:
    c.model = tasks.default_config("image_classification", "fourier")
    c.model.num_classes = 10
    c.model.input_adapter.max_resolution = (32, 32)
    c.model.encoder.update(num_latents=128, num_latent_channels=256, num_self_attention_blocks=1,
                           num_self_attention_layers_per_block=4)
    c.model.query_channels = 256
  c.model.image_shape = (32, 32, 3)
  return c
