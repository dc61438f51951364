"""The original Perceiver on ImageNet (TFDS 'imagenet2012'): Perceiver paper, 78.0% top-1.

Model: `perceiver_classification` 'imagenet', 44.9M parameters (224x224 RGB + 64 Fourier bands,
512 latents x 1024, 8 cross-attends and 8 blocks of 6 self-attention layers with shared
weights, mean-pooled logits). Recipe: LAMB (b1 0.9, b2 0.999, eps 1e-6, weight decay 0.1 off
biases and norm scales, global-norm clipping at 10 as in the Perceiver IO recipe), peak 4e-3
divided by 10 at 84/120, 102/120 and 114/120 of the steps, no warm-up; 120 epochs of the
1,281,167 training images at batch 1024; bf16 compute. Augmentation and regularisers are
those of the official Perceiver IO ImageNet pipeline, shared with
`configs/imagenet_perceiver_io.py`: inception crop + flip + RandAugment (4 layers, magnitude
5), mixup 0.2 and CutMix, label smoothing 0.1; eval on the 50,000 validation images at a
central 0.875 crop resized to 224; ImageNet mean/std.

Hardware: the paper trained on TPU pods. On a GPU node, where a step of 1024 images of 50,176
inputs each will not fit in memory at once, add --config.grad_accum_steps=N (the same update
as the big batch) and --config.model.encoder.remat=True. Prepare the data once (needs the ImageNet
archives in --manual_dir): `tfds build imagenet2012 --manual_dir=DIR`.

  python -m experiments.train --config=configs/imagenet_perceiver.py --workdir=workdirs/inet_p
  --config=configs/imagenet_perceiver.py:tiny  is the test-size variant (8x8, 2 steps).
"""

import ml_collections

from perceiver_jax import tasks
from perceiver_jax.data import data_config
from perceiver_jax.train import optim

MEAN = (0.485, 0.456, 0.406)  # ImageNet, per channel, on the [0, 1] scale.
STD = (0.229, 0.224, 0.225)
TRAIN_IMAGES = 1_281_167


def imagenet_data(image_size) -> ml_collections.ConfigDict:
  """The ImageNet data section (the official pipeline's augmentation) at `image_size`."""
  data = data_config.default_config()
  data.update(name="imagenet2012", eval_split="validation", image_size=tuple(image_size),
              train_augment="randaugment", randaugment_layers=4, randaugment_magnitude=5.0,
              eval_crop_fraction=0.875, mean=MEAN, std=STD)
  return data


def imagenet_training(config, epochs: int):
  """Sets `config`'s ImageNet run length (batch 1024), label smoothing and mixup/CutMix."""
  config.label_smoothing = 0.1
  config.mixup = dict(mixup_alpha=0.2, cutmix_alpha=1.0, switch_prob=0.5)
  config.grad_accum_steps = 1
  config.batch_size = 1024
  config.eval_batch_size = 1024
  steps_per_epoch = TRAIN_IMAGES // config.batch_size  # 1,251
  config.num_train_steps = epochs * TRAIN_IMAGES // config.batch_size
  config.log_every_steps = 100
  config.eval_every_steps = 5 * steps_per_epoch
  config.checkpoint_every_steps = steps_per_epoch
  config.checkpoint = dict(keep=3, best_metric="accuracy", best_mode="max", async_save=True)


def tiny_training(config):
  """Shrinks `config`'s run to 2 steps of 16 images (for tests)."""
  config.data.shuffle_buffer = 64
  config.batch_size, config.eval_batch_size = 16, 16
  config.num_train_steps, config.log_every_steps = 2, 1
  config.eval_every_steps, config.checkpoint_every_steps = 2, 2


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  """The Perceiver ImageNet run; variant 'tiny' trains a test-size model for 2 steps."""
  if variant not in ("", "tiny"):
    raise ValueError(f"configs/imagenet_perceiver.py variants are '' and 'tiny', got "
                     f"{variant!r}.")
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.init_from = ml_collections.config_dict.placeholder(str)  # Pretrained model dir (fine-tune).
  c.model = tasks.default_config("perceiver_classification", "imagenet")
  c.model.dtype = "bfloat16"
  c.data = imagenet_data(c.model.input_shape[:2])
  c.optimizer = optim.default_config()
  c.optimizer.update(name="lamb", learning_rate=4e-3, b1=0.9, b2=0.999, eps=1e-6,
                     weight_decay=0.1, schedule="step", warmup_steps=0,
                     decay_boundaries=(0.7, 0.85, 0.95), decay_factor=0.1, clip_norm=10.0)
  c.mesh = dict(data=-1, fsdp=1, min_fsdp_size=2 ** 16)
  imagenet_training(c, epochs=120)  # 150,136 steps.
  if variant == "tiny":
    c.model = tasks.tiny_config("perceiver_classification", "imagenet")
    c.model.num_classes = 1000  # ImageNet's labels.
    c.data.image_size = c.model.input_shape[:2]
    tiny_training(c)
  return c
