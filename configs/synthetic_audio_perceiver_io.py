"""Perceiver IO audio classification on synthetic sounds (TFDS 'synthetic_audio', offline).

11 kinds of sound (tones, chords, chirps, pulse trains, square / sawtooth / modulated tones,
noises, plucks) in 0.512 s clips at 8 kHz; 8,000 train / 1,600 test clips. The model reads
raw samples: a 3,584-sample window (random in training, central in evaluation) in 28 patches
of 128 samples with Fourier features of the patch index, cross-attended by 16 latents x 96.
Runs on a 2-core CPU.

Options: the size, 'full' (default) or 'tiny' (a smaller model on the 36-clip 'tiny' build,
for 6 steps).

  python -m experiments.train --config=configs/synthetic_audio_perceiver_io.py \\
      --workdir=workdirs/synthetic_audio
"""

import ml_collections

from configs import common
from perceiver_jax import tasks

OPTIONS = {"size": common.SIZES}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """The synthetic audio experiment with the options `arg` (see the module docstring)."""
  options = common.parse_options(arg, OPTIONS)
  c = common.get_config()
  c.model = tasks.default_config("audio_classification")
  c.model.num_samples, c.model.num_classes = 3584, 11
  c.model.input_adapter.update(samples_per_patch=128, num_frequency_bands=8)
  c.model.encoder.update(num_latents=16, num_latent_channels=96, num_cross_attention_layers=1,
                         num_self_attention_blocks=1, num_self_attention_layers_per_block=3,
                         num_self_attention_heads=4, cross_attention_widening_factor=2,
                         self_attention_widening_factor=2)
  c.model.query_channels = 96
  c.data.update(name="synthetic_audio", task="audio", shuffle_buffer=8000)
  c.data.audio.update(num_samples=3584, eval_crop="center", gain_db=6.0)
  c.optimizer.update(name="adamw", learning_rate=2e-3, weight_decay=0.05,
                     schedule="warmup_cosine", warmup_steps=100, clip_norm=1.0)
  c.label_smoothing = 0.1
  c.batch_size = 32
  c.eval_batch_size = 200
  c.num_train_steps = 2500  # 10 epochs of 8,000 clips.
  c.log_every_steps = 50
  c.eval_every_steps = 500
  c.checkpoint_every_steps = 500
  if options.size == "tiny":
    c.model.num_samples = c.data.audio.num_samples = 1024
    c.model.input_adapter.num_frequency_bands = 2
    c.model.encoder.update(num_latents=4, num_latent_channels=16,
                           num_self_attention_layers_per_block=1, num_self_attention_heads=2)
    c.model.query_channels = 16
    c.data.update(name="synthetic_audio/tiny", shuffle_buffer=64)
    c.optimizer.warmup_steps = 2
    c.batch_size, c.eval_batch_size = 16, 16
    c.num_train_steps, c.log_every_steps = 6, 2
    c.eval_every_steps, c.checkpoint_every_steps = 6, 3
  return c
