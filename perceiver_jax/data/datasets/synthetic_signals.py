"""TFDS builder `synthetic_signals`: 1-D noisy waveforms of 12 kinds, classify or regress.

Features: `signal` float32 [256, 1] (one channel), `label` (12 classes, `KINDS` in order) and
`frequency` float32 (the fundamental in cycles per 256 samples: the mean frequency of chirps
and FM, the carrier of AM, the repetition rate of pulse and noise-burst trains; in [2, 16]).
Every example draws its amplitude in [0.5, 2], frequency, phase, time shift (onsets, centres)
and kind-specific shape parameters, then adds Gaussian noise of std 5-15% of the amplitude.
Example i of a split has label i % 12 (balanced classes) and draws from
np.random.default_rng((split seed, i)), so a smaller build is a prefix of a larger one.
Configs: `full` (default, 10,000 train / 2,000 test) and `small` (240 / 120, for tests).
Builds offline: nothing is downloaded.
"""

import dataclasses

import numpy as np

from perceiver_jax.data.tensorflow_cpu import tfds

LENGTH = 256
KINDS = ("sine", "square", "sawtooth", "triangle", "chirp_up", "chirp_down", "damped",
         "pulse_train", "am", "fm", "noise_bursts", "wave_packet")
SPLIT_SEEDS = {"train": 1, "test": 2}
MIN_FREQUENCY, MAX_FREQUENCY = 2.0, 16.0


def _wave(kind: str, f: float, u: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Unit-amplitude waveform `kind` at fundamental f (cycles per window) at times u in [0, 1)."""
  phase = rng.uniform(0.0, 1.0)
  cycles = f * u + phase
  if kind == "sine":
    return np.sin(2 * np.pi * cycles)
  if kind == "square":
    return np.where(np.mod(cycles, 1.0) < 0.5, 1.0, -1.0)
  if kind == "sawtooth":
    return 2.0 * np.mod(cycles, 1.0) - 1.0
  if kind == "triangle":
    return 2.0 * np.abs(2.0 * np.mod(cycles, 1.0) - 1.0) - 1.0
  if kind in ("chirp_up", "chirp_down"):
    spread = rng.uniform(0.5, 0.8) * f * (1 if kind == "chirp_up" else -1)
    # Instantaneous frequency f - spread + 2 spread u: mean f over the window.
    return np.sin(2 * np.pi * ((f - spread) * u + spread * u * u + phase))
  if kind == "damped":
    onset = rng.uniform(0.0, 0.3)
    decay = rng.uniform(0.08, 0.2)
    after = np.maximum(u - onset, 0.0)
    return np.where(u >= onset, np.exp(-after / decay), 0.0) * np.sin(2 * np.pi * f * after)
  if kind == "pulse_train":
    width = rng.uniform(0.1, 0.2)  # Of a period.
    return np.where(np.mod(cycles, 1.0) < width, 1.0, 0.0)
  if kind == "am":
    rate, depth = rng.uniform(0.5, 2.0), rng.uniform(0.6, 1.0)
    envelope = 1.0 - depth * 0.5 * (1.0 + np.sin(2 * np.pi * (rate * u + rng.uniform())))
    return envelope * np.sin(2 * np.pi * cycles)
  if kind == "fm":
    rate = rng.uniform(1.0, 2.0)
    index = rng.uniform(0.4, 0.6) * f / rate  # Peak deviation 40-60% of f.
    return np.sin(2 * np.pi * cycles + index * np.sin(2 * np.pi * (rate * u + rng.uniform())))
  if kind == "noise_bursts":
    gate = np.mod(cycles, 1.0) < 0.5
    return np.where(gate, rng.normal(size=u.shape), 0.0)
  if kind == "wave_packet":
    centre, width = rng.uniform(0.25, 0.75), rng.uniform(0.06, 0.12)
    return np.exp(-0.5 * ((u - centre) / width) ** 2) * np.sin(2 * np.pi * cycles)
  raise ValueError(f"unknown kind {kind!r}; the kinds are {KINDS}.")


def example(split: str, index: int):
  """(signal float32 [LENGTH, 1], label, frequency) of example `index` of `split`."""
  rng = np.random.default_rng((SPLIT_SEEDS[split], index))
  label = index % len(KINDS)
  frequency = rng.uniform(MIN_FREQUENCY, MAX_FREQUENCY)
  amplitude = rng.uniform(0.5, 2.0)
  u = np.arange(LENGTH) / LENGTH
  signal = amplitude * _wave(KINDS[label], frequency, u, rng)
  signal = signal + rng.normal(0.0, rng.uniform(0.05, 0.15) * amplitude, LENGTH)
  return signal.astype(np.float32)[:, None], label, np.float32(frequency)


@dataclasses.dataclass(eq=False)
class SignalsConfig(tfds.core.BuilderConfig):
  """A builder config: the number of examples of each split."""
  num_train: int = 10_000
  num_test: int = 2_000


class SyntheticSignals(tfds.core.GeneratorBasedBuilder):
  """Synthetic 1-D waveforms of 12 kinds (module docstring)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      SignalsConfig(name="full", description="10,000 train / 2,000 test examples."),
      SignalsConfig(name="small", num_train=240, num_test=120,
                    description="240 train / 120 test examples (the first of `full`)."),
  ]
  DEFAULT_CONFIG_NAME = "full"

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "signal": tfds.features.Tensor(shape=(LENGTH, 1), dtype=np.float32),
            "label": tfds.features.ClassLabel(names=KINDS),
            "frequency": tfds.features.Tensor(shape=(), dtype=np.float32),
        }),
        supervised_keys=("signal", "label"),
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Generated from fixed seeds; nothing is downloaded.
    return {"train": self._generate_examples("train", self.builder_config.num_train),
            "test": self._generate_examples("test", self.builder_config.num_test)}

  def _generate_examples(self, split: str, count: int):
    for index in range(count):
      signal, label, frequency = example(split, index)
      yield index, {"signal": signal, "label": label, "frequency": frequency}
