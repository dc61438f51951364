"""Perceiver IO multimodal autoencoding on Kinetics-700 (the paper's model, App. I).

The model is tasks.default_config('multimodal_autoencoding'): 16 frames of 224x224 in 1x4x4
patches, 48 kHz audio with 1,920 samples per frame (30,720) in patches of 16, 700 classes, 784
latents x 512, 8 self-attention layers, loss weights video 0.03, audio 1, label 1e-4; trained,
as in the paper, with the label input masked half of the time (mask_probs.label 0.5; the
evaluation masks it always). Data: the `kinetics700_av` builder (TFDS has no Kinetics builder
with audio; perceiver_jax/data/datasets/kinetics700_av.py says how to provide the decoded
clips), cropped to 16 frames and their audio (random start in training), the central square
resized to 224. This config's own choices (not the paper's): training decodes 4,096 random
pixels and 128 random audio patches per step; AdamW with warm-up and cosine decay; bfloat16
compute.

Options: the size, 'full' (default) or 'tiny' (the test-size model on 2 frames of 8x8).

  tfds build kinetics700_av --imports=perceiver_jax.data.datasets --manual_dir=DIR
  python -m experiments.train --config=configs/kinetics_multimodal_perceiver_io.py \
      --workdir=workdirs/kinetics_av
"""

import ml_collections

from configs import common
from perceiver_jax import tasks

OPTIONS = {"size": common.SIZES}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """The Kinetics-700 experiment with the options `arg` (see the module docstring)."""
  options = common.parse_options(arg, OPTIONS)
  c = common.get_config()
  if options.size == "tiny":
    c.model = tasks.tiny_config("multimodal_autoencoding")
    c.model.num_classes = 700
  else:
    c.model = tasks.default_config("multimodal_autoencoding")
    c.model.dtype = "bfloat16"
  c.model.mask_probs.label = 0.5
  m = c.model
  c.data.update(name="kinetics700_av", task="multimodal", eval_split="validation")
  c.data.multimodal.update(num_frames=m.num_frames, image_size=m.image_size,
                           audio_samples_per_frame=m.audio_samples_per_frame)
  c.autoencoding = dict(image_points=4096, audio_patches=128)
  c.optimizer.update(name="adamw", learning_rate=1e-3, weight_decay=0.01,
                     schedule="warmup_cosine", warmup_steps=1000, clip_norm=1.0)
  c.checkpoint.update(best_metric="reconstruction_l1", best_mode="min")
  c.batch_size = 64
  c.eval_batch_size = 64
  c.num_train_steps = 100_000
  if options.size == "tiny":
    c.autoencoding = dict(image_points=16, audio_patches=2)
    common.tiny_run(c)
  return c
