"""The training loop: build from a config, resume, train, evaluate, checkpoint.

`train_and_evaluate(config, workdir)` runs config.num_train_steps steps of the jitted,
sharded train step (train_step.py) on batches from the TFDS pipeline (input_pipeline.py):
- writes the run's config to workdir/config.json (run_config.py; the eval, plot and sample
  launchers read it); a workdir holding checkpoints of a model with other settings stops
  with an error naming the fields;
- resumes from the newest readable checkpoint in `workdir/checkpoints` when there is one;
  the data position and every random draw are functions of (seed, step), so a run killed
  at any point and restarted ends with the parameters an uninterrupted run reaches;
- logs train metrics every log_every_steps (loss, accuracy, grad_norm, learning_rate,
  examples_per_second, step_time: of the window's train steps, evaluation and saving left
  out) and evaluates every eval_every_steps (language modelling adds `tokens_per_second`,
  scored tokens per second of evaluation: `_throughput`), to metrics.jsonl, TensorBoard and
  a progress bar (metric_writer.py); train metrics are fetched one step late so the host
  never waits for the device; after a resume the replayed steps' records replace the old ones;
- saves every checkpoint_every_steps (async, keep-N plus the best by config.checkpoint.
  best_metric) and at the end;
- on preemption (SIGTERM) saves a checkpoint and returns: in a jax.distributed run jax's
  preemption service tells every process, which all save the same step (one past the furthest
  any had reached when the signal came: orbax's reached_preemption); a single process saves
  the step after the signal. A restart resumes from that step;
- stops with FloatingPointError when the loss or gradient norm turns NaN/Inf, or the state
  to be saved does, and names the newest checkpoint that resumes (see "Divergence").
`evaluate_checkpoint(config, workdir, step=None)` evaluates a saved state (the newest readable
one by default).
Both hold the workdir's lock (workdir_lock.py): a second run into a workdir in use stops with
an error naming the live process; a lock left by a killed run does not block its resume.

Divergence: a state is saved only when its parameters and optimizer state are finite (one
jitted reduction on device, at save steps only). Finite is not enough: a too-high learning
rate leaves finite parameters (|sum| ~ 1e12) on which the next step's loss is NaN, so resuming
there diverges again whatever the learning rate. Step s+1's loss and gradient norm are a
function of state s and the batch of step s+1 alone, so a state is verified by the next
step's metrics, which the loop checks anyway (one step late, with no extra host round trip).
When step d's metrics are not finite, the checkpoints of steps >= d - 1 (saved, not yet
verified) are deleted, and the error names the newest remaining one, g: resumed, with any
learning rate, step g + 1 recomputes the finite loss and gradient norm it had. A run killed
before verifying its newest save verifies it when it resumes. With checkpoint.keep >= 2
(configs/common.py) a verified step survives a deleted one.

Fine-tuning: with `config.init_from` = a pretrained model directory (`perceiver_jax.convert.pretrained`,
e.g. written by `python -m perceiver_jax.convert`), the model takes the pretrained architecture
(`pretrained.inherit_model_config`) and a fresh run starts from its weights (a resumed run
from its own checkpoint); what was loaded is logged and written to workdir/init_from.json.
"""

import functools
import os
import signal
import time
from typing import Dict, Optional

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from perceiver_jax.data import input_pipeline
from perceiver_jax.train import run_config
from perceiver_jax.train.checkpointing import Checkpointer
from perceiver_jax.train.experiment import Experiment, build_experiment, check_batch
from perceiver_jax.train.metric_writer import MetricWriter
from perceiver_jax.train.sharding import global_batch, replicated
from perceiver_jax.train.workdir_lock import WorkdirLock


def evaluate(experiment: Experiment, state) -> Dict[str, float]:
  """Metrics over the whole eval split (each example once); for language_modeling also
  `tokens_per_second`: scored tokens per second of eval steps (see `_throughput`)."""
  config = experiment.config
  totals, first_weight, started, clock = None, 0.0, time.perf_counter(), None
  for batch in _checked(iter(input_pipeline.make_eval_iterator(
      config.data, global_batch_size=config.eval_batch_size,
      num_classes=config.model.get("num_classes"))), config):
    sums = experiment.eval_step(state, global_batch(batch, experiment.mesh))
    totals = sums if totals is None else jax.tree_util.tree_map(np.add, totals, sums)
    if clock is None:  # The first batch compiles the step (in a run's first evaluation).
      first_weight, clock = float(jax.device_get(sums["weight"])), time.perf_counter()
  totals = jax.device_get(totals)
  total_weight = float(totals.pop("weight"))
  weight = max(total_weight, 1e-8)
  metrics = {name: float(value) / weight for name, value in totals.items()}
  if config.model.task == "language_modeling":
    metrics["tokens_per_second"] = _throughput(total_weight, first_weight, started, clock)
  return metrics


def _throughput(weight: float, first_weight: float, started: float, first_done: float) -> float:
  """Scored tokens per second of evaluation, input pipeline included. With several batches
  the first is left out (its step compiles in a run's first evaluation): the tokens of the
  others over the time from the end of the first to the end of the last; with one batch,
  its tokens over the whole time."""
  now = time.perf_counter()
  if weight > first_weight:
    return (weight - first_weight) / max(now - first_done, 1e-9)
  return weight / max(now - started, 1e-9)


def _checked(batches, config):
  """`batches`, the first checked against the model (experiment.check_batch) before any
  step compiles."""
  first = next(batches, None)
  if first is not None:
    check_batch(config, first)
    yield first
    yield from batches


def _state_finite(state) -> jax.Array:
  """Whether every float of the parameters, optimizer state and batch stats is finite."""
  leaves = [jnp.isfinite(x).all() for x in jax.tree.leaves(
      (state.params, state.opt_state, state.batch_stats)) if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.stack(leaves).all() if leaves else jnp.array(True)


def _diverged(step: int, problem: str, first_bad_state: int, checkpointer: Checkpointer):
  """Deletes the checkpoints of states >= first_bad_state and raises FloatingPointError."""
  checkpointer.wait()
  bad = [s for s in checkpointer.all_steps() if s >= first_bad_state]
  for s in bad:
    checkpointer.delete(s)
  good = checkpointer.latest_step()
  resume = (f"resuming restarts from step {good}, whose next step's loss was finite" if good
            is not None else "no verified checkpoint is left, so resuming starts afresh")
  deleted = f" deleted the unverified checkpoints {bad};" if bad else ""
  raise FloatingPointError(
      f"training diverged at step {step}: {problem};{deleted} {resume}. Lower "
      "config.optimizer.learning_rate, set config.optimizer.clip_norm, or use float32 compute "
      "(config.model.dtype).")


def _check_finite(step: int, metrics, checkpointer: Checkpointer):
  bad = {k: float(metrics[k]) for k in ("loss", "grad_norm") if not np.isfinite(metrics[k])}
  if bad:  # Step `step`'s metrics are those of state step - 1.
    _diverged(step, str(bad), step - 1, checkpointer)


class _Preemption:
  """Whether to save and stop at a step because a preemption notice (SIGTERM) arrived.

  In a jax.distributed run (with jax's preemption service, on by default) jax's own SIGTERM
  handler tells every process, and the checkpointer's reached_preemption(step) is True on all
  of them at the same step, one past the furthest any had reached. A single process records
  the signal in a handler of its own and stops at the next step.
  """

  def __init__(self, checkpointer: Checkpointer):
    self._checkpointer = checkpointer
    self._synced = jax.distributed.is_initialized() and jax.config.jax_enable_preemption_service
    self._signalled = False
    if not self._synced:
      self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del signum, frame
    self._signalled = True

  def reached(self, step: int) -> bool:
    """Whether to save `step` and stop; call it at every step."""
    if self._synced:
      return self._checkpointer.reached_preemption(step)
    return self._signalled

  def restore(self):
    if not self._synced:
      signal.signal(signal.SIGTERM, self._previous or signal.SIG_DFL)


def _one_run_per_workdir(function):
  """`function(config, workdir, ...)`, run holding the workdir's lock."""
  @functools.wraps(function)
  def locked(config, workdir: str, *args, **kwargs):
    with WorkdirLock(workdir):
      return function(config, workdir, *args, **kwargs)
  return locked


@_one_run_per_workdir
def train_and_evaluate(config, workdir: str) -> Dict[str, float]:
  """Trains (resuming if possible); returns the last evaluation's metrics."""
  experiment = build_experiment(config, workdir)
  run_config.record(experiment.config, workdir,
                    resuming=bool(experiment.checkpointer.all_steps()))
  state, start = experiment.restore_or_init()
  if start >= config.num_train_steps:
    logging.warning("%s already holds the final step %d; nothing to train (evaluate it with "
                    "experiments.eval, or raise config.num_train_steps).", workdir, start)
  writer = MetricWriter(workdir, config.num_train_steps, start, resume=True)
  batches = input_pipeline.make_train_iterator(config.data, global_batch_size=config.batch_size,
                                               seed=config.seed, start_step=start,
                                               cache_dir=workdir,
                                               num_classes=experiment.config.model.get(
                                                   "num_classes"))
  batches = _checked(batches, experiment.config)
  checkpointer = experiment.checkpointer
  preemption = _Preemption(checkpointer)
  state_finite = jax.jit(_state_finite, out_shardings=replicated(experiment.mesh))
  eval_metrics, previous = {}, None
  window_start, window_steps = time.time(), 0
  try:
    for step in range(start + 1, config.num_train_steps + 1):
      batch = global_batch(next(batches), experiment.mesh)
      state, metrics = experiment.train_step(state, batch)
      window_steps += 1
      if previous is not None:  # The previous step's metrics are ready by now.
        _check_finite(step - 1, jax.device_get(previous), checkpointer)
      previous = metrics
      last = step == config.num_train_steps
      preempted = preemption.reached(step)  # Read once: SIGTERM may arrive at any moment.
      log_now = step % config.log_every_steps == 0 or last
      eval_now = step % config.eval_every_steps == 0 or last
      save_now = step % config.checkpoint_every_steps == 0 or last or preempted
      if log_now or save_now:
        fetched = jax.device_get(metrics)
        _check_finite(step, fetched, checkpointer)
      if log_now:
        elapsed = time.time() - window_start
        train = {k: v for k, v in fetched.items() if k != "weight"}
        train.update(step_time=elapsed / window_steps,
                     examples_per_second=window_steps * config.batch_size / elapsed)
        writer.write(step, "train", train)
        writer.progress(step, {"loss": train["loss"]})
        window_start, window_steps = time.time(), 0
      paused = time.time()  # Evaluation and saving are not train time: out of the window.
      if save_now and not jax.device_get(state_finite(state)):
        _diverged(step, "the parameters or optimizer state are not finite", step, checkpointer)
      if eval_now:
        eval_metrics = evaluate(experiment, state)
        writer.write(step, "eval", eval_metrics)
      if save_now:
        # A step at or below the newest on disk is only there after a fallback past an
        # unreadable checkpoint: replace those.
        stale = (checkpointer.latest_step() or 0) >= step
        checkpointer.save(step, state, eval_metrics if eval_now else None, force=stale)
      window_start += time.time() - paused
      if preempted:
        logging.warning("SIGTERM (preemption): saved the checkpoint at step %d and stopped.",
                        step)
        break
  finally:
    preemption.restore()
    checkpointer.wait()
    writer.close()
  return eval_metrics


@_one_run_per_workdir
def evaluate_checkpoint(config, workdir: str, step: Optional[int] = None) -> Dict[str, float]:
  """Evaluates the given (or newest readable) checkpoint, or with none the config.init_from
  model (as step 0); the result replaces metrics.jsonl's eval record of that step."""
  experiment = build_experiment(config, workdir)
  if step is None and experiment.checkpointer.latest_step() is None and not config.init_from:
    raise ValueError(f"no checkpoint in {os.path.join(workdir, 'checkpoints')} to evaluate "
                     "(set config.init_from to evaluate a pretrained model).")
  state, step = experiment.restore_or_init(step)
  metrics = evaluate(experiment, state)
  writer = MetricWriter(workdir, None)
  writer.replace(step, "eval", metrics)
  writer.close()
  experiment.checkpointer.close()
  return metrics
