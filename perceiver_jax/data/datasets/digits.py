"""TFDS builder `sklearn_digits`: the 1,797 8x8 handwritten digits that scikit-learn ships.

Features: `image` uint8 [8, 8, 1] (scikit-learn's 0..16 ink levels as round(v * 255 / 16)) and
`label` (10 classes). A fixed permutation (np.random.default_rng(0)) puts its first 360 digits
in `test` and the other 1,437 in `train`, stored in that order. Builds offline: nothing is
downloaded, the data comes from `sklearn.datasets.load_digits`.
"""

import numpy as np

from perceiver_jax.data.tensorflow_cpu import tf, tfds

NUM_TEST = 360


def split_indices():
  """(train, test) row indices into `sklearn.datasets.load_digits()`: 1,437 and 360."""
  order = np.random.default_rng(0).permutation(1797)
  return order[NUM_TEST:], order[:NUM_TEST]


def to_uint8(pixels: np.ndarray) -> np.ndarray:
  """scikit-learn's ink levels in 0..16 to uint8 0..255, as round(v * 255 / 16)."""
  return np.round(np.asarray(pixels, np.float64) * 255.0 / 16.0).astype(np.uint8)


class SklearnDigits(tfds.core.GeneratorBasedBuilder):
  """scikit-learn's handwritten digits with a fixed 1,437 / 360 train / test split."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(8, 8, 1)),
            "label": tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=("image", "label"),
        homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html#digits-dataset",
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # The data ships with scikit-learn; nothing is downloaded.
    train, test = split_indices()
    return {"train": self._generate_examples(train), "test": self._generate_examples(test)}

  def _generate_examples(self, indices):
    from sklearn import datasets  # pylint: disable=import-outside-toplevel
    digits = datasets.load_digits()
    for position, index in enumerate(indices):
      yield position, {"image": to_uint8(digits.images[index])[..., None],
                       "label": int(digits.target[index])}
