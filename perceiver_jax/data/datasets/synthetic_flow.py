"""TFDS builder `synthetic_flow`: frame pairs of a moving random texture and their optical flow.

Features: `frame1`, `frame2` uint8 [size, size, 3] and `flow` float32 [size, size, 2], the
(x, y) displacement in pixels of each pixel of frame1: frame1 at p shows the texture point that
frame2 shows at p + flow(p). The texture is Gaussian-filtered colour noise at two scales plus
random discs and rectangles, softened (`random_texture`); the flow is a random global
translation, rotation and zoom about the centre plus Gaussian bumps of local motion
(`random_flow`); frame2 samples the texture (bilinear) at the inverse of p -> p + flow(p)
(`warp_forward`). The texture extends MARGIN pixels beyond the frame, so frame2's borders show
texture that enters the view. Example i of a split is drawn from
np.random.default_rng([SEEDS[split], i]): fixed. Configs: `full` (default: 32x32, 4,000 train
/ 500 test) and `tiny` (16x16, 8 / 4, for tests). Builds offline in seconds.
"""

import dataclasses
from typing import Dict

import numpy as np
from scipy import ndimage

from perceiver_jax.data.tensorflow_cpu import tfds

SEEDS = {"train": 1, "test": 2}
MARGIN = 8
MAX_TRANSLATION = 2.0   # Pixels, per axis.
MAX_ROTATION = 0.1      # Radians.
MAX_ZOOM = 0.08         # Relative.
NUM_BUMPS = 3
MAX_BUMP = 2.5          # Pixels, per axis, at a bump's centre.


def random_texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
  """A smooth random colour texture float64 [height, width, 3] in [0, 255]."""
  fine = ndimage.gaussian_filter(rng.normal(size=(height, width, 3)), (1.2, 1.2, 0))
  coarse = ndimage.gaussian_filter(rng.normal(size=(height, width, 3)), (4.0, 4.0, 0))
  texture = fine / fine.std() + 1.5 * coarse / coarse.std()
  rows, cols = np.mgrid[:height, :width]
  for _ in range(rng.integers(3, 7)):
    y, x = rng.uniform(0, height), rng.uniform(0, width)
    radius = rng.uniform(2.0, 6.0)
    if rng.random() < 0.5:
      inside = (rows - y) ** 2 + (cols - x) ** 2 < radius ** 2
    else:
      inside = (np.abs(rows - y) < radius) & (np.abs(cols - x) < rng.uniform(2.0, 6.0))
    texture[inside] = rng.normal(0.0, 2.0, size=3)
  texture = ndimage.gaussian_filter(texture, (0.7, 0.7, 0))
  low, high = texture.min(), texture.max()
  return 255.0 * (texture - low) / max(high - low, 1e-6)


def random_flow(rng: np.random.Generator, size: int) -> np.ndarray:
  """A smooth random flow float64 [size, size, 2] (x, y) in pixels (see the module doc)."""
  rows, cols = np.mgrid[:size, :size].astype(np.float64)
  centre = (size - 1) / 2
  dx, dy = cols - centre, rows - centre
  tx, ty = rng.uniform(-MAX_TRANSLATION, MAX_TRANSLATION, 2)
  angle, zoom = rng.uniform(-MAX_ROTATION, MAX_ROTATION), rng.uniform(-MAX_ZOOM, MAX_ZOOM)
  flow_x = tx + zoom * dx - angle * dy
  flow_y = ty + zoom * dy + angle * dx
  for _ in range(NUM_BUMPS):
    y, x = rng.uniform(0, size, 2)
    sigma = rng.uniform(3.0, 8.0)
    bump = np.exp(-((rows - y) ** 2 + (cols - x) ** 2) / (2 * sigma ** 2))
    amplitude = rng.uniform(-MAX_BUMP, MAX_BUMP, 2)
    flow_x += amplitude[0] * bump
    flow_y += amplitude[1] * bump
  return np.stack([flow_x, flow_y], axis=-1)


def bilinear(image: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
  """image [H, W, C] sampled at float coordinates y, x [...] -> [..., C] (clamped borders)."""
  coordinates = np.stack([y, x])
  return np.stack([ndimage.map_coordinates(image[..., c], coordinates, order=1, mode="nearest")
                   for c in range(image.shape[-1])], axis=-1)


def warp_forward(texture: np.ndarray, flow: np.ndarray, margin: int,
                 iterations: int = 10) -> np.ndarray:
  """frame2 [h, w, C]: at each pixel q, texture (frame1 = texture[margin:-margin, ...]) at the
  point p with p + flow(p) = q, found by fixed-point iteration p <- q - flow(p)."""
  size = flow.shape[0]
  rows, cols = np.mgrid[:size, :size].astype(np.float64)
  py, px = rows.copy(), cols.copy()
  for _ in range(iterations):
    step = bilinear(flow, py, px)  # Clamped: the flow continues flat beyond the frame.
    px, py = cols - step[..., 0], rows - step[..., 1]
  return bilinear(texture, py + margin, px + margin)


def make_example(rng: np.random.Generator, size: int) -> Dict[str, np.ndarray]:
  """{'frame1', 'frame2': uint8 [size, size, 3], 'flow': float32 [size, size, 2]}."""
  texture = random_texture(rng, size + 2 * MARGIN, size + 2 * MARGIN)
  flow = random_flow(rng, size)
  frame1 = texture[MARGIN:MARGIN + size, MARGIN:MARGIN + size]
  frame2 = warp_forward(texture, flow, MARGIN)
  to_uint8 = lambda image: np.clip(np.round(image), 0, 255).astype(np.uint8)
  return {"frame1": to_uint8(frame1), "frame2": to_uint8(frame2),
          "flow": flow.astype(np.float32)}


@dataclasses.dataclass(eq=False)
class SyntheticFlowConfig(tfds.core.BuilderConfig):
  """A builder config: frame side and split sizes."""
  size: int = 32
  num_train: int = 4000
  num_test: int = 500


class SyntheticFlow(tfds.core.GeneratorBasedBuilder):
  """Moving random textures with smooth random flow fields (module docstring)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      SyntheticFlowConfig(name="full", description="32x32 frames, 4,000 train / 500 test."),
      SyntheticFlowConfig(name="tiny", size=16, num_train=8, num_test=4,
                          description="16x16 frames, 8 train / 4 test (tests)."),
  ]
  DEFAULT_CONFIG_NAME = "full"

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.size
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "frame1": tfds.features.Image(shape=(size, size, 3)),
            "frame2": tfds.features.Image(shape=(size, size, 3)),
            "flow": tfds.features.Tensor(shape=(size, size, 2), dtype=np.float32),
        }),
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Generated from fixed seeds; nothing is downloaded.
    config = self.builder_config
    return {"train": self._generate_examples("train", config.num_train),
            "test": self._generate_examples("test", config.num_test)}

  def _generate_examples(self, split: str, count: int):
    for index in range(count):
      rng = np.random.default_rng([SEEDS[split], index])
      yield index, make_example(rng, self.builder_config.size)
