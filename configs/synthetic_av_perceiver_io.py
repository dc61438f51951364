"""Perceiver IO multimodal autoencoding on the offline `synthetic_av` clips (CPU sized).

The paper's Kinetics-700 autoencoder (tasks/multimodal_autoencoding.py) at a small size: 4
frames of 16x16 (4x4 patches) and 512 audio samples (patches of 16) of the `synthetic_av`
clips (8 stored frames; training crops 4 at a random start with their audio, evaluation takes
the first 4) and a label of 10 classes, 32 latents x 64. As in the paper the label input is
masked half of the time in training (evaluation always masks it, so the eval accuracy is the
label predicted from video and audio) and training decodes a random subset of the pixels
(256 of 1,024) and all 32 audio patches. The loss weights are this config's: pixels and audio
samples have similar scales here, and the label needs more weight than the paper's 1e-4 to be
learned in a short run.

Options: the size, 'full' (default) or 'tiny' (a smaller model on 2 frames resized to 8x8 and
their 256 audio samples, for a few steps).

  python -m experiments.train --config=configs/synthetic_av_perceiver_io.py \
      --workdir=workdirs/synthetic_av
"""

import ml_collections

from configs import common
from perceiver_jax import tasks

OPTIONS = {"size": common.SIZES}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """The synthetic_av experiment with the options `arg` (see the module docstring)."""
  options = common.parse_options(arg, OPTIONS)
  c = common.get_config()
  c.model = tasks.default_config("multimodal_autoencoding")
  m = c.model
  m.num_frames, m.image_size, m.patch_size = 4, 16, 4
  m.audio_samples_per_frame, m.samples_per_patch = 128, 16
  m.num_classes = 10
  m.image_num_frequency_bands, m.audio_num_frequency_bands = 4, 8
  m.mask_probs = dict(image=0.0, audio=0.0, label=0.5)
  m.label_query_channels, m.output_num_channels = 64, 64
  m.encoder.update(num_latents=32, num_latent_channels=64, num_self_attention_layers_per_block=4,
                   num_self_attention_heads=4, num_cross_attention_heads=1,
                   cross_attention_widening_factor=2, self_attention_widening_factor=2)
  m.loss_weights = dict(image=1.0, audio=1.0, label=0.1)
  c.autoencoding = dict(image_points=256, audio_patches=0)
  c.data.update(name="synthetic_av", task="multimodal", shuffle_buffer=3000)
  c.data.multimodal.update(num_frames=4, audio_samples_per_frame=128)
  c.optimizer.update(name="adamw", learning_rate=2e-3, weight_decay=0.01,
                     schedule="warmup_cosine", warmup_steps=100, clip_norm=1.0)
  c.checkpoint.update(best_metric="reconstruction_l1", best_mode="min")
  c.batch_size = 32
  c.eval_batch_size = 128
  c.num_train_steps = 1200  # 12.8 epochs of 3,000 clips.
  c.log_every_steps = 50
  c.eval_every_steps = 400
  c.checkpoint_every_steps = 400
  if options.size == "tiny":
    m.encoder.update(num_latents=8, num_latent_channels=16, num_self_attention_layers_per_block=1,
                     num_self_attention_heads=2)
    m.label_query_channels, m.output_num_channels = 8, 8
    m.num_frames, m.image_size = 2, 8
    c.data.name = "synthetic_av/tiny"
    c.data.multimodal.update(num_frames=2, image_size=8)
    c.autoencoding.image_points = 32
    common.tiny_run(c)
  return c
