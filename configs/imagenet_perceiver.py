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

Options: the size, 'full' (default) or 'tiny' (a test-size model on 8x8 images, 2 steps).

  python -m experiments.train --config=configs/imagenet_perceiver.py --workdir=workdirs/inet_p
"""

import ml_collections

from configs import common
from perceiver_jax import tasks

OPTIONS = {"size": common.SIZES}
MEAN = (0.485, 0.456, 0.406)  # ImageNet, per channel, on the [0, 1] scale.
STD = (0.229, 0.224, 0.225)
TRAIN_IMAGES = 1_281_167


def imagenet_training(config, image_size, epochs: int):
  """Sets `config`'s ImageNet data (the official pipeline's augmentation) at `image_size`, run
  length (batch 1024), checkpoints, label smoothing and mixup/CutMix."""
  config.data.update(name="imagenet2012", eval_split="validation", image_size=tuple(image_size),
                     train_augment="randaugment", randaugment_layers=4,
                     randaugment_magnitude=5.0, eval_crop_fraction=0.875, mean=MEAN, std=STD)
  config.label_smoothing = 0.1
  config.mixup.update(mixup_alpha=0.2, cutmix_alpha=1.0)
  config.batch_size = 1024
  config.eval_batch_size = 1024
  steps_per_epoch = TRAIN_IMAGES // config.batch_size  # 1,251
  config.num_train_steps = epochs * TRAIN_IMAGES // config.batch_size
  config.eval_every_steps = 5 * steps_per_epoch
  config.checkpoint_every_steps = steps_per_epoch
  config.checkpoint.keep = 3
  config.mesh.min_fsdp_size = 2 ** 16


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """The Perceiver ImageNet run with the options `arg` (see the module docstring)."""
  options = common.parse_options(arg, OPTIONS)
  c = common.get_config()
  if options.size == "tiny":
    c.model = tasks.tiny_config("perceiver_classification", "imagenet")
    c.model.num_classes = 1000  # ImageNet's labels.
  else:
    c.model = tasks.default_config("perceiver_classification", "imagenet")
    c.model.dtype = "bfloat16"
  c.optimizer.update(name="lamb", learning_rate=4e-3, b1=0.9, b2=0.999, eps=1e-6,
                     weight_decay=0.1, schedule="step", warmup_steps=0,
                     decay_boundaries=(0.7, 0.85, 0.95), decay_factor=0.1, clip_norm=10.0)
  imagenet_training(c, c.model.input_shape[:2], epochs=120)  # 150,136 steps.
  if options.size == "tiny":
    common.tiny_run(c)
  return c
