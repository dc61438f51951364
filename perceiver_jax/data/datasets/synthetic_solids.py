"""TFDS builder `synthetic_solids`: points on the surfaces of 12 kinds of solids, in random poses.

Features: `points` float32 [P, 3] (uniform on the surface, area-weighted, plus Gaussian noise),
`normals` float32 [P, 3] (the unit normals of the faces they lie on, outward) and `label`
(ClassLabel of `CLASSES`). Example i of a split is class i % 12 (balanced: chance is 1/12)
drawn from np.random.default_rng((split seed, i)): its kind's shape parameters (aspect ratios,
radii, heights in the ranges of `_mesh`), each axis stretched by a factor in [0.7, 1.3], a
random 3-D pose (tilted up to 20 degrees off upright, any heading about the up axis z), a
scale in [0.5, 2], a translation in [-0.5, 0.5]^3 and noise of std 0.01 x scale. The shapes are triangle meshes (`meshes.sample_surface` samples them).
Configs: `full` (default: 6,000 train / 1,200 test, P = 1,024) and `small` (36 / 24, P = 64,
for tests). Builds offline in seconds: nothing is downloaded.
"""

import dataclasses

import numpy as np
from scipy import spatial

from perceiver_jax.data.datasets.meshes import sample_surface
from perceiver_jax.data.tensorflow_cpu import tfds

CLASSES = ("ellipsoid", "box", "cylinder", "cone", "torus", "pyramid", "octahedron", "capsule",
           "prism", "annulus", "tetrahedron", "hemisphere")
SPLIT_SEEDS = {"train": 1, "test": 2}
SEGMENTS = 32  # Around the axis of a solid of revolution.
NOISE = 0.01
MAX_TILT = 20.0  # Degrees off upright.
STRETCH = 0.3  # Each axis of a solid stretched by a factor in [1 - STRETCH, 1 + STRETCH].


def _revolution(profile) -> tuple:
  """(vertices, faces) of the profile [(r, z), ...] (counter-clockwise in the (r, z) plane, so
  faces wind outwards) turned about the z axis."""
  profile = np.asarray(profile, np.float64)
  angles = 2 * np.pi * np.arange(SEGMENTS) / SEGMENTS
  vertices = np.stack([profile[:, None, 0] * np.cos(angles), profile[:, None, 0] * np.sin(angles),
                       np.broadcast_to(profile[:, None, 1], (len(profile), SEGMENTS))], -1)
  ring, step = np.meshgrid(np.arange(len(profile) - 1), np.arange(SEGMENTS), indexing="ij")
  here, ahead = ring * SEGMENTS + step, ring * SEGMENTS + (step + 1) % SEGMENTS
  faces = np.concatenate([np.stack([here, ahead, ahead + SEGMENTS], -1).reshape(-1, 3),
                          np.stack([here, ahead + SEGMENTS, here + SEGMENTS], -1).reshape(-1, 3)])
  return vertices.reshape(-1, 3), faces


def _convex(vertices) -> tuple:
  """(vertices, faces) of the convex hull of `vertices`, faces wound outwards."""
  vertices = np.asarray(vertices, np.float64)
  hull = spatial.ConvexHull(vertices)
  faces = hull.simplices.copy()
  corners = vertices[faces]
  normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
  inward = np.einsum("fk,fk->f", normals, hull.equations[:, :3]) < 0
  faces[inward] = faces[inward][:, ::-1]
  return vertices, faces


def _arc(start: float, stop: float, n: int = 9):
  return np.linspace(start, stop, n)


def _mesh(kind: str, rng: np.random.Generator) -> tuple:
  """(vertices, faces) of a solid of `kind` with random shape parameters, centred, size ~1."""
  uniform = rng.uniform
  if kind == "ellipsoid":
    t = _arc(0, np.pi, 17)
    vertices, faces = _revolution(np.stack([np.sin(t), -np.cos(t)], -1))
    return vertices * [1.0, uniform(0.5, 1.0), uniform(0.5, 1.0)], faces
  if kind == "box":
    corners = np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1])).reshape(3, -1).T
    return _convex(corners * [1.0, uniform(0.5, 1.0), uniform(0.5, 1.0)])
  if kind == "cylinder":
    h = uniform(0.4, 1.2)
    return _revolution([(0, -h), (1, -h), (1, h), (0, h)])
  if kind == "cone":
    h = uniform(0.5, 1.5)
    return _revolution([(0, -h), (1, -h), (0, h)])
  if kind == "torus":
    a, t = uniform(0.2, 0.45), _arc(0, 2 * np.pi, 17)
    return _revolution(np.stack([1 + a * np.cos(t), a * np.sin(t)], -1))
  if kind == "pyramid":
    h = uniform(0.6, 1.6)
    return _convex([(-1, -1, 0), (1, -1, 0), (1, 1, 0), (-1, 1, 0), (0, 0, h)])
  if kind == "octahedron":
    return _convex(np.concatenate([np.eye(3), -np.eye(3)]) * uniform(0.6, 1.2, 3))
  if kind == "capsule":
    length, t = uniform(0.3, 1.2), _arc(0, np.pi / 2)
    bottom = np.stack([np.sin(t), -length - np.cos(t)], -1)
    top = np.stack([np.cos(t), length + np.sin(t)], -1)
    return _revolution(np.concatenate([bottom, top]))
  if kind == "prism":
    length, angles = uniform(0.5, 1.5), 2 * np.pi * np.arange(3) / 3
    triangle = np.stack([np.cos(angles), np.sin(angles)], -1)
    return _convex([(x, y, z) for z in (-length, length) for x, y in triangle])
  if kind == "annulus":
    inner, half = uniform(0.3, 0.6), uniform(0.05, 0.2)
    return _revolution([(inner, -half), (1, -half), (1, half), (inner, half), (inner, -half)])
  if kind == "tetrahedron":
    return _convex(np.array([(1, 1, 1), (1, -1, -1), (-1, 1, -1), (-1, -1, 1)])
                   * uniform(0.7, 1.3, 3))
  if kind == "hemisphere":
    t = _arc(0, np.pi / 2)
    return _revolution(np.concatenate([[(0, 0)], np.stack([np.cos(t), np.sin(t)], -1)]))
  raise ValueError(f"Unknown solid {kind!r}; the kinds are {CLASSES}.")


def _pose(rng: np.random.Generator) -> np.ndarray:
  """A rotation matrix [3, 3]: a tilt by an angle uniform in [0, MAX_TILT] degrees about a
  random horizontal axis, then a uniform rotation about the up (z) axis."""
  heading, axis_angle = rng.uniform(0, 2 * np.pi, 2)
  tilt = np.radians(rng.uniform(0, MAX_TILT))
  x, y = np.cos(axis_angle), np.sin(axis_angle)
  cross = np.array([[0, 0, y], [0, 0, -x], [-y, x, 0]])  # [axis]_x for axis (x, y, 0).
  tilted = np.eye(3) + np.sin(tilt) * cross + (1 - np.cos(tilt)) * cross @ cross
  c, s = np.cos(heading), np.sin(heading)
  return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ tilted


def solid(split_seed: int, index: int, num_points: int) -> dict:
  """Example `index` of the split seeded `split_seed`: {'points', 'normals', 'label'}."""
  rng = np.random.default_rng((split_seed, index))
  label = index % len(CLASSES)
  vertices, faces = _mesh(CLASSES[label], rng)
  stretch = rng.uniform(1 - STRETCH, 1 + STRETCH, 3)
  scale = rng.uniform(0.5, 2.0)
  vertices = scale * (vertices * stretch) @ _pose(rng).T + rng.uniform(-0.5, 0.5, 3)
  points, normals = sample_surface(vertices, faces, num_points, rng)
  points += rng.normal(0, NOISE * scale, points.shape).astype(np.float32)
  return {"points": points, "normals": normals, "label": label}


@dataclasses.dataclass(eq=False)
class SolidsConfig(tfds.core.BuilderConfig):
  """A builder config: the number of examples per split and of points per example."""
  num_train: int = 6000
  num_test: int = 1200
  num_points: int = 1024


class SyntheticSolids(tfds.core.GeneratorBasedBuilder):
  """Points on 12 kinds of parametric solids in random poses (module docstring)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      SolidsConfig(name="full", description="6,000 train / 1,200 test, 1,024 points each."),
      SolidsConfig(name="small", num_train=36, num_test=24, num_points=64,
                   description="36 train / 24 test, 64 points each (tests)."),
  ]
  DEFAULT_CONFIG_NAME = "full"

  def _info(self) -> tfds.core.DatasetInfo:
    shape, as_bytes = (self.builder_config.num_points, 3), tfds.features.Encoding.BYTES
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "points": tfds.features.Tensor(shape=shape, dtype=np.float32, encoding=as_bytes),
            "normals": tfds.features.Tensor(shape=shape, dtype=np.float32, encoding=as_bytes),
            "label": tfds.features.ClassLabel(names=CLASSES),
        }),
        supervised_keys=("points", "label"),
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Generated from fixed seeds; nothing is downloaded.
    config = self.builder_config
    return {"train": self._generate_examples(SPLIT_SEEDS["train"], config.num_train),
            "test": self._generate_examples(SPLIT_SEEDS["test"], config.num_test)}

  def _generate_examples(self, split_seed: int, num_examples: int):
    for index in range(num_examples):
      yield index, solid(split_seed, index, self.builder_config.num_points)
