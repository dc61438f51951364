"""The training loop: build from a config, resume, train, evaluate, checkpoint.

`train_and_evaluate(config, workdir)` runs config.num_train_steps steps of the jitted,
sharded train step (train_step.py) on batches from the TFDS pipeline (input_pipeline.py):
- resumes from the newest readable checkpoint in `workdir/checkpoints` when there is one;
  the data position and every random draw are functions of (seed, step), so a run killed
  at any point and restarted ends with the parameters an uninterrupted run reaches;
- logs train metrics every log_every_steps (loss, accuracy, grad_norm, learning_rate,
  examples_per_second, step_time) and evaluates every eval_every_steps, to metrics.jsonl,
  TensorBoard and a progress bar (metric_writer.py); train metrics are fetched one step late
  so the host never waits for the device;
- saves every checkpoint_every_steps (async, keep-N plus the best by config.checkpoint.
  best_metric), at the end, and when SIGTERM arrives (preemption), then exits cleanly;
- stops with FloatingPointError when the loss or gradient norm turns NaN/Inf, keeping the
  last good checkpoint (a state is checked before it is saved).
`evaluate_checkpoint(config, workdir, step=None)` evaluates a saved state.

Fine-tuning: with `config.init_from` = a pretrained model directory (`perceiver_jax.pretrained`,
e.g. written by `python -m perceiver_jax.convert`), the model takes the pretrained architecture
(`pretrained.inherit_model_config`) and a fresh run starts from its weights (a resumed run
from its own checkpoint); what was loaded is logged and written to workdir/init_from.json.
"""

import dataclasses
import functools
import json
import os
import signal
import time
from typing import Dict, Optional

from absl import logging
import jax
import numpy as np

from perceiver_jax import input_pipeline, optim, pretrained, tasks
from perceiver_jax.checkpointing import Checkpointer
from perceiver_jax.metric_writer import MetricWriter
from perceiver_jax.objectives import make_objective
from perceiver_jax.sharding import global_batch, make_mesh
from perceiver_jax.train_step import init_state, jit_steps, make_eval_step, make_train_step

REQUIRED = ("seed", "batch_size", "num_train_steps", "eval_every_steps", "checkpoint_every_steps",
            "log_every_steps", "model", "data", "optimizer", "mesh", "checkpoint")


def sharded_batch_sizes(config) -> tuple:
  """(train micro-batch = batch_size / grad_accum_steps, eval_batch_size): the global batches
  a step splits over the devices, so the device count must divide both."""
  return (config.batch_size // config.get("grad_accum_steps", 1),
          config.get("eval_batch_size", config.batch_size))


def validate_config(config, num_devices: int):
  """Raises ValueError naming the first missing or bad top-level field."""
  for key in REQUIRED:
    if key not in config:
      raise ValueError(f"config.{key} is missing; every training config sets {REQUIRED}.")
  for key in ("batch_size", "num_train_steps", "eval_every_steps", "checkpoint_every_steps",
              "log_every_steps"):
    if not isinstance(config[key], int) or config[key] < 1:
      raise ValueError(f"config.{key} must be an int >= 1, got {config[key]!r}.")
  accum = config.get("grad_accum_steps", 1)
  if accum < 1 or config.batch_size % accum:
    raise ValueError(f"config.grad_accum_steps={accum} must be >= 1 and divide "
                     f"config.batch_size={config.batch_size}.")
  devices = num_devices
  micro_batch, eval_batch = sharded_batch_sizes(config)
  if micro_batch % devices:
    raise ValueError(f"config.batch_size / grad_accum_steps = {micro_batch} must "
                     f"be divisible by the {devices} devices.")
  if eval_batch % devices:
    raise ValueError(f"config.eval_batch_size must be divisible by the {devices} devices.")
  if config.get("init_from"):
    pretrained.check_directory(config.init_from, "config.init_from")


@dataclasses.dataclass
class Experiment:
  """Everything built from a config: model, steps, shardings and checkpointer."""
  config: object
  mesh: object
  model: object
  init: object
  train_step: object
  eval_step: object
  abstract_state: object
  checkpointer: Checkpointer
  workdir: str
  init_modules: Optional[tuple] = None  # Modules loaded from config.init_from; None: all.

  def restore_or_init(self, step: Optional[int] = None):
    """(state, step): the given or newest readable checkpoint, else a fresh state at step 0
    (with the weights of config.init_from when set)."""
    if step is not None:
      return self.checkpointer.restore(step, self.abstract_state), step
    restored = self.checkpointer.restore_latest(self.abstract_state)
    if restored is not None:
      step, state = restored
      logging.info("Resumed from the checkpoint at step %d.", step)
      return state, step
    state = self.init()
    if self.config.get("init_from"):
      state = self._load_pretrained(state)
    return state, 0

  def _load_pretrained(self, state):
    source = self.config.init_from
    fresh = {"params": state["params"], "batch_stats": state["batch_stats"]}
    variables, report = pretrained.overlay(fresh, pretrained.load_variables(source),
                                           self.init_modules)
    logging.info("Initialised %d arrays from %s; %d stay freshly initialised (%d of them "
                 "because their shapes differ), %d pretrained arrays unused.",
                 len(report["loaded"]), source, len(report["fresh"]) + len(report["mismatched"]),
                 len(report["mismatched"]), len(report["unused"]))
    if jax.process_index() == 0:
      os.makedirs(self.workdir, exist_ok=True)
      with open(os.path.join(self.workdir, "init_from.json"), "w") as f:
        json.dump(dict(report, init_from=source), f, indent=1)
    return dict(state, **variables)


def build_experiment(config, workdir: str, devices=None) -> Experiment:
  """Builds the model, optimizer, jitted steps and checkpointer that `config` describes
  (over `devices`, by default every device of every process)."""
  devices = jax.devices() if devices is None else devices
  validate_config(config, len(devices))
  init_modules = None
  if config.get("init_from"):
    config = config.copy_and_resolve_references()
    config.model, init_modules = pretrained.inherit_model_config(
        config.model, pretrained.load_model_config(config.init_from))
  mesh = make_mesh(config.mesh.data, config.mesh.fsdp, devices)
  model = tasks.build(config.model)
  tx, schedule = optim.make_optimizer(config.optimizer, config.num_train_steps)
  objective = make_objective(config)
  init = functools.partial(init_state, model, tx, tasks.example_inputs(config.model, 1),
                           config.seed)
  abstract = jax.eval_shape(init)
  train_step, eval_step, shardings = jit_steps(
      make_train_step(model, tx, objective, schedule, config.get("grad_accum_steps", 1)),
      make_eval_step(model, objective), mesh, abstract, fsdp=config.mesh.fsdp > 1,
      min_fsdp_size=config.mesh.get("min_fsdp_size", 2 ** 10))
  abstract = jax.tree_util.tree_map(
      lambda s, sharding: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
      abstract, shardings)
  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.checkpoint.keep,
                              best_metric=config.checkpoint.get("best_metric"),
                              best_mode=config.checkpoint.get("best_mode", "max"),
                              async_save=config.checkpoint.get("async_save", True))
  return Experiment(config, mesh, model, jax.jit(init, out_shardings=shardings), train_step,
                    eval_step, abstract, checkpointer, workdir, init_modules)


def evaluate(experiment: Experiment, state) -> Dict[str, float]:
  """Metrics over the whole eval split (each example once)."""
  config = experiment.config
  totals = None
  for batch in input_pipeline.make_eval_iterator(
      config.data, global_batch_size=config.get("eval_batch_size", config.batch_size)):
    sums = experiment.eval_step(state, global_batch(batch, experiment.mesh))
    totals = sums if totals is None else jax.tree_util.tree_map(np.add, totals, sums)
  totals = jax.device_get(totals)
  weight = max(float(totals.pop("weight")), 1e-8)
  return {name: float(value) / weight for name, value in totals.items()}


def _check_finite(step: int, metrics, checkpointer: Checkpointer):
  bad = {k: float(metrics[k]) for k in ("loss", "grad_norm") if not np.isfinite(metrics[k])}
  if bad:
    checkpointer.wait()
    raise FloatingPointError(
        f"training diverged at step {step}: {bad}. Nothing after the last good checkpoint "
        f"(step {checkpointer.latest_step()}) was saved; lower config.optimizer.learning_rate, "
        "set config.optimizer.clip_norm, or use float32 compute (config.model.dtype).")


class _Preemption:
  """Records SIGTERM so the loop can save and stop at the next step boundary."""

  def __init__(self):
    self.requested = False
    self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def restore(self):
    signal.signal(signal.SIGTERM, self._previous)


def train_and_evaluate(config, workdir: str) -> Dict[str, float]:
  """Trains (resuming if possible); returns the last evaluation's metrics."""
  experiment = build_experiment(config, workdir)
  state, start = experiment.restore_or_init()
  if start >= config.num_train_steps:
    logging.warning("%s already holds the final step %d; nothing to train (evaluate it with "
                    "experiments.eval, or raise config.num_train_steps).", workdir, start)
  writer = MetricWriter(workdir, config.num_train_steps, start)
  batches = input_pipeline.make_train_iterator(config.data, global_batch_size=config.batch_size,
                                               seed=config.seed, start_step=start)
  preemption = _Preemption()
  checkpointer = experiment.checkpointer
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
      preempted = preemption.requested  # Read once: SIGTERM may arrive at any moment.
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
      if eval_now:
        eval_metrics = evaluate(experiment, state)
        writer.write(step, "eval", eval_metrics)
      if save_now:
        # A step at or below the newest on disk is only there after a fallback past an
        # unreadable checkpoint: replace those.
        stale = (checkpointer.latest_step() or 0) >= step
        checkpointer.save(step, state, eval_metrics if eval_now else None, force=stale)
      if preempted:
        logging.warning("SIGTERM: saved the checkpoint at step %d and stopped.", step)
        break
  finally:
    preemption.restore()
    checkpointer.wait()
    writer.close()
  return eval_metrics


def evaluate_checkpoint(config, workdir: str, step: Optional[int] = None) -> Dict[str, float]:
  """Evaluates the given (or newest) checkpoint, or with none the config.init_from model
  (as step 0); appends the result to metrics.jsonl."""
  experiment = build_experiment(config, workdir)
  if step is None:
    step = experiment.checkpointer.latest_step()
    if step is None and not config.get("init_from"):
      raise ValueError(f"no checkpoint in {os.path.join(workdir, 'checkpoints')} to evaluate "
                       "(set config.init_from to evaluate a pretrained model).")
  state, step = experiment.restore_or_init(step)
  metrics = evaluate(experiment, state)
  writer = MetricWriter(workdir, config.num_train_steps, step)
  writer.write(step, "eval", metrics)
  writer.close()
  experiment.checkpointer.close()
  return metrics
