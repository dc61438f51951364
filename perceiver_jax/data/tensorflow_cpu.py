"""TensorFlow and TFDS for the input pipelines and TensorBoard: on the CPU only, loaded quietly.

Every module of the library that uses TensorFlow takes `tf` (and `tfds`) from here. Loading
them here hides the GPUs and TPUs from TensorFlow (it only feeds data; JAX has the
accelerators) and drops the INFO lines TensorFlow's C++ code prints while it loads (the
oneDNN notice, twice, each after absl's "before absl::InitializeLog()" notice): TensorFlow
2.21 prints them before it reads TF_CPP_MIN_LOG_LEVEL, so they are taken out of stderr around
the import and every other line is written back. TF_CPP_MIN_LOG_LEVEL=0 keeps them.
"""

import contextlib
import os
import re
import sys
import tempfile

_NOISE = re.compile(r"I\d{4} |WARNING: All log messages before absl::InitializeLog\(\)")


@contextlib.contextmanager
def _stderr_without(pattern):
  """Captures file descriptor 2 (C++ output too); writes back the lines `pattern` does not
  match when done."""
  sys.stderr.flush()
  stderr = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(stderr, 2)
      os.close(stderr)
      captured.seek(0)
      for line in captured.read().decode(errors="replace").splitlines(keepends=True):
        if not pattern.match(line):
          sys.stderr.write(line)


_KEEP_STDERR = "tensorflow" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0"
with contextlib.nullcontext() if _KEEP_STDERR else _stderr_without(_NOISE):
  import tensorflow as tf
  import tensorflow_datasets as tfds

for _kind in ("GPU", "TPU"):
  if tf.config.get_visible_devices(_kind):
    tf.config.set_visible_devices([], _kind)
