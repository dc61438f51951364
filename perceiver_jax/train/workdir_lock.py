"""One run per workdir: an exclusive lock on `workdir/.lock` while a run uses the workdir.

  with WorkdirLock(workdir):
    ...  # Train or evaluate: nobody else opens the checkpoints or metrics.jsonl meanwhile.

The lock is an flock held on the open file, which records the owner ("pid N on HOST"). A
second run gets RuntimeError naming the workdir and that owner, before it touches anything
(opening the checkpoints would delete the live run's in-progress save as an orphan). The OS
releases the lock when the owner exits or is killed (kill -9 included), so a lock file that a
dead run left behind does not block a resume: it is taken over, with a log line. In a
multi-process run process 0 locks and tells the others whether to go on.
"""

import fcntl
import os
import socket
from typing import Optional

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np


class WorkdirLock:
  """See the module docstring."""

  def __init__(self, workdir: str):
    self.workdir = os.path.abspath(workdir)
    self.path = os.path.join(self.workdir, ".lock")
    self._file = None

  def _acquire(self) -> Optional[str]:
    """Takes the lock; returns why it cannot (None when taken)."""
    os.makedirs(self.workdir, exist_ok=True)
    file = os.fdopen(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644), "r+", encoding="utf-8")
    try:
      fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      owner = file.read().strip() or "a process that has not written its id yet"
      file.close()
      return (f"another run is using the workdir {self.workdir}: {owner} holds {self.path}. "
              "Wait for it to end (or stop it), or pass another --workdir: two runs in one "
              "workdir delete each other's checkpoints and interleave metrics.jsonl.")
    except OSError as error:  # A file system without flock: go on unprotected.
      file.close()
      logging.warning("Cannot lock %s (%s); nothing stops a second run from using %s at the "
                      "same time.", self.path, error, self.workdir)
      return None
    previous = file.read().strip()
    if previous:
      logging.warning("Taking over %s from %s, which ended without releasing it (killed?).",
                      self.path, previous)
    file.seek(0)
    file.truncate()
    file.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    file.flush()
    self._file = file
    return None

  def __enter__(self) -> "WorkdirLock":
    problem = self._acquire() if jax.process_index() == 0 else None
    if jax.process_count() > 1:
      locked = multihost_utils.broadcast_one_to_all(np.int32(problem is None))
      if not locked and problem is None:
        problem = f"process 0 could not lock the workdir {self.workdir}: see its error."
    if problem:
      raise RuntimeError(problem)
    return self

  def __exit__(self, *exc_info):
    if self._file is not None:
      self._file.truncate(0)  # Released cleanly: the next owner has nothing to take over.
      fcntl.flock(self._file, fcntl.LOCK_UN)
      self._file.close()
      self._file = None
