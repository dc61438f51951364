"""TFDS builder `python_stdlib_text`: the Python standard library's own `.py` files as documents.

Features: `text` (a file's contents, decoded as UTF-8) and `path` (its '/'-separated path
relative to `sysconfig.get_paths()["stdlib"]`). The files are every `*.py` under that root in
sorted path order, skipping `site-packages`, directories named `test` or `tests`,
`idlelib/idle_test` and files that are not valid UTF-8. A file goes to `test` when
`zlib.crc32(path.encode()) % 20 == 0` and to `train` otherwise; both splits are stored in path
order. Configs: `full` (default, all files) and `small` (the first 60 files, for tests).
Builds offline: nothing is downloaded.

The content depends on the Python that builds it (this one's stdlib); the build records
`sys.version` in the dataset description. A prepared dataset is not rebuilt when Python changes.
"""

import dataclasses
import os
import sys
import sysconfig
import zlib
from typing import List, Optional, Tuple

from perceiver_jax.data.tensorflow_cpu import tf, tfds

SKIPPED_DIRS = frozenset({"site-packages", "test", "tests", "idlelib/idle_test"})
TEST_MODULUS = 20
SMALL_NUM_FILES = 60


def stdlib_root() -> str:
  """The directory of this Python's standard library."""
  return sysconfig.get_paths()["stdlib"]


def in_test_split(path: str) -> bool:
  """Whether the file at relative `path` belongs to `test` (the crc32 rule of the docstring)."""
  return zlib.crc32(path.encode()) % TEST_MODULUS == 0


def _skipped(relative_dir: str) -> bool:
  return relative_dir in SKIPPED_DIRS or os.path.basename(relative_dir) in SKIPPED_DIRS


def documents(root: str, max_files: Optional[int] = None) -> List[Tuple[str, str]]:
  """(relative path, text) of the first `max_files` (None: all) UTF-8 `*.py` files under
  `root`, in sorted path order, skipping the directories of the module docstring."""
  if max_files is not None and max_files < 1:
    raise ValueError(f"max_files must be None (all files) or >= 1, got {max_files}.")
  paths = []
  for directory, subdirs, files in os.walk(root):
    relative_dir = os.path.relpath(directory, root).replace(os.sep, "/")
    prefix = "" if relative_dir == "." else relative_dir + "/"
    subdirs[:] = [name for name in subdirs if not _skipped(prefix + name)]
    paths.extend(prefix + name for name in files if name.endswith(".py"))
  docs = []
  for path in sorted(paths):
    with open(os.path.join(root, *path.split("/")), "rb") as file:
      data = file.read()
    try:
      text = data.decode("utf-8")
    except UnicodeDecodeError:
      continue  # Not UTF-8: skipped.
    docs.append((path, text))
    if len(docs) == max_files:
      break
  if not docs:
    raise ValueError(f"No UTF-8 *.py files found under the standard library root {root!r}.")
  return docs


@dataclasses.dataclass(eq=False)
class StdlibConfig(tfds.core.BuilderConfig):
  """A builder config; `max_files` keeps the first files in sorted order (None: all)."""
  max_files: Optional[int] = None


class PythonStdlibText(tfds.core.GeneratorBasedBuilder):
  """The Python standard library's source files as text documents (module docstring)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      StdlibConfig(name="full", description="Every file."),
      StdlibConfig(name="small", max_files=SMALL_NUM_FILES,
                   description=f"The first {SMALL_NUM_FILES} files in sorted order."),
  ]
  DEFAULT_CONFIG_NAME = "full"

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=f"{__doc__}\nBuilt from the standard library of Python {sys.version}.",
        features=tfds.features.FeaturesDict({
            "text": tfds.features.Text(),
            "path": tfds.features.Text(),
        }),
        homepage="https://docs.python.org/3/library/",
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # The files ship with Python; nothing is downloaded.
    docs = documents(stdlib_root(), self.builder_config.max_files)
    return {
        "train": self._generate_examples([d for d in docs if not in_test_split(d[0])]),
        "test": self._generate_examples([d for d in docs if in_test_split(d[0])]),
    }

  def _generate_examples(self, docs):
    for path, text in docs:
      yield path, {"text": text, "path": path}
