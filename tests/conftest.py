"""Test setup: eight fake CPU devices, so sharding tests run on one CPU; XLA:CPU's LLVM code
generation at -O0 (the tiny test programs are compile-bound; XLA's graph-level passes, i.e.
the programs, are unchanged, only machine-code optimisation is off); no GPU memory
preallocation; temporary files of the code under test kept under pytest's own (pruned) base
directory; the offline digits dataset built, and a digits tiny run trained, once per session
(per xdist worker)."""

import os
import tempfile

import pytest

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 "
                      "--xla_backend_optimization_level=0")
# On a GPU: JAX takes memory as it needs it instead of 75% of the card up front, so the tests'
# own processes (the launcher runs) and the torch peers can share the card.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


@pytest.fixture(autouse=True, scope="session")
def temporary_files_under_pytest(tmp_path_factory):
  """Points `tempfile` and TMPDIR (inherited by subprocesses and the notebook's kernel) at a
  session directory under pytest's base temp, which pytest deletes after a few runs: TFDS
  leaves an empty 'tmp*tfds' directory behind at every builder it makes, and the notebook
  keeps its `mkdtemp` work directories, which would otherwise pile up in /tmp."""
  directory = str(tmp_path_factory.mktemp("tempfile"))
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv("TMPDIR", directory)
    patch.setattr(tempfile, "tempdir", directory)
    yield


@pytest.fixture(scope="session")
def digits_data_dir(tmp_path_factory) -> str:
  """A TFDS data_dir holding the offline `sklearn_digits` dataset, built without downloads."""
  import tfds_offline  # TensorFlow loads only in the sessions that use the digits.
  path = tmp_path_factory.mktemp("digits_tfds")
  tfds_offline.build("sklearn_digits", path)
  return str(path)


@pytest.fixture(scope="session")
def digits_tiny_run(digits_data_dir, tmp_path_factory) -> str:
  """The workdir of configs/digits_perceiver.py:tiny trained on the digits (6 steps, saved at 3
  and 6, evaluated at 6): tests copy it before changing it."""
  from configs import digits_perceiver
  from perceiver_jax.train import trainer
  config = digits_perceiver.get_config("tiny")
  config.data.data_dir = digits_data_dir
  workdir = str(tmp_path_factory.mktemp("digits_tiny_run") / "work")
  trainer.train_and_evaluate(config, workdir)
  return workdir
