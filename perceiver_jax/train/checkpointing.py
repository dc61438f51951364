"""Checkpoints of a train-state pytree with orbax: the `keep` newest steps plus the best one.

The state is any pytree of jax arrays, e.g. a TrainState (train_state.py), possibly sharded
(NamedSharding over a Mesh); Orbax stores it by field name, so a dict with a TrainState's
keys (the state before TrainState) restores as one. Step s is written to
`<directory>/s.orbax-checkpoint-tmp-*` and renamed to `<directory>/s` once complete, so an
interrupted save never hides the last good step; leftover tmp directories are removed when a
Checkpointer opens the directory. Restoring takes an abstract state (jax.ShapeDtypeStruct
leaves with .sharding, see `abstract_with_sharding`) and returns arrays placed in those
shardings, with the abstract tree's structure (optax namedtuples included). `restore_latest`
skips unreadable steps (truncated or missing files, broken metadata), newest first, with a
warning naming each; `restore` of an unreadable step raises an error naming the readable ones.
A failed restore leaves tensorstore reads in flight that wake orbax's closed event loop; those
'Event loop is closed' reports are dropped (`_drop_closed_loop_wakeups`), nothing else.

Retention: the `keep` newest steps, plus, with `best_metric`, the step whose saved metrics
have the best value of it (missing or NaN counts as worst), however old. All file I/O is
orbax's, which writes and deletes from the primary process only: safe on many processes.
"""

import math
import operator
import os
import sys
import traceback
from typing import Any, List, Mapping, Optional, Tuple

from absl import logging
import jax
import orbax.checkpoint as ocp

_policies = ocp.checkpoint_managers
_ITEM = "state"


def abstract_with_sharding(state_shapes, shardings):
  """`state_shapes`' leaves as jax.ShapeDtypeStruct with the matching leaf of `shardings`.

  state_shapes: a pytree of arrays or ShapeDtypeStructs (e.g. from jax.eval_shape).
  shardings: a pytree of jax.sharding.Sharding with the same structure, or one Sharding
    used for every leaf.
  """
  if isinstance(shardings, jax.sharding.Sharding):
    shardings = jax.tree.map(lambda _: shardings, state_shapes)
  shapes_def = jax.tree.structure(state_shapes)
  shardings_def = jax.tree.structure(shardings)
  if shapes_def != shardings_def:
    raise ValueError(f"abstract_with_sharding: shardings must have the structure of "
                     f"state_shapes ({shapes_def}), got {shardings_def}; build them with "
                     f"jax.tree.map over state_shapes or pass one Sharding for all leaves.")
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      state_shapes, shardings)


def _as_abstract(abstract_state):
  """Checks the restore target: ShapeDtypeStruct leaves with .sharding (arrays are converted)."""
  def leaf(path, x):
    if isinstance(x, jax.Array):
      return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    if isinstance(x, jax.ShapeDtypeStruct) and x.sharding is not None:
      return x
    raise ValueError(f"Checkpointer: abstract_state leaf {jax.tree_util.keystr(path)} must be "
                     f"a jax.ShapeDtypeStruct with .sharding set (or a jax.Array), got {x!r}; "
                     f"build it with abstract_with_sharding(jax.eval_shape(...), shardings).")
  return jax.tree_util.tree_map_with_path(leaf, abstract_state)


def _is_closed_loop_wakeup(unraisable) -> bool:
  """Whether an unraisable exception is a native callback waking a closed asyncio loop."""
  frames = [frame.f_code.co_name for frame, _ in traceback.walk_tb(unraisable.exc_traceback)]
  return (isinstance(unraisable.exc_value, RuntimeError)
          and str(unraisable.exc_value) == "Event loop is closed"
          and frames[:1] == ["call_soon_threadsafe"])


def _drop_closed_loop_wakeups():
  """Installs (once) a sys.unraisablehook that drops the noise of a failed restore.

  Orbax restores in a fresh event loop and closes it as soon as one read fails; tensorstore's
  reads still in flight then finish on its own threads and call the closed loop's
  call_soon_threadsafe, each failure reported through sys.unraisablehook: up to one traceback
  per array. Other unraisable exceptions go to the previous hook.
  """
  previous = sys.unraisablehook
  if getattr(previous, "drops_closed_loop_wakeups", False):
    return

  def hook(unraisable):
    if not _is_closed_loop_wakeup(unraisable):
      previous(unraisable)

  hook.drops_closed_loop_wakeups = True
  sys.unraisablehook = hook


def _describe(error: Exception) -> str:
  """The error's type and first line, shortened (tensorstore appends kilobytes of spec)."""
  lines = str(error).strip().splitlines() or [""]
  line = lines[0] if len(lines[0]) <= 300 else lines[0][:300] + "..."
  return f"{type(error).__name__}: {line}"


class _Manager(ocp.CheckpointManager):
  """Orbax's CheckpointManager, which opens even when a step's metrics file is damaged (a
  truncated JSON file would stop every launcher): that step ranks as one without metrics."""

  def metrics(self, step: int):
    try:
      return super().metrics(step)
    except ValueError as error:  # json.JSONDecodeError is one.
      logging.warning("Checkpointer: the metrics of step %d in %s are unreadable (%s); it "
                      "ranks as a step without metrics.", step, self.directory,
                      _describe(error))
      return None


def _check_step(step) -> int:
  """The step as a python int >= 0."""
  try:
    step = operator.index(step)
  except TypeError:
    raise ValueError(f"Checkpointer: step must be an integer, got {step!r}.") from None
  if step < 0:
    raise ValueError(f"Checkpointer: step must be >= 0, got {step}.")
  return step


class Checkpointer:
  """Saves and restores train states under `directory`; see the module docstring.

  keep: how many of the newest steps to retain (>= 1).
  best_metric: name of the metric (in `save`'s metrics) whose best step is also retained.
  best_mode: 'max' or 'min', which value of best_metric is best.
  async_save: save in a background thread; `wait()` blocks until saves are on disk.
  read_only: for readers of a workdir a run may be writing (plots, sampling): leaves the
    temporary directories of saves in progress alone instead of removing them as orphans.
  """

  def __init__(self, directory, *, keep: int = 3, best_metric: Optional[str] = None,
               best_mode: str = "max", async_save: bool = True, read_only: bool = False):
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
      raise ValueError(f"Checkpointer.keep must be an int >= 1, got {keep!r}.")
    if best_metric is not None and (not isinstance(best_metric, str) or not best_metric):
      raise ValueError(f"Checkpointer.best_metric must be a metric name or None, "
                       f"got {best_metric!r}.")
    if best_mode not in ("max", "min"):
      raise ValueError(f"Checkpointer.best_mode must be 'max' or 'min', got {best_mode!r}.")
    if not isinstance(async_save, bool):
      raise ValueError(f"Checkpointer.async_save must be a bool, got {async_save!r}.")
    self._best_metric = best_metric
    self._best_mode = best_mode
    # Orbax's max_to_keep with best_fn keeps the `keep` best steps, not the newest: combine
    # "newest keep" with "best one" explicitly.
    policies = [_policies.LatestN(n=keep)]
    if best_metric is not None:
      policies.append(_policies.BestN(get_metric_fn=self._score, reverse=best_mode == "min",
                                      n=1, keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        best_fn=self._score if best_metric is not None else None, best_mode=best_mode,
        preservation_policy=_policies.AnyPreservationPolicy(policies),
        enable_async_checkpointing=async_save, cleanup_tmp_directories=not read_only,
        create=True)
    directory = os.fspath(directory)
    self.directory = directory if "://" in directory else os.path.abspath(directory)
    # A named item (not orbax's default-item mode, which it guesses from the first step
    # directory it reads) keeps restores working when a step directory is damaged.
    self._manager = _Manager(self.directory, item_names=(_ITEM,), options=options)

  def _score(self, metrics) -> float:
    """best_metric's value in a step's metrics; a missing or NaN value ranks worst."""
    value = metrics.get(self._best_metric) if isinstance(metrics, Mapping) else None
    if not isinstance(value, (int, float)) or math.isnan(value):
      return -math.inf if self._best_mode == "max" else math.inf
    return float(value)

  def _check_metrics(self, metrics) -> Optional[dict]:
    """metrics as {name: float}; it must hold best_metric when one is set."""
    if metrics is None:
      return None
    if not isinstance(metrics, Mapping):
      raise ValueError(f"Checkpointer.save: metrics must be a dict of name -> float, "
                       f"got {type(metrics).__name__}.")
    try:
      metrics = {str(name): float(value) for name, value in metrics.items()}
    except (TypeError, ValueError) as error:
      raise ValueError(f"Checkpointer.save: metrics values must be scalars convertible to "
                       f"float ({error}); pass python floats.") from None
    if self._best_metric is not None and self._best_metric not in metrics:
      raise ValueError(f"Checkpointer.save: metrics lack best_metric {self._best_metric!r} "
                       f"(got {sorted(metrics)}); add it or open the Checkpointer with another "
                       f"best_metric.")
    return metrics

  def save(self, step: int, state, metrics: Optional[dict] = None, *,
           force: bool = False) -> bool:
    """Starts saving `state` as `step` (async when configured); True if a save was started.

    metrics: {name: float}, stored with the step and ranked when best_metric is set
      (ignored otherwise); a step saved without metrics is kept by recency only.
    A step that exists, or is older than the latest one, is skipped (False) unless `force`,
    which deletes the existing steps >= `step` first (steps must increase on disk).
    """
    step = _check_step(step)
    metrics = self._check_metrics(metrics)
    newer = [s for s in self.all_steps() if s >= step]
    if newer and not force:
      if step not in newer:
        logging.warning("Checkpointer: not saving step %d in %s: it is older than the latest "
                        "step %d; pass force=True to replace the newer steps.",
                        step, self.directory, newer[-1])
      return False
    if newer:
      self._manager.wait_until_finished()
      logging.warning("Checkpointer: force-saving step %d in %s deletes steps %s.",
                      step, self.directory, newer)
      for old in newer:
        self._manager.delete(old)
    args = ocp.args.Composite(**{_ITEM: ocp.args.StandardSave(state)})
    return bool(self._manager.save(step, args=args, metrics=metrics, force=True))

  def restore(self, step: int, abstract_state) -> Any:
    """The state saved at `step`, placed in `abstract_state`'s shardings.

    An unreadable step raises ValueError naming it and the steps that restore.
    """
    step = _check_step(step)
    abstract_state = _as_abstract(abstract_state)
    self._manager.wait_until_finished()
    steps = self.all_steps()
    if step not in steps:
      raise ValueError(f"Checkpointer.restore: no checkpoint for step {step} in "
                       f"{self.directory}; saved steps: {steps}.")
    try:
      return self._restore(step, abstract_state)
    except Exception as error:  # pylint: disable=broad-except  # Named with the readable steps.
      readable = [s for s in reversed(steps) if s != step and self._readable(s, abstract_state)]
      advice = (f"restore one of the readable steps {readable} (the launchers' --step=N), or "
                f"give no step for the newest readable one" if readable else
                "no other step restores either: if the model or optimizer config changed, "
                "abstract_state no longer matches the saved state (use a new directory)")
      raise ValueError(f"Checkpointer.restore: the checkpoint of step {step} in "
                       f"{self.directory} is unreadable ({_describe(error)}); {advice}."
                       ) from error

  def _restore(self, step: int, abstract_state) -> Any:
    _drop_closed_loop_wakeups()
    args = ocp.args.Composite(**{_ITEM: ocp.args.StandardRestore(abstract_state)})
    return self._manager.restore(step, args=args)[_ITEM]

  def _readable(self, step: int, abstract_state) -> bool:
    """Whether `step` restores (it is read in full, then dropped)."""
    try:
      self._restore(step, abstract_state)
    except Exception:  # pylint: disable=broad-except  # Any failure means: unreadable.
      return False
    return True

  def restore_latest(self, abstract_state) -> Optional[Tuple[int, Any]]:
    """(step, state) of the newest readable step, or None when there is no checkpoint.

    An unreadable step is logged as a warning and the next older one is tried; if none can
    be read (e.g. abstract_state no longer matches the saved tree), raises ValueError.
    """
    abstract_state = _as_abstract(abstract_state)
    self._manager.wait_until_finished()
    steps = self.all_steps()
    error, unreadable = None, []
    for step in reversed(steps):
      try:
        state = self._restore(step, abstract_state)
      except Exception as e:  # pylint: disable=broad-except  # Any failure means: fall back.
        error = e
        unreadable.append(step)
        logging.warning("Checkpointer: cannot restore step %d from %s (%s); trying the next "
                        "older step.", step, self.directory, _describe(e))
        continue
      if unreadable:
        logging.warning("Checkpointer: restored step %d from %s, the newest readable one "
                        "(unreadable: %s).", step, self.directory, unreadable)
      return step, state
    if error is not None:
      raise ValueError(f"Checkpointer.restore_latest: none of the steps {steps} in "
                       f"{self.directory} could be restored (last error: {_describe(error)}); "
                       f"if the model or optimizer config changed, abstract_state no longer "
                       f"matches the saved state: use a new directory.") from error
    return None

  def delete(self, step: int) -> None:
    """Deletes the saved `step` (once pending saves are done); a missing step is a no-op."""
    step = _check_step(step)
    self._manager.wait_until_finished()
    if step in self.all_steps():
      self._manager.delete(step)

  def reached_preemption(self, step: int) -> bool:
    """True at the step every process of a jax.distributed run saves at after a preemption
    notice (SIGTERM) reached any of them (orbax's; always False without jax.distributed).
    Every process must call it at every step."""
    return self._manager.reached_preemption(step)

  def latest_step(self) -> Optional[int]:
    """The newest saved (or being saved) step, or None."""
    return self._manager.latest_step()

  def best_step(self) -> Optional[int]:
    """The retained step with the best best_metric, or None (no best_metric or no metrics)."""
    if self._best_metric is None:
      return None
    return self._manager.best_step()

  def all_steps(self) -> List[int]:
    """All retained steps, ascending."""
    return sorted(self._manager.all_steps())

  def wait(self) -> None:
    """Blocks until pending async saves (and retention deletes) are durable on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases orbax's threads."""
    self._manager.close()
