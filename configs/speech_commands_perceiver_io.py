"""Perceiver IO keyword spotting on Speech Commands (TFDS 'speech_commands', needs a download).

12 classes (10 words, '_silence_', '_unknown_'), 1 s clips of 16 kHz int16 audio (shorter ones
zero-padded to 16,000 samples); 85,511 train / 4,890 test clips. The model reads the raw
samples in 125 patches of 128 with Fourier features of the patch index, cross-attended by 128
latents x 256 (the paper's AudioSet model, smaller); training adds a random gain of +-6 dB
and a little noise. Prepare the data once (downloads 2.4 GB):

  tfds build speech_commands
  python -m experiments.train --config=configs/speech_commands_perceiver_io.py \\
      --workdir=workdirs/speech_commands

Options: the size, 'full' (default) or 'tiny' (a test-size model for a few steps).
"""

import ml_collections

from configs import common
from perceiver_jax import tasks

OPTIONS = {"size": common.SIZES}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """The Speech Commands experiment with the options `arg` (see the module docstring)."""
  options = common.parse_options(arg, OPTIONS)
  c = common.get_config()
  c.model = tasks.default_config("audio_classification")
  c.model.num_samples, c.model.num_classes = 16000, 12
  c.model.encoder.update(num_latents=128, num_latent_channels=256, num_cross_attention_layers=1,
                         num_self_attention_blocks=1, num_self_attention_layers_per_block=6,
                         num_self_attention_heads=8, dropout_rate=0.1)
  c.model.query_channels = 256
  c.data.update(name="speech_commands", task="audio", eval_split="test")
  c.data.audio.update(feature="audio", num_samples=16000, eval_crop="start", gain_db=6.0,
                      noise_std=0.005)
  c.optimizer.update(name="adamw", learning_rate=1e-3, weight_decay=0.05,
                     schedule="warmup_cosine", warmup_steps=1000, clip_norm=1.0)
  c.label_smoothing = 0.1
  c.batch_size = 128
  c.eval_batch_size = 256
  c.num_train_steps = 20_000  # 30 epochs of 85,511 clips.
  c.log_every_steps = 100
  c.eval_every_steps = 2000
  c.checkpoint_every_steps = 2000
  if options.size == "tiny":
    c.model = tasks.tiny_config("audio_classification")
    c.model.num_samples, c.model.num_classes = 16000, 12
    c.model.input_adapter.samples_per_patch = 128
    common.tiny_run(c)
  return c
