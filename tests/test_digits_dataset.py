"""The `sklearn_digits` TFDS builder: offline build, fixed split, pixels and labels exact."""

import numpy as np
import pytest
import tensorflow_datasets as tfds
from sklearn import datasets

from perceiver_jax.data.datasets import digits
from tfds_offline import build


def _read(builder, split):
  examples = list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))
  return (np.stack([e["image"] for e in examples]), np.array([e["label"] for e in examples]))


@pytest.fixture
def built(digits_data_dir):
  return tfds.builder("sklearn_digits", data_dir=digits_data_dir)


def test_builder_is_registered_as_version_1():
  assert "sklearn_digits" in tfds.list_builders()
  assert str(digits.SklearnDigits.VERSION) == "1.0.0"


def test_split_sizes_features_and_labels(built):
  info = built.info
  assert info.splits["train"].num_examples == 1437
  assert info.splits["test"].num_examples == 360
  assert info.features["image"].shape == (8, 8, 1)
  assert info.features["label"].num_classes == 10
  for split in ("train", "test"):
    images, labels = _read(built, split)
    assert images.dtype == np.uint8 and images.shape[1:] == (8, 8, 1)
    assert set(labels.tolist()) == set(range(10))


def test_split_is_the_fixed_permutation_and_pixels_are_rescaled(built):
  sk = datasets.load_digits()
  order = np.random.default_rng(0).permutation(1797)
  test_images, test_labels = _read(built, "test")
  first = np.round(sk.images[order[0]] * 255 / 16)
  np.testing.assert_array_equal(test_images[0, :, :, 0], first)
  assert test_labels[0] == sk.target[order[0]]
  for split, rows in (("test", order[:360]), ("train", order[360:])):
    images, labels = _read(built, split)
    np.testing.assert_array_equal(images[..., 0], np.round(sk.images[rows] * 255 / 16))
    np.testing.assert_array_equal(labels, sk.target[rows])


def test_indices_are_disjoint_and_cover_all_digits():
  train, test = digits.split_indices()
  assert len(train) == 1437 and len(test) == 360
  np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(1797))


def test_to_uint8_rounds_the_sixteen_ink_levels():
  levels = np.arange(17)
  np.testing.assert_array_equal(digits.to_uint8(levels), [int(v * 255 / 16 + 0.5) for v in levels])
  assert digits.to_uint8(levels).dtype == np.uint8 and digits.to_uint8(16) == 255


def test_builds_are_deterministic(built, tmp_path):
  again = build("sklearn_digits", tmp_path)
  for split in ("train", "test"):
    for first, second in zip(_read(built, split), _read(again, split)):
      np.testing.assert_array_equal(first, second)
