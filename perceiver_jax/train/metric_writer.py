"""Metrics to `metrics.jsonl`, TensorBoard event files and a console progress bar.

`MetricWriter(workdir, num_train_steps, initial_step, resume=False)`:
  write(step, split, metrics)  # one JSON line {"step", "split", **metrics} and TB scalars
  replace(step, split, metrics)  # write(), dropping earlier records of (step, split) first
  progress(step, metrics)      # tqdm bar with ETA and the latest train metrics
  close()
With resume=True (a training run restarting from the checkpoint at initial_step), the records
of later steps, which the interrupted run wrote and the restarted one replays, are dropped
first (and a line cut short by a kill), so each step's records are written once.
num_train_steps=None: no progress bar (evaluating a checkpoint is no training run).
Only process 0 writes (the others' calls do nothing), so a multi-host run has one log.
TensorBoard events go to `workdir/tensorboard/<split>` through tf.summary (TensorFlow is
already the input pipeline's dependency; it runs on CPU only).
"""

import json
import os
from typing import Mapping, Optional

import jax
import tqdm

from perceiver_jax.data.tensorflow_cpu import tf


def _step_of(line: str) -> Optional[int]:
  """The step of a metrics.jsonl line; None for a line cut short (by a kill)."""
  if not line.endswith("\n"):
    return None
  try:
    return int(json.loads(line)["step"])
  except (ValueError, KeyError, TypeError):
    return None


def _keep_lines(path: str, keep) -> None:
  """Rewrites the file at `path` (atomically: a temporary file, then renamed) with only the
  lines for which keep(line) holds; leaves it alone when all are kept or it does not exist."""
  if not os.path.exists(path):
    return
  with open(path, encoding="utf-8") as f:
    lines = f.readlines()
  kept = [line for line in lines if keep(line)]
  if kept != lines:
    with open(path + ".tmp", "w", encoding="utf-8") as f:
      f.writelines(kept)
    os.replace(path + ".tmp", path)


def _is_record(line: str, step: int, split: str) -> bool:
  """Whether a metrics.jsonl line is the record of `split` at `step`."""
  try:
    record = json.loads(line)
  except ValueError:
    return False
  return isinstance(record, dict) and record.get("step") == step and record.get("split") == split


class MetricWriter:
  """See the module docstring."""

  def __init__(self, workdir: str, num_train_steps: Optional[int], initial_step: int = 0,
               resume: bool = False):
    self.enabled = jax.process_index() == 0
    if not self.enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "metrics.jsonl")
    if resume:  # Records of steps after initial_step and lines cut short go.
      _keep_lines(path, lambda line: _step_of(line) is not None
                  and _step_of(line) <= initial_step)
    self._jsonl = open(path, "a", encoding="utf-8")
    self._tensorboard_dir = os.path.join(workdir, "tensorboard")
    self._writers = {}
    self._bar = None if num_train_steps is None else tqdm.tqdm(
        total=num_train_steps, initial=initial_step, unit="step", dynamic_ncols=True,
        mininterval=1.0)

  def write(self, step: int, split: str, metrics: Mapping[str, float]):
    if not self.enabled:
      return
    record = {"step": int(step), "split": split}
    record.update({name: float(value) for name, value in metrics.items()})
    self._jsonl.write(json.dumps(record) + "\n")
    self._jsonl.flush()
    if split not in self._writers:
      self._writers[split] = tf.summary.create_file_writer(
          os.path.join(self._tensorboard_dir, split))
    with self._writers[split].as_default():
      for name, value in metrics.items():
        tf.summary.scalar(name, float(value), step=int(step))
    self._writers[split].flush()
    if split == "eval":
      shown = ", ".join(f"{k}={float(v):.4g}" for k, v in metrics.items())
      tqdm.tqdm.write(f"step {int(step)} eval: {shown}")

  def replace(self, step: int, split: str, metrics: Mapping[str, float]):
    """write(), after rewriting metrics.jsonl without the records of `split` at `step`."""
    if not self.enabled:
      return
    path = self._jsonl.name
    self._jsonl.close()
    _keep_lines(path, lambda line: not _is_record(line, step, split))
    self._jsonl = open(path, "a", encoding="utf-8")
    self.write(step, split, metrics)

  def progress(self, step: int, metrics: Mapping[str, float] = None):
    if not self.enabled or self._bar is None:
      return
    self._bar.update(int(step) - self._bar.n)
    if metrics:
      self._bar.set_postfix({k: f"{float(v):.4g}" for k, v in metrics.items()}, refresh=False)

  def close(self):
    if not self.enabled:
      return
    if self._bar is not None:
      self._bar.close()
    self._jsonl.close()
    for writer in self._writers.values():
      writer.close()
