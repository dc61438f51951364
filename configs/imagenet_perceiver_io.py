"""Perceiver IO ImageNet classification (TFDS 'imagenet2012'): the Perceiver IO paper's table.

Options: the model, the `image_classification` task variant of the same name (paper top-1 /
parameters):
- 'fourier' (default): pixels + 2-D Fourier features: 79.0%, 48.4M.
- 'learned': 1x1 conv + learned positions: 72.7%, 62.3M.
- 'conv': 7x7/2 conv + BatchNorm + 3x3/2 max-pool, Fourier features of the 56x56 grid:
  82.1%, 48.6M.
and the size, 'full' (default) or 'tiny': that model at test size on 8x8 images for 2 steps,
e.g. `:conv,tiny` (BatchNorm included).
Recipe (the official code's): LAMB (b1 0.9, b2 0.999, eps 1e-6, weight decay 0.1 off biases
and norm scales, global-norm clipping at 10), lr 5e-4 * batch / 256 = 2e-3 flat for half the
steps then cosine to 0, no warm-up; 110 epochs of the 1,281,167 training images at batch 1024;
inception crop + flip + RandAugment (4 layers, magnitude 5), mixup 0.2 and CutMix, label
smoothing 0.1; eval on the validation images at a central 0.875 crop resized to 224; ImageNet
mean/std; bf16 compute.

Hardware: the paper trained on TPU pods. On a GPU node add --config.grad_accum_steps=N and
--config.model.encoder.remat=True until a step fits ('fourier' and 'learned' cross-attend to
50,176 inputs, 'conv' to 3,136). Prepare the data once (needs the ImageNet archives in
--manual_dir): `tfds build imagenet2012 --manual_dir=DIR`.

  python -m experiments.train --config=configs/imagenet_perceiver_io.py:conv --workdir=DIR
"""

import ml_collections

from configs import common
from configs.imagenet_perceiver import imagenet_training
from perceiver_jax import tasks

OPTIONS = {"model": ("fourier", "learned", "conv"), "size": common.SIZES}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """The Perceiver IO ImageNet run with the options `arg` (see the module docstring)."""
  options = common.parse_options(arg, OPTIONS)
  c = common.get_config()
  if options.size == "tiny":
    c.model = tasks.tiny_config("image_classification", options.model)
    c.model.num_classes = 1000  # ImageNet's labels.
  else:
    c.model = tasks.default_config("image_classification", options.model)
    c.model.dtype = "bfloat16"
  imagenet_training(c, c.model.image_shape[:2], epochs=110)  # Batch 1024, 137,625 steps.
  c.optimizer.update(name="lamb", learning_rate=5e-4 * c.batch_size / 256, b1=0.9, b2=0.999,
                     eps=1e-6, weight_decay=0.1, schedule="constant_cosine",
                     constant_fraction=0.5, warmup_steps=0, clip_norm=10.0)
  if options.size == "tiny":
    common.tiny_run(c)
  return c
