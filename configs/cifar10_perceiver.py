"""The original Perceiver on CIFAR-10 (TFDS 'cifar10'): the minimal Perceiver study's run.

Targets the study's figure: about 52% validation (test split) accuracy after 10 epochs. The
model is `perceiver_classification` 'cifar10_study': 32x32 RGB pixels + 2-D Fourier features
(64 bands), 128 latents x 256, one cross-attend and 4 self-attention layers, mean-pooled
logits: 2.0M parameters, 0.95 GFLOPs per image forward. AdamW (peak 1e-3, warm-up + cosine,
weight decay 0.01) on 64 images a step for 10 epochs of the 50,000 training images; random
flips; pixels normalised with the CIFAR-10 mean and std; float32. Assumes one GPU (minutes);
a 2-core CPU needs hours.
Prepare the data once (download): `tfds build cifar10`.

Options: the size, 'full' (default) or 'tiny' (a test-size model, 2 steps).

  python -m experiments.train --config=configs/cifar10_perceiver.py --workdir=workdirs/cifar10
"""

import ml_collections

from configs import common
from perceiver_jax import tasks

OPTIONS = {"size": common.SIZES}
MEAN = (0.4914, 0.4822, 0.4465)  # CIFAR-10 training images, per channel, on the [0, 1] scale.
STD = (0.2470, 0.2435, 0.2616)
TRAIN_IMAGES = 50_000


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """The CIFAR-10 study's run with the options `arg` (see the module docstring)."""
  options = common.parse_options(arg, OPTIONS)
  c = common.get_config()
  c.model = tasks.default_config("perceiver_classification", "cifar10_study")
  c.data.update(name="cifar10", image_size=(32, 32), train_augment="flip", mean=MEAN, std=STD)
  c.optimizer.update(name="adamw", learning_rate=1e-3, weight_decay=1e-2,
                     schedule="warmup_cosine", warmup_steps=500)
  c.batch_size = 64
  c.eval_batch_size = 200
  c.num_train_steps = 10 * TRAIN_IMAGES // c.batch_size  # 7,812 steps: 10 epochs.
  c.eval_every_steps = TRAIN_IMAGES // c.batch_size  # Every epoch (781 steps).
  c.checkpoint_every_steps = c.eval_every_steps
  if options.size == "tiny":
    c.model = tasks.tiny_config("perceiver_classification", "cifar10_study")
    c.model.input_shape = (32, 32, 3)
    c.model.fourier.max_resolution = (32, 32)
    common.tiny_run(c)
  return c
