"""The `python_stdlib_text` TFDS builder (`small` config): offline build, crc32 split, texts equal
to the files, deterministic builds, and packed byte rows through the input pipeline."""

import os
import sys
import zlib

import numpy as np
import pytest
import tensorflow_datasets as tfds

from perceiver_jax.data import data_config, input_pipeline
from perceiver_jax.data.datasets import OFFLINE_BUILDERS, python_stdlib_text
from perceiver_jax.data.tokenizer import EOS, NUM_SPECIAL, PAD, VOCAB_SIZE
from tfds_offline import build, forbid_downloads

ROOT = python_stdlib_text.stdlib_root()


def _read(builder, split):
  """[(path, text)] of a split in stored order."""
  ds = builder.as_dataset(split=split, shuffle_files=False)
  return [(e["path"].decode(), e["text"].decode()) for e in tfds.as_numpy(ds)]


def _expected_paths():
  """The first 60 files, listed independently of the builder: sorted relative paths of the
  UTF-8 *.py files outside the skipped directories."""
  paths = []
  for directory, subdirs, files in os.walk(ROOT):
    relative = os.path.relpath(directory, ROOT).replace(os.sep, "/")
    parts = [] if relative == "." else relative.split("/")
    if (set(parts) & {"site-packages", "test", "tests"}
        or "/".join(parts[:2]) == "idlelib/idle_test"):
      continue
    paths += ["/".join(parts + [name]) for name in files if name.endswith(".py")]
  utf8 = []
  for path in sorted(paths):
    try:
      with open(os.path.join(ROOT, path), encoding="utf-8") as file:
        file.read()
    except UnicodeDecodeError:
      continue
    utf8.append(path)
  return utf8[:60]


def _file_text(path):
  with open(os.path.join(ROOT, path), "rb") as file:
    return file.read().decode("utf-8")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  return build("python_stdlib_text/small", tmp_path_factory.mktemp("tfds"))


def test_registered_offline_with_two_configs_and_python_version(built):
  assert "python_stdlib_text" in tfds.list_builders() and "python_stdlib_text" in OFFLINE_BUILDERS
  assert str(python_stdlib_text.PythonStdlibText.VERSION) == "1.0.0"
  assert [c.name for c in python_stdlib_text.PythonStdlibText.BUILDER_CONFIGS] == ["full", "small"]
  assert tfds.builder("python_stdlib_text", data_dir=built.data_dir).builder_config.name == "full"
  assert sys.version in built.info.description


def test_splits_partition_the_first_60_files_by_crc(built):
  expected = _expected_paths()
  assert len(expected) == 60
  train = [path for path, _ in _read(built, "train")]
  test = [path for path, _ in _read(built, "test")]
  assert test == [p for p in expected if zlib.crc32(p.encode()) % 20 == 0]
  assert train == [p for p in expected if zlib.crc32(p.encode()) % 20 != 0]
  assert built.info.splits["train"].num_examples + built.info.splits["test"].num_examples == 60


def test_texts_equal_the_files(built):
  for split in ("train", "test"):
    documents = _read(built, split)
    assert documents
    for path, text in documents:
      assert text == _file_text(path), path


def test_builds_are_deterministic(built, tmp_path):
  again = build("python_stdlib_text/small", tmp_path)
  for split in ("train", "test"):
    assert _read(again, split) == _read(built, split)


def test_documents_skip_test_dirs_and_non_utf8_and_reject_bad_max_files(tmp_path):
  files = {"a.py": b"x = 1\n", "b.txt": b"not python", "pkg/c.py": "s = '\xe9'\n".encode(),
           "pkg/tests/t.py": b"", "test/t.py": b"", "idlelib/idle_test/t.py": b"",
           "idlelib/run.py": b"r\r\n", "site-packages/s.py": b"", "latin1/l.py": b"s = '\xe9'\n"}
  for path, data in files.items():
    os.makedirs(tmp_path / os.path.dirname(path), exist_ok=True)
    (tmp_path / path).write_bytes(data)
  assert python_stdlib_text.documents(str(tmp_path)) == [
      ("a.py", "x = 1\n"), ("idlelib/run.py", "r\r\n"), ("pkg/c.py", "s = '\xe9'\n")]
  assert python_stdlib_text.documents(str(tmp_path), 2) == [
      ("a.py", "x = 1\n"), ("idlelib/run.py", "r\r\n")]
  with pytest.raises(ValueError, match="max_files"):
    python_stdlib_text.documents(str(tmp_path), 0)
  with pytest.raises(ValueError, match="No UTF-8"):
    python_stdlib_text.documents(str(tmp_path / "latin1"))


def test_packed_text_batches_through_the_input_pipeline(tmp_path):
  config = data_config.default_config()
  config.update(name="python_stdlib_text/small", data_dir=str(tmp_path), task="text_mlm",
                max_seq_len=64, pack=True, text_feature="text", num_threads=1, prefetch=1)
  with forbid_downloads():
    batches = input_pipeline.make_train_iterator(config, global_batch_size=4, seed=0)
    first, second = next(batches), next(batches)
  assert tfds.builder("python_stdlib_text/small", data_dir=str(tmp_path)).is_prepared()
  docs = [text.encode() for _, text in _read(tfds.builder("python_stdlib_text/small",
                                                          data_dir=str(tmp_path)), "train")]
  for batch in (first, second):
    ids = batch["ids"]
    assert ids.dtype == np.int32 and ids.shape == (4, 64)
    np.testing.assert_array_equal(batch["mask"], np.ones(4, np.float32))
    assert np.all((ids == PAD) | (ids == EOS) | ((ids >= NUM_SPECIAL) & (ids < VOCAB_SIZE)))
    assert not (ids == PAD).any()  # an infinite stream packs full rows
    for row in ids:
      chunks = np.split(row, np.flatnonzero(row == EOS))
      chunks = [c[c >= NUM_SPECIAL] for c in chunks]
      for position, chunk in enumerate(chunks):
        data = (chunk - NUM_SPECIAL).astype(np.uint8).tobytes()
        assert any(data in doc for doc in docs)
        # A chunk after an EOS starts a document; one before an EOS ends a document.
        if position > 0:
          assert any(doc.startswith(data) for doc in docs)
        if position < len(chunks) - 1:
          assert any(doc.endswith(data) for doc in docs)
  assert not np.array_equal(first["ids"], second["ids"])
