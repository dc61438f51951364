"""TFDS builder `modelnet40`: ModelNet40 CAD meshes as point clouds, from the official archive.

TFDS has no ModelNet40. Download `ModelNet40.zip` (Princeton, https://modelnet.cs.princeton.edu/)
into a directory DIR, then build once (nothing is downloaded by the builder):

  tfds build modelnet40 --imports=perceiver_jax.data.datasets --manual_dir=DIR

The archive holds ModelNet40/<class>/{train,test}/<class>_XXXX.off (OFF meshes,
`meshes.parse_off`; some have the 'OFF' header glued to the counts line). Each mesh gives
`points` float32 [P, 3] sampled uniformly (area-weighted) on its faces with
np.random.default_rng(crc32 of the file's path in the archive), `normals` float32 [P, 3] (the
faces' unit normals), `label` (ClassLabel of `CLASSES`, the 40 folder names sorted) and `path`.
The coordinates are the mesh's own (the input pipeline normalises them). 9,843 train / 2,468
test meshes. Config `points_2048` (default): P = 2,048.
"""

import dataclasses
import os
import zipfile
import zlib

import numpy as np

from perceiver_jax.data.datasets.meshes import parse_off, sample_surface
from perceiver_jax.data.tensorflow_cpu import tf, tfds

ARCHIVE = "ModelNet40.zip"
CLASSES = ("airplane", "bathtub", "bed", "bench", "bookshelf", "bottle", "bowl", "car", "chair",
           "cone", "cup", "curtain", "desk", "door", "dresser", "flower_pot", "glass_box",
           "guitar", "keyboard", "lamp", "laptop", "mantel", "monitor", "night_stand", "person",
           "piano", "plant", "radio", "range_hood", "sink", "sofa", "stairs", "stool", "table",
           "tent", "toilet", "tv_stand", "vase", "wardrobe", "xbox")


def archive_meshes(names, split: str):
  """Sorted [(path, class)] of the `split` meshes among the archive's member `names`."""
  meshes = []
  for name in names:
    parts = name.split("/")
    if (len(parts) == 4 and parts[0] == "ModelNet40" and parts[2] == split
        and parts[3].endswith(".off")):
      if parts[1] not in CLASSES:
        raise ValueError(f"{ARCHIVE} has a mesh of unknown class {parts[1]!r} ({name}); the "
                         f"classes are {CLASSES}.")
      meshes.append((name, parts[1]))
  return sorted(meshes)


def point_cloud(path: str, data: bytes, num_points: int) -> dict:
  """{'points', 'normals'} sampled on the OFF mesh `data` stored at `path` (fixed seed)."""
  vertices, faces = parse_off(data)
  rng = np.random.default_rng(zlib.crc32(path.encode()))
  points, normals = sample_surface(vertices, faces, num_points, rng)
  return {"points": points, "normals": normals}


@dataclasses.dataclass(eq=False)
class ModelNet40Config(tfds.core.BuilderConfig):
  """A builder config: the number of points sampled per mesh."""
  num_points: int = 2048


class Modelnet40(tfds.core.GeneratorBasedBuilder):
  """ModelNet40 point clouds from the official ModelNet40.zip (module docstring)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Download {ARCHIVE} from https://modelnet.cs.princeton.edu/ into a directory DIR and "
      "run: tfds build modelnet40 --imports=perceiver_jax.data.datasets --manual_dir=DIR")
  BUILDER_CONFIGS = [ModelNet40Config(name="points_2048", description="2,048 points per mesh.")]
  DEFAULT_CONFIG_NAME = "points_2048"

  def _info(self) -> tfds.core.DatasetInfo:
    shape, as_bytes = (self.builder_config.num_points, 3), tfds.features.Encoding.BYTES
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "points": tfds.features.Tensor(shape=shape, dtype=np.float32, encoding=as_bytes),
            "normals": tfds.features.Tensor(shape=shape, dtype=np.float32, encoding=as_bytes),
            "label": tfds.features.ClassLabel(names=CLASSES),
            "path": tfds.features.Text(),
        }),
        supervised_keys=("points", "label"),
        homepage="https://modelnet.cs.princeton.edu/",
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    archive = os.path.join(dl_manager.manual_dir, ARCHIVE)
    if not tf.io.gfile.exists(archive):
      raise FileNotFoundError(f"{archive} not found. {self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    return {split: self._generate_examples(archive, split) for split in ("train", "test")}

  def _generate_examples(self, archive: str, split: str):
    with tf.io.gfile.GFile(archive, "rb") as file, zipfile.ZipFile(file) as zipped:
      for path, name in archive_meshes(zipped.namelist(), split):
        example = point_cloud(path, zipped.read(path), self.builder_config.num_points)
        yield path, dict(example, label=name, path=path)
