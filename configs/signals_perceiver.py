"""A Perceiver on synthetic 1-D signals (TFDS 'synthetic_signals', offline; the `array` task).

10,000 train / 2,000 test waveforms [256, 1] of 12 kinds (sine, square, chirps, AM, FM, noise
bursts, ...) with random frequency, phase, amplitude, time shift and noise. The pipeline cuts
each signal into 32 patches of 8 samples (positions [32, 8]); the model concatenates 1-D
Fourier features, cross-attends with 32 latents x 64 and mean-pools the latents (the original
Perceiver head). Training shifts the signals circularly by up to 32 samples, scales their
amplitude by 0.8-1.25 and adds noise. Runs on a 2-core CPU.

Options: the target, 'label' (default: classify the 12 kinds, accuracy) or 'regression'
(regress the fundamental frequency, 2-16 cycles per window, with MSE); the size, 'full'
(default) or 'tiny' (a smaller model for a few steps on 'synthetic_signals/small').

  python -m experiments.train --config=configs/signals_perceiver.py --workdir=workdirs/signals
"""

import ml_collections

from configs import common
from perceiver_jax import tasks

OPTIONS = {"target": ("label", "regression"), "size": common.SIZES}
LENGTH, NUM_KINDS, PATCH = 256, 12, 8
SIGNAL_STD = 0.84  # Of the train split's samples (their mean is 0.02).


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """The signals experiment with the options `arg` (see the module docstring)."""
  options = common.parse_options(arg, OPTIONS)
  regression = options.target == "regression"
  c = common.get_config()
  c.model = tasks.default_config("perceiver_classification", "cifar10_study")
  c.model.input_shape = (LENGTH // PATCH, PATCH)
  c.model.num_classes = 1 if regression else NUM_KINDS
  c.model.fourier = dict(num_frequency_bands=16, max_resolution=(LENGTH // PATCH,))
  c.model.encoder.update(num_latents=32, num_latent_channels=64, num_self_attention_blocks=1,
                         num_self_attention_layers_per_block=2, num_self_attention_heads=4,
                         cross_attention_widening_factor=2, self_attention_widening_factor=2)
  c.data.update(name="synthetic_signals", task="array", shuffle_buffer=10_000,
                label_feature="frequency" if regression else "label")
  c.data.array.update(feature="signal", target=options.target, loss="mse", mean=(0.0,),
                      std=(SIGNAL_STD,), max_shift=(32,), shift_mode="roll",
                      scale_range=(0.8, 1.25), noise_std=0.05, patch_size=(PATCH,))
  c.optimizer.update(name="adamw", learning_rate=1e-3, weight_decay=0.05,
                     schedule="warmup_cosine", warmup_steps=100, clip_norm=1.0)
  if regression:
    c.checkpoint.update(best_metric="mse", best_mode="min")
  c.batch_size = 64
  c.eval_batch_size = 200
  c.num_train_steps = 2500  # 16 epochs of 10,000 signals.
  c.log_every_steps = 50
  c.eval_every_steps = 500
  c.checkpoint_every_steps = 500
  if options.size == "tiny":
    c.model.input_shape = (LENGTH // 2 // PATCH, PATCH)
    c.model.fourier = dict(num_frequency_bands=4, max_resolution=(LENGTH // 2 // PATCH,))
    c.model.encoder.update(num_latents=4, num_latent_channels=16,
                           num_self_attention_layers_per_block=1, num_self_attention_heads=2)
    c.data.update(name="synthetic_signals/small", shuffle_buffer=64)
    c.data.array.crop_size = (LENGTH // 2,)  # Random windows in training, the centre in eval.
    c.optimizer.warmup_steps = 1
    c.batch_size, c.eval_batch_size = 16, 40
    c.num_train_steps, c.log_every_steps = 2, 1
    c.eval_every_steps, c.checkpoint_every_steps = 2, 2
  return c
