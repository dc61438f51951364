"""The original Perceiver on CIFAR-10 (TFDS 'cifar10'): the minimal Perceiver study's run.

Targets the study's figure: about 52% validation (test split) accuracy after 10 epochs. The
model is `perceiver_classification` 'cifar10_study': 32x32 RGB pixels + 2-D Fourier features
(64 bands), 128 latents x 256, one cross-attend and 4 self-attention layers, mean-pooled
logits: 2.0M parameters, 0.95 GFLOPs per image forward. AdamW (peak 1e-3, warm-up + cosine,
weight decay 0.01) on 64 images a step for 10 epochs of the 50,000 training images; random
flips; pixels normalised with the CIFAR-10 mean and std; float32. Assumes one GPU (minutes);
a 2-core CPU needs hours.
Prepare the data once (download): `tfds build cifar10`.

  python -m experiments.train --config=configs/cifar10_perceiver.py --workdir=workdirs/cifar10
  --config=configs/cifar10_perceiver.py:tiny  is the test-size variant (2 steps).
"""

import ml_collections

from perceiver_jax import tasks
from perceiver_jax.data import data_config
from perceiver_jax.train import optim

MEAN = (0.4914, 0.4822, 0.4465)  # CIFAR-10 training images, per channel, on the [0, 1] scale.
STD = (0.2470, 0.2435, 0.2616)
TRAIN_IMAGES = 50_000


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  """The CIFAR-10 study's run; variant 'tiny' trains a test-size model for 2 steps."""
  if variant not in ("", "tiny"):
    raise ValueError(f"configs/cifar10_perceiver.py variants are '' and 'tiny', got {variant!r}.")
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.init_from = ml_collections.config_dict.placeholder(str)  # Pretrained model dir (fine-tune).
  c.model = tasks.default_config("perceiver_classification", "cifar10_study")
  c.data = data_config.default_config()
  c.data.update(name="cifar10", image_size=(32, 32), train_augment="flip", mean=MEAN, std=STD)
  c.optimizer = optim.default_config()
  c.optimizer.update(name="adamw", learning_rate=1e-3, weight_decay=1e-2,
                     schedule="warmup_cosine", warmup_steps=500)
  c.mesh = dict(data=-1, fsdp=1, min_fsdp_size=2 ** 10)
  c.checkpoint = dict(keep=2, best_metric="accuracy", best_mode="max", async_save=True)
  c.label_smoothing = 0.0
  c.mixup = dict(mixup_alpha=0.0, cutmix_alpha=0.0, switch_prob=0.5)  # Alphas 0: off.
  c.grad_accum_steps = 1
  c.batch_size = 64
  c.eval_batch_size = 200
  c.num_train_steps = 10 * TRAIN_IMAGES // c.batch_size  # 7,812 steps: 10 epochs.
  c.log_every_steps = 100
  c.eval_every_steps = TRAIN_IMAGES // c.batch_size  # Every epoch (781 steps).
  c.checkpoint_every_steps = c.eval_every_steps
  if variant == "tiny":
    c.model = tasks.tiny_config("perceiver_classification", "cifar10_study")
    c.model.input_shape = (32, 32, 3)
    c.model.fourier.max_resolution = (32, 32)
    c.data.shuffle_buffer = 64
    c.optimizer.warmup_steps = 1
    c.batch_size, c.eval_batch_size = 16, 16
    c.num_train_steps, c.log_every_steps = 2, 1
    c.eval_every_steps, c.checkpoint_every_steps = 2, 2
  return c
