"""TFDS builder `synthetic_audio`: 11 kinds of synthetic sound in background noise, offline.

Features: `audio` int16 [4096] (0.512 s at 8 kHz, full scale 32767), `label` (the kind, 11
classes, `KINDS`) and `labels` (the same kind as a one-element sequence, for multi-label
pipelines). Each clip is low-level Gaussian background noise (std in [0.003, 0.03]) plus one
event of its kind: a random onset, a duration of 40-75% of the clip, a peak amplitude in
[0.25, 0.9], 10 ms fades, and a random frequency (or rate) within the kind's range. Tones have
fundamentals in 150-1,200 Hz (square and sawtooth 150-500 Hz), so the label lies in the
waveform's shape and spectrum, not in its level. Clip i of a split is a pure function of (split, i)
(`np.random.default_rng([SPLIT_SEEDS[split], i])`). Configs: 'full' (8,000 train / 1,600
test clips) and 'tiny' (36 / 24, for tests). Builds offline: nothing is downloaded.
"""

import dataclasses

import numpy as np

from perceiver_jax.data.tensorflow_cpu import tf, tfds

SAMPLE_RATE = 8000
NUM_SAMPLES = 4096
KINDS = ("sine", "chord", "chirp", "pulse_train", "square", "sawtooth", "amplitude_modulated",
         "frequency_modulated", "white_noise", "brown_noise", "pluck")
SPLIT_SEEDS = {"train": 1, "test": 2}
_FADE = 80  # Samples (10 ms) of linear fade in and out of an event.


def _tone(rng, high=1200.0):
  """A random fundamental in [150, high] Hz and a random phase."""
  return rng.uniform(150.0, high), rng.uniform(0.0, 2 * np.pi)


def _event(kind: str, rng: np.random.Generator, n: int) -> np.ndarray:
  """float64 [n]: one event of `kind`, peak amplitude 1."""
  event = _waveform(kind, rng, n)
  return event / np.max(np.abs(event))


def _waveform(kind: str, rng: np.random.Generator, n: int) -> np.ndarray:
  """float64 [n]: one event of `kind` at an arbitrary level."""
  t = np.arange(n) / SAMPLE_RATE
  if kind == "sine":
    f, phase = _tone(rng)
    return np.sin(2 * np.pi * f * t + phase)
  if kind == "chord":  # A major or minor triad.
    f, _ = _tone(rng)
    third = 5 / 4 if rng.random() < 0.5 else 6 / 5
    return sum(np.sin(2 * np.pi * f * r * t + rng.uniform(0, 2 * np.pi))
               for r in (1.0, third, 1.5)) / 3
  if kind == "chirp":  # Exponential sweep up or down over 1.5-2.5 octaves.
    low = rng.uniform(150.0, 400.0)
    high = low * 2 ** rng.uniform(1.5, 2.5)
    start, end = (low, high) if rng.random() < 0.5 else (high, low)
    duration = n / SAMPLE_RATE
    k = np.log(end / start) / duration
    return np.sin(2 * np.pi * start * (np.exp(k * t) - 1) / k + rng.uniform(0, 2 * np.pi))
  if kind == "pulse_train":  # Clicks (2 ms decaying noise bursts) at 15-60 per second.
    period = int(SAMPLE_RATE / rng.uniform(15.0, 60.0))
    signal = np.zeros(n)
    click = rng.standard_normal(16) * np.exp(-np.arange(16) / 4.0)
    for start in range(int(rng.integers(period)), n - 16, period):
      signal[start:start + 16] += click
    return signal
  if kind == "square":  # Low fundamentals: many harmonics below the 4 kHz Nyquist frequency.
    f, phase = _tone(rng, 500.0)
    return np.sign(np.sin(2 * np.pi * f * t + phase))
  if kind == "sawtooth":
    f, phase = _tone(rng, 500.0)
    return 2 * ((f * t + phase / (2 * np.pi)) % 1.0) - 1
  if kind == "amplitude_modulated":  # 15-40 Hz tremolo, depth 0.9-1.
    f, phase = _tone(rng)
    depth = rng.uniform(0.9, 1.0)
    envelope = 1 - depth * (0.5 + 0.5 * np.cos(2 * np.pi * rng.uniform(15.0, 40.0) * t))
    return envelope * np.sin(2 * np.pi * f * t + phase)
  if kind == "frequency_modulated":  # 5-15 Hz vibrato of 8-20% of the carrier.
    f, phase = _tone(rng)
    rate, deviation = rng.uniform(5.0, 15.0), rng.uniform(0.08, 0.2) * f
    return np.sin(2 * np.pi * f * t + deviation / rate * np.sin(2 * np.pi * rate * t) + phase)
  if kind == "white_noise":
    return rng.standard_normal(n)
  if kind == "brown_noise":  # Integrated white noise, high-passed by removing its mean drift.
    walk = np.cumsum(rng.standard_normal(n))
    return walk - np.linspace(walk[0], walk[-1], n)
  if kind == "pluck":  # Three harmonics decaying with a 20-80 ms time constant.
    f, phase = _tone(rng)
    decay = np.exp(-t / rng.uniform(0.02, 0.08))
    return decay * sum(np.sin(2 * np.pi * f * h * t + phase) / h for h in (1, 2, 3))
  raise ValueError(f"unknown kind {kind!r}; the kinds are {KINDS}.")


def clip(split: str, index: int) -> tuple:
  """(int16 samples [NUM_SAMPLES], label): clip `index` of `split` (module docstring)."""
  rng = np.random.default_rng([SPLIT_SEEDS[split], index])
  label = int(rng.integers(len(KINDS)))
  length = int(rng.uniform(0.4, 0.75) * NUM_SAMPLES)
  onset = int(rng.integers(NUM_SAMPLES - length + 1))
  event = _event(KINDS[label], rng, length)
  fade = np.minimum(1.0, np.minimum(np.arange(length) + 1, length - np.arange(length)) / _FADE)
  samples = rng.standard_normal(NUM_SAMPLES) * rng.uniform(0.003, 0.03)
  samples[onset:onset + length] += rng.uniform(0.25, 0.9) * event * fade
  return np.round(np.clip(samples, -1, 1) * 32767).astype(np.int16), label


@dataclasses.dataclass(eq=False)
class SyntheticAudioConfig(tfds.core.BuilderConfig):
  """A builder config with its split sizes."""
  num_train: int = 8000
  num_test: int = 1600


class SyntheticAudio(tfds.core.GeneratorBasedBuilder):
  """Synthetic sound events of 11 kinds in noise (module docstring)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      SyntheticAudioConfig(name="full", description="8,000 train / 1,600 test clips."),
      SyntheticAudioConfig(name="tiny", num_train=36, num_test=24,
                           description="36 train / 24 test clips, for tests."),
  ]
  DEFAULT_CONFIG_NAME = "full"

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            # Stored as raw bytes (TFDS Audio would store int64 varints, 2.8x larger).
            "audio": tfds.features.Tensor(shape=(NUM_SAMPLES,), dtype=tf.int16,
                                          encoding="bytes"),
            "label": tfds.features.ClassLabel(names=KINDS),
            "labels": tfds.features.Sequence(tfds.features.ClassLabel(names=KINDS)),
        }),
        supervised_keys=("audio", "label"),
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Synthesised here; nothing is downloaded.
    sizes = {"train": self.builder_config.num_train, "test": self.builder_config.num_test}
    return {split: self._generate_examples(split, size) for split, size in sizes.items()}

  def _generate_examples(self, split: str, size: int):
    for index in range(size):
      samples, label = clip(split, index)
      yield index, {"audio": samples, "label": label, "labels": [label]}
