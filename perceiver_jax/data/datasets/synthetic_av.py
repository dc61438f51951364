"""TFDS builder `synthetic_av`: short videos of a moving shape with a matching sound.

Features: `video` uint8 [8, 16, 16, 3], `audio` int16 [1024] (8 kHz, 128 samples per frame),
`label` (10 classes = 5 shapes x 2 motions, label = 2 * shape + motion). A shape (filled
square, hollow square, plus, cross or diamond, 5x5 pixels) in a random bright colour moves
horizontally (motion 0) or vertically (1) from a random position at a random speed of 0.5-1.5
pixels a frame, bouncing off the borders, over a random dark background with pixel noise. Its
sound is a low tone whose pitch follows the shape (40, 60, 80, 100 or 125 Hz, random phase),
continuous for horizontal motion and pulsed (on half of each frame) for vertical motion, with
a loudness that grows with the speed, plus noise. Neither the pitch (random phase) nor the
shape (random place and colour) is a linear function of the raw samples or pixels.

Configs: `default` (3,000 train / 500 test clips) and `tiny` (48 / 16, for tests). Clip i of
a split is drawn from np.random.default_rng((split seed, i)): the same on every build. Builds
offline in seconds.
"""

import dataclasses

import numpy as np

from perceiver_jax.data.tensorflow_cpu import tfds

FRAMES, SIZE, SAMPLES_PER_FRAME, SAMPLE_RATE = 8, 16, 128, 8000
SHAPES = ("square", "hollow_square", "plus", "cross", "diamond")
MOTIONS = ("horizontal", "vertical")
PITCHES_HZ = (40.0, 60.0, 80.0, 100.0, 125.0)  # 2.5 to 8 periods in 4 frames.
SPLIT_SEEDS = {"train": 1, "test": 2}
_GRID = np.mgrid[0:5, 0:5]
STENCILS = {  # 5x5 masks of the shapes.
    "square": np.ones((5, 5), bool),
    "hollow_square": np.pad(np.ones((3, 3), bool), 1) == 0,
    "plus": (_GRID[0] == 2) | (_GRID[1] == 2),
    "cross": (_GRID[0] == _GRID[1]) | (_GRID[0] + _GRID[1] == 4),
    "diamond": np.abs(_GRID[0] - 2) + np.abs(_GRID[1] - 2) <= 2,
}


def _bounce(start: float, velocity: float, steps: int, high: float) -> np.ndarray:
  """Positions start + velocity * t (t < steps) reflected into [0, high]."""
  position = np.abs(start + velocity * np.arange(steps)) % (2 * high)
  return np.where(position > high, 2 * high - position, position)


def make_clip(rng: np.random.Generator, label: int):
  """(video uint8 [FRAMES, SIZE, SIZE, 3], audio int16 [FRAMES * SAMPLES_PER_FRAME]) of class
  `label` (2 * shape + motion) with the random draws of `rng`."""
  shape, motion = divmod(label, 2)
  speed = rng.uniform(0.5, 1.5)
  moving = _bounce(rng.uniform(0, SIZE - 5), speed * rng.choice([-1, 1]), FRAMES, SIZE - 5)
  fixed = np.full(FRAMES, rng.uniform(0, SIZE - 5))
  rows, cols = (fixed, moving) if motion == 0 else (moving, fixed)
  background = rng.uniform(0, 0.3, 3)
  colour = rng.uniform(0.5, 1.0, 3)
  video = np.broadcast_to(background, (FRAMES, SIZE, SIZE, 3)).copy()
  stencil = STENCILS[SHAPES[shape]]
  for t in range(FRAMES):
    top, left = int(round(rows[t])), int(round(cols[t]))
    video[t, top:top + 5, left:left + 5][stencil] = colour
  video += rng.normal(0, 0.04, video.shape)
  video = np.round(np.clip(video, 0, 1) * 255).astype(np.uint8)

  samples = FRAMES * SAMPLES_PER_FRAME
  time = np.arange(samples) / SAMPLE_RATE
  tone = np.sin(2 * np.pi * PITCHES_HZ[shape] * time + rng.uniform(0, 2 * np.pi))
  if motion == 1:
    tone *= (np.arange(samples) % SAMPLES_PER_FRAME) < SAMPLES_PER_FRAME // 2
  audio = (0.15 + 0.4 * speed / 1.5) * tone + rng.normal(0, 0.03, samples)
  audio = np.round(np.clip(audio, -1, 1) * 32767).astype(np.int16)
  return video, audio


@dataclasses.dataclass
class SyntheticAvConfig(tfds.core.BuilderConfig):
  num_train: int = 3000
  num_test: int = 500


class SyntheticAv(tfds.core.GeneratorBasedBuilder):
  """Moving shapes with matching tones; see the module docstring."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [SyntheticAvConfig(name="default", description="3,000 / 500 clips."),
                     SyntheticAvConfig(name="tiny", num_train=48, num_test=16,
                                       description="48 / 16 clips, for tests.")]

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "video": tfds.features.Tensor(shape=(FRAMES, SIZE, SIZE, 3), dtype=np.uint8),
            "audio": tfds.features.Audio(shape=(FRAMES * SAMPLES_PER_FRAME,), dtype=np.int16,
                                         sample_rate=SAMPLE_RATE),
            "label": tfds.features.ClassLabel(
                names=[f"{s}_{m}" for s in SHAPES for m in MOTIONS]),
        }),
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Generated from fixed seeds; nothing is downloaded.
    sizes = {"train": self.builder_config.num_train, "test": self.builder_config.num_test}
    return {split: self._generate_examples(split, size) for split, size in sizes.items()}

  def _generate_examples(self, split: str, size: int):
    for index in range(size):
      rng = np.random.default_rng((SPLIT_SEEDS[split], index))
      label = int(rng.integers(len(SHAPES) * len(MOTIONS)))
      video, audio = make_clip(rng, label)
      yield index, {"video": video, "audio": audio, "label": label}
