"""TFDS builder `mpi_sintel`: MPI-Sintel's training frame pairs and their ground-truth flow.

Reads the official archive MPI-Sintel-complete.zip (http://sintel.is.tue.mpg.de/downloads),
placed in the manual_dir, without unpacking it:

  tfds build mpi_sintel --imports=perceiver_jax.data.datasets --manual_dir=DIR

(builds both configs; `mpi_sintel/clean` or `mpi_sintel/final` builds one). Configs: `clean`
and `final`, the two render passes. Each example is one pair of consecutive frames of a scene:
`frame1` = training/<pass>/<scene>/frame_XXXX.png, `frame2` = the next frame, `flow` float32
[436, 1024, 2] = training/flow/<scene>/frame_XXXX.flo (Middlebury .flo, perceiver_jax.data.flo),
`scene` and `frame` (XXXX). The single split `train` (1,041 pairs; the test set has no public
flow) is stored in (scene, frame) order, so `train[:90%]` / `train[90%:]` hold out whole
final scenes. The Perceiver IO paper trains on AutoFlow (not in TFDS) and reports the EPE
over all of `train`: 1.81 clean, 2.42 final.
"""

import dataclasses
import io
import os
import re
import zipfile

import numpy as np

from perceiver_jax.data import flo
from perceiver_jax.data.tensorflow_cpu import tf, tfds

ARCHIVE = "MPI-Sintel-complete.zip"
_FLOW = re.compile(r"^(?:.*/)?training/flow/([^/]+)/frame_(\d{4})\.flo$")


@dataclasses.dataclass(eq=False)
class SintelConfig(tfds.core.BuilderConfig):
  """A builder config: the render pass ('clean' or 'final')."""
  render_pass: str = "clean"


class MpiSintel(tfds.core.GeneratorBasedBuilder):
  """MPI-Sintel training pairs with flow, from the manual_dir's archive (module docstring)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      SintelConfig(name="clean", render_pass="clean", description="The clean pass."),
      SintelConfig(name="final", render_pass="final",
                   description="The final pass (motion blur, fog, lens effects)."),
  ]
  DEFAULT_CONFIG_NAME = "clean"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Download {ARCHIVE} from http://sintel.is.tue.mpg.de/downloads into the manual_dir "
      "(--manual_dir=DIR); it is read without unpacking.")

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "frame1": tfds.features.Image(shape=(None, None, 3)),
            "frame2": tfds.features.Image(shape=(None, None, 3)),
            "flow": tfds.features.Tensor(shape=(None, None, 2), dtype=np.float32,
                                         encoding=tfds.features.Encoding.ZLIB),
            "scene": tfds.features.Text(),
            "frame": np.int32,
        }),
        homepage="http://sintel.is.tue.mpg.de/",
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    path = os.path.join(dl_manager.manual_dir, ARCHIVE)
    if not tf.io.gfile.exists(path):
      raise AssertionError(f"{path} does not exist. {self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    return {"train": self._generate_examples(path)}

  def _generate_examples(self, path: str):
    with tf.io.gfile.GFile(path, "rb") as file, zipfile.ZipFile(file) as archive:
      flows = sorted((match.group(1), int(match.group(2)), name)
                     for name in archive.namelist() for match in [_FLOW.match(name)] if match)
      if not flows:
        raise ValueError(f"{path} holds no training/flow/<scene>/frame_XXXX.flo files.")
      for scene, frame, name in flows:
        root = name[:name.index("training/flow/")]
        frames = [f"{root}training/{self.builder_config.render_pass}/{scene}/"
                  f"frame_{number:04d}.png" for number in (frame, frame + 1)]
        yield f"{scene}/{frame:04d}", {
            "frame1": io.BytesIO(archive.read(frames[0])),
            "frame2": io.BytesIO(archive.read(frames[1])),
            "flow": flo.decode_flo(archive.read(name)),
            "scene": scene, "frame": frame}
