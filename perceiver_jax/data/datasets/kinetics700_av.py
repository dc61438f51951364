"""TFDS builder `kinetics700_av`: Kinetics-700 clips with their audio, from files you provide.

TFDS has no Kinetics builder with audio, and the clips are YouTube videos that must be
fetched and decoded by the user. Decode each clip (e.g. with ffmpeg: frames at 25 fps as
uint8 RGB, audio mono at 48 kHz, 1,920 samples per frame) and save it as
`<manual_dir>/<split>/<any name>.npz` with arrays `video` uint8 [F, H, W, 3], `audio` int16
[S] and `label` (the class index in 0..699, Kinetics-700-2020's sorted class names); splits
`train`, `validation` and `test` (the ones present are built). Then:

  tfds build kinetics700_av --imports=perceiver_jax.data.datasets --manual_dir=DIR

Features: `video` (frames stored PNG-encoded), `audio` int16 [S] (48 kHz), `label` (700
classes). The `multimodal` data task reads them (configs/kinetics_multimodal_perceiver_io.py).
"""

import os

import numpy as np

from perceiver_jax.data.tensorflow_cpu import tf, tfds

SPLITS = ("train", "validation", "test")
SAMPLE_RATE = 48_000
NUM_CLASSES = 700


class Kinetics700Av(tfds.core.GeneratorBasedBuilder):
  """Kinetics-700 video, audio and label from user-decoded .npz clips (module docstring)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "video": tfds.features.Video(shape=(None, None, None, 3)),
            "audio": tfds.features.Audio(shape=(None,), dtype=np.int16, sample_rate=SAMPLE_RATE),
            "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
        }),
        homepage="https://github.com/cvdfoundation/kinetics-dataset",
    )

  def _split_generators(self, dl_manager):
    root = dl_manager.manual_dir
    return {split: self._generate_examples(os.path.join(root, split)) for split in SPLITS
            if tf.io.gfile.isdir(os.path.join(root, split))}

  def _generate_examples(self, directory: str):
    for name in sorted(tf.io.gfile.listdir(directory)):
      if not name.endswith(".npz"):
        continue
      with tf.io.gfile.GFile(os.path.join(directory, name), "rb") as f:
        clip = np.load(f)
        yield name, {"video": clip["video"], "audio": clip["audio"].reshape(-1),
                     "label": int(clip["label"])}
