"""Tests of perceiver_jax.train.checkpointing (CPU): round trips, sharded restore, retention, recovery."""

import asyncio
import logging
import os
import shutil
import sys
import time
import types

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P, SingleDeviceSharding

from perceiver_jax.train import checkpointing
from perceiver_jax.train.checkpointing import Checkpointer, abstract_with_sharding
from perceiver_jax.train.train_state import TrainState


def _train_state(seed: int):
  """A realistic state: params, adamw state after one update (non-zero moments), rng."""
  rng = np.random.default_rng(seed)
  params = {"dense": {"kernel": jnp.asarray(rng.normal(size=(8, 4)), jnp.float32),
                      "bias": jnp.asarray(rng.normal(size=(4,)), jnp.float32)}}
  tx = optax.adamw(1e-2, weight_decay=1e-4)
  opt_state = tx.init(params)
  grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
  updates, opt_state = tx.update(grads, opt_state, params)
  return TrainState(step=jnp.int32(seed), params=optax.apply_updates(params, updates),
                    opt_state=opt_state, batch_stats={}, rng=jax.random.PRNGKey(seed))


def _small_state(value: float):
  return {"x": jnp.full((2,), value, jnp.float32)}


def _abstract(state, sharding=None):
  sharding = sharding or SingleDeviceSharding(jax.devices()[0])
  return abstract_with_sharding(jax.eval_shape(lambda: state), sharding)


def _assert_trees_equal(actual, expected):
  chex.assert_trees_all_equal_shapes_and_dtypes(actual, expected)
  chex.assert_trees_all_equal(actual, expected)


@pytest.fixture
def open_checkpointer(tmp_path):
  """Opens Checkpointers on tmp_path/ckpt (or a given directory); closes them all at the end."""
  opened = []

  def make(directory=None, **kwargs):
    kwargs.setdefault("async_save", False)
    checkpointer = Checkpointer(directory or tmp_path / "ckpt", **kwargs)
    opened.append(checkpointer)
    return checkpointer

  yield make
  for checkpointer in opened:
    checkpointer.close()


def test_round_trip_of_adamw_state_is_exact(open_checkpointer):
  state = _train_state(3)
  checkpointer = open_checkpointer(async_save=True)
  assert checkpointer.restore_latest(_abstract(state)) is None
  assert checkpointer.save(7, state) is True
  checkpointer.wait()
  step, restored = checkpointer.restore_latest(_abstract(state))
  assert step == 7
  _assert_trees_equal(restored, state)
  assert isinstance(restored, TrainState)
  assert isinstance(restored.opt_state[0], optax.ScaleByAdamState)
  _assert_trees_equal(checkpointer.restore(7, _abstract(state)), state)


def test_a_dict_state_saved_before_train_state_restores_as_one(open_checkpointer):
  state = _train_state(2)
  checkpointer = open_checkpointer()
  checkpointer.save(2, {field: getattr(state, field) for field in
                        ("step", "params", "opt_state", "batch_stats", "rng")})
  restored = checkpointer.restore(2, _abstract(state))
  assert isinstance(restored, TrainState)
  _assert_trees_equal(restored, state)


def test_restore_reshards_onto_the_8_device_mesh(open_checkpointer):
  devices = np.array(jax.devices())
  assert devices.size == 8
  state = _train_state(1)
  rows = NamedSharding(Mesh(devices, ("data",)), P("data"))
  saved = state.replace(params={"dense": {
      "kernel": jax.device_put(state.params["dense"]["kernel"], rows),
      "bias": state.params["dense"]["bias"]}})
  checkpointer = open_checkpointer()
  checkpointer.save(1, saved)

  grid = Mesh(devices.reshape(4, 2), ("a", "b"))
  shardings = jax.tree.map(lambda _: NamedSharding(grid, P()), state)
  shardings.params["dense"]["kernel"] = NamedSharding(grid, P("a", "b"))
  restored = checkpointer.restore(1, abstract_with_sharding(jax.eval_shape(lambda: state),
                                                            shardings))
  kernel = restored.params["dense"]["kernel"]
  assert kernel.sharding == shardings.params["dense"]["kernel"]
  reference = np.asarray(state.params["dense"]["kernel"])
  assert len(kernel.addressable_shards) == 8
  for shard in kernel.addressable_shards:
    assert shard.data.shape == (2, 2)
    np.testing.assert_array_equal(np.asarray(shard.data), reference[shard.index])
  assert restored.step.sharding == NamedSharding(grid, P())
  _assert_trees_equal(restored, state)


def test_keeps_the_newest_n(open_checkpointer, tmp_path):
  checkpointer = open_checkpointer(keep=2)
  for step in range(1, 6):
    assert checkpointer.save(step, _small_state(step))
  checkpointer.wait()
  assert checkpointer.all_steps() == [4, 5]
  assert sorted(os.listdir(tmp_path / "ckpt")) == ["4", "5"]
  assert checkpointer.best_step() is None
  restored = checkpointer.restore(4, _abstract(_small_state(0)))
  np.testing.assert_array_equal(restored["x"], [4.0, 4.0])


@pytest.mark.parametrize("mode, values, best", [
    ("max", [0.1, 0.9, 0.3, float("nan"), 0.4], 2),
    ("min", [0.5, 0.2, 0.3, float("nan"), 0.4], 2),
])
def test_best_step_survives_beside_the_newest_n(open_checkpointer, tmp_path, mode, values,
                                                best):
  checkpointer = open_checkpointer(keep=2, best_metric="score", best_mode=mode)
  for step, value in enumerate(values, start=1):
    checkpointer.save(step, _small_state(step), {"score": value, "other": 1.0})
  assert checkpointer.all_steps() == [best, 4, 5]
  assert checkpointer.best_step() == best
  checkpointer.close()

  # Reopened (metrics read back from disk): more, worse steps still keep the old best; a step
  # saved without metrics is kept by recency only.
  checkpointer = open_checkpointer(keep=2, best_metric="score", best_mode=mode)
  assert checkpointer.best_step() == best
  checkpointer.save(6, _small_state(6), {"score": values[0]})
  checkpointer.save(7, _small_state(7))
  checkpointer.save(8, _small_state(8), {"score": values[0]})
  checkpointer.wait()
  assert checkpointer.all_steps() == [best, 7, 8]
  assert sorted(os.listdir(tmp_path / "ckpt")) == sorted([str(best), "7", "8"])
  restored = checkpointer.restore(best, _abstract(_small_state(0)))
  np.testing.assert_array_equal(restored["x"], [best, best])


def test_a_better_step_replaces_the_best(open_checkpointer):
  checkpointer = open_checkpointer(keep=1, best_metric="acc")
  for step, acc in [(1, 0.5), (2, 0.1), (3, 0.7), (4, 0.2)]:
    checkpointer.save(step, _small_state(step), {"acc": acc})
  assert checkpointer.all_steps() == [3, 4]
  assert checkpointer.best_step() == 3


def _truncate_array_data(step_dir):
  """Truncates every array-data file of a saved step to half its size."""
  data_files = [os.path.join(root, name) for root, _, names in os.walk(step_dir)
                for name in names if os.path.basename(root) == "d"]
  assert data_files
  for path in data_files:
    os.truncate(path, os.path.getsize(path) // 2)


def test_corrupt_newest_step_falls_back_with_a_warning(open_checkpointer, tmp_path, caplog):
  checkpointer = open_checkpointer()
  for step in (1, 2, 3):
    checkpointer.save(step, _small_state(step))
  checkpointer.close()
  _truncate_array_data(tmp_path / "ckpt" / "3")

  checkpointer = open_checkpointer()
  with caplog.at_level(logging.WARNING):
    step, restored = checkpointer.restore_latest(_abstract(_small_state(0)))
  assert step == 2
  np.testing.assert_array_equal(restored["x"], [2.0, 2.0])
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert any("cannot restore step 3" in message for message in warnings), warnings
  assert not any("cannot restore step 2" in message for message in warnings), warnings

  for step in (1, 2):
    _truncate_array_data(tmp_path / "ckpt" / str(step))
  with pytest.raises(ValueError, match=r"none of the steps \[1, 2, 3\]"):
    checkpointer.restore_latest(_abstract(_small_state(0)))


def _damage(step_dir, how):
  """Damages a saved step as disks and killed copies do."""
  files = [os.path.join(root, name) for root, _, names in os.walk(step_dir) for name in names]
  if how == "truncated array data":
    _truncate_array_data(step_dir)
  elif how == "deleted array data":
    for path in files:
      if os.path.basename(os.path.dirname(path)) == "d":
        os.remove(path)
  elif how == "broken tree metadata":
    with open(os.path.join(step_dir, "state", "_METADATA"), "w") as f:
      f.write("{not json")
  elif how == "every file emptied, metrics too":
    for path in files:
      open(path, "w").close()


@pytest.mark.parametrize("how", ["truncated array data", "deleted array data",
                                 "broken tree metadata", "every file emptied, metrics too"])
def test_a_damaged_step_is_skipped_by_restore_latest_and_named_by_restore(
    open_checkpointer, tmp_path, caplog, how):
  checkpointer = open_checkpointer(best_metric="acc")
  for step in (1, 2, 3):
    checkpointer.save(step, _small_state(step), {"acc": step / 10})
  checkpointer.close()
  _damage(tmp_path / "ckpt" / "3", how)

  checkpointer = open_checkpointer(best_metric="acc")  # Opens despite damaged metrics.
  with caplog.at_level(logging.WARNING):
    step, restored = checkpointer.restore_latest(_abstract(_small_state(0)))
  assert step == 2
  np.testing.assert_array_equal(restored["x"], [2.0, 2.0])
  assert "cannot restore step 3" in caplog.text
  assert "restored step 2" in caplog.text and "(unreadable: [3])" in caplog.text
  with pytest.raises(ValueError, match=r"step 3 in .* is unreadable \(.*\); restore one of the "
                                       r"readable steps \[2, 1\]"):
    checkpointer.restore(3, _abstract(_small_state(0)))


def test_closed_loop_wakeups_of_a_failed_restore_are_dropped_and_nothing_else(monkeypatch):
  seen = []
  monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: seen.append(unraisable))
  checkpointing._drop_closed_loop_wakeups()
  checkpointing._drop_closed_loop_wakeups()  # Installed once.
  loop = asyncio.new_event_loop()
  loop.close()
  try:  # What tensorstore's threads do when a read finishes after orbax closed its loop.
    loop.call_soon_threadsafe(print)
  except RuntimeError as error:
    # A native caller adds no frame of its own: the traceback starts in asyncio.
    wakeup = types.SimpleNamespace(exc_type=RuntimeError, exc_value=error,
                                   exc_traceback=error.__traceback__.tb_next, err_msg=None,
                                   object=None)
  other = types.SimpleNamespace(exc_type=RuntimeError, exc_value=RuntimeError("other"),
                                exc_traceback=None, err_msg=None, object=None)
  sys.unraisablehook(wakeup)
  sys.unraisablehook(other)
  assert seen == [other]


def test_interrupted_saves_are_ignored(open_checkpointer, tmp_path):
  checkpointer = open_checkpointer()
  checkpointer.save(1, _small_state(1))
  checkpointer.save(2, _small_state(2))
  checkpointer.close()
  # A crash mid-save leaves the step in its tmp directory, never renamed to "3".
  root = tmp_path / "ckpt"
  shutil.copytree(root / "2", root / "3.orbax-checkpoint-tmp-1700000000")
  _truncate_array_data(root / "3.orbax-checkpoint-tmp-1700000000")
  # A step directory whose files never arrived (no metadata, no data).
  os.makedirs(root / "4")

  checkpointer = open_checkpointer()
  assert checkpointer.all_steps() == [1, 2, 4]
  step, restored = checkpointer.restore_latest(_abstract(_small_state(0)))
  assert step == 2
  np.testing.assert_array_equal(restored["x"], [2.0, 2.0])
  assert checkpointer.save(5, _small_state(5))
  checkpointer.wait()
  assert "3.orbax-checkpoint-tmp-1700000000" not in os.listdir(root)
  assert checkpointer.restore_latest(_abstract(_small_state(0)))[0] == 5


def test_a_read_only_checkpointer_leaves_a_save_in_progress_alone(open_checkpointer, tmp_path):
  """Plots and sampling read a workdir a live run may be saving to: opening it read-only must
  not remove the run's in-progress save as an orphan (a writer's Checkpointer does)."""
  checkpointer = open_checkpointer()
  checkpointer.save(1, _small_state(1))
  checkpointer.close()
  root = tmp_path / "ckpt"
  in_progress = "2.orbax-checkpoint-tmp-1700000000"
  shutil.copytree(root / "1", root / in_progress)
  reader = open_checkpointer(read_only=True)
  assert reader.restore_latest(_abstract(_small_state(0)))[0] == 1
  reader.close()
  assert in_progress in os.listdir(root)
  open_checkpointer().close()  # Orbax removes orphans in a background thread as it opens.
  deadline = time.monotonic() + 60
  while in_progress in os.listdir(root) and time.monotonic() < deadline:
    time.sleep(0.1)
  assert in_progress not in os.listdir(root)


def test_existing_or_older_step_is_skipped_unless_forced(open_checkpointer):
  checkpointer = open_checkpointer()
  assert checkpointer.save(1, _small_state(1.0))
  assert checkpointer.save(3, _small_state(3.0))
  assert checkpointer.save(3, _small_state(-3.0)) is False
  assert checkpointer.save(2, _small_state(2.0)) is False
  abstract = _abstract(_small_state(0))
  np.testing.assert_array_equal(checkpointer.restore(3, abstract)["x"], [3.0, 3.0])
  assert checkpointer.save(3, _small_state(-3.0), force=True)
  np.testing.assert_array_equal(checkpointer.restore(3, abstract)["x"], [-3.0, -3.0])
  assert checkpointer.save(2, _small_state(2.0), force=True)
  assert checkpointer.all_steps() == [1, 2]
  assert checkpointer.latest_step() == 2
  np.testing.assert_array_equal(checkpointer.restore_latest(abstract)[1]["x"], [2.0, 2.0])


def test_delete_removes_a_step_even_while_it_is_being_saved(open_checkpointer, tmp_path):
  checkpointer = open_checkpointer(async_save=True)
  for step in (1, 2, 3):
    checkpointer.save(step, _small_state(float(step)))
  checkpointer.delete(3)  # Waits for the async save of 3 first.
  checkpointer.delete(7)  # Not saved: nothing to do.
  assert checkpointer.all_steps() == [1, 2] and checkpointer.latest_step() == 2
  assert sorted(os.listdir(tmp_path / "ckpt")) == ["1", "2"]
  abstract = _abstract(_small_state(0))
  np.testing.assert_array_equal(checkpointer.restore_latest(abstract)[1]["x"], [2.0, 2.0])


def test_async_save_is_visible_after_wait(open_checkpointer, tmp_path):
  writer = open_checkpointer(async_save=True)
  state = _small_state(4.0)
  assert writer.save(4, state, {"loss": 0.5})
  writer.wait()
  assert os.listdir(tmp_path / "ckpt") == ["4"]
  reader = open_checkpointer(async_save=True)
  assert reader.all_steps() == [4]
  assert reader.latest_step() == 4
  _assert_trees_equal(reader.restore(4, _abstract(state)), state)


def test_bad_values_raise_clear_errors(open_checkpointer):
  with pytest.raises(ValueError, match="Checkpointer.keep"):
    open_checkpointer(keep=0)
  with pytest.raises(ValueError, match="Checkpointer.best_mode"):
    open_checkpointer(best_mode="avg")
  with pytest.raises(ValueError, match="Checkpointer.best_metric"):
    open_checkpointer(best_metric="")
  checkpointer = open_checkpointer(best_metric="acc")
  state = _small_state(1.0)
  with pytest.raises(ValueError, match="lack best_metric 'acc'"):
    checkpointer.save(1, state, {"loss": 0.3})
  with pytest.raises(ValueError, match="convertible to float"):
    checkpointer.save(1, state, {"acc": "high"})
  with pytest.raises(ValueError, match="step must be >= 0"):
    checkpointer.save(-1, state)
  checkpointer.save(1, state, {"acc": np.float32(0.5)})
  with pytest.raises(ValueError, match=r"leaf \['x'\] must be a jax.ShapeDtypeStruct"):
    checkpointer.restore_latest(jax.eval_shape(lambda: state))
  with pytest.raises(ValueError, match=r"no checkpoint for step 2 .*saved steps: \[1\]"):
    checkpointer.restore(2, state)
  with pytest.raises(ValueError, match="shardings must have the structure"):
    abstract_with_sharding(jax.eval_shape(lambda: state), {"y": jax.devices()[0]})
