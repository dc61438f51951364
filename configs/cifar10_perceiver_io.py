"""Perceiver IO on CIFAR-10 (TFDS 'cifar10'): our small-scale IO baseline, not a paper figure.

The `image_classification` 'fourier' model (pixels + 2-D Fourier features, a trainable query
decoded by cross-attention) scaled down to match the CIFAR-10 Perceiver study: 32x32 RGB, 64
Fourier bands at max resolution 32, 128 latents x 256, one cross-attend and one block of 4
self-attention layers, a [1, 256] query. Everything else is `configs/cifar10_perceiver.py`
(AdamW, 10 epochs at batch 64, flips, CIFAR-10 normalisation), so the two runs compare the
decoders: the original Perceiver's mean-pooled latents against a Perceiver IO query. Assumes
one GPU. Prepare the data once (download): `tfds build cifar10`.

  python -m experiments.train --config=configs/cifar10_perceiver_io.py --workdir=workdirs/cifar_io
  --config=configs/cifar10_perceiver_io.py:tiny  is the test-size variant (2 steps).
"""

import ml_collections

from configs import cifar10_perceiver
from perceiver_jax import tasks


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  """The CIFAR-10 Perceiver IO run; variant 'tiny' trains a test-size model for 2 steps."""
  if variant not in ("", "tiny"):
    raise ValueError(f"configs/cifar10_perceiver_io.py variants are '' and 'tiny', got "
                     f"{variant!r}.")
  c = cifar10_perceiver.get_config(variant)
  if variant == "tiny":
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
