"""The offline TFDS datasets in tests: built without downloads (any download fails the test)."""

from unittest import mock

import tensorflow_datasets as tfds

import perceiver_jax.data.datasets  # noqa: F401  Registers the offline builders.


def forbid_downloads():
  """A patch of TFDS's download manager under which every download raises."""
  def fail(*args, **kwargs):
    raise AssertionError("TFDS tried to download")
  return mock.patch.multiple(tfds.download.DownloadManager, download=fail,
                             download_and_extract=fail, extract=fail)


def build(name: str, data_dir) -> tfds.core.DatasetBuilder:
  """The builder of `name`, prepared in data_dir without downloads."""
  builder = tfds.builder(name, data_dir=str(data_dir))
  with forbid_downloads():
    builder.download_and_prepare()
  return builder
