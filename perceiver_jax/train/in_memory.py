"""Training and evaluation on arrays in memory, with the launcher's compiled, sharded steps.

`InMemoryTrainer(config, workdir=None)` builds the experiment of a training config
(experiment.build_experiment: the model, optimizer, objective and jitted train / eval steps of
`python -m experiments.train`) and feeds it numpy batches instead of the TFDS pipeline:

  trainer = perceiver_jax.InMemoryTrainer(config)  # config: configs/X.py's get_config()
  trainer.init()                                    # fresh, or the workdir's newest checkpoint
  trainer.train_step({'image': x, 'label': y})      # x [batch_size, ...], y [batch_size]
  trainer.fit({'image': x, 'label': y}, num_steps=300, eval_data={...})
  trainer.evaluate({'image': x_test, 'label': y_test})  # {'loss': ..., 'accuracy': ...}

A batch is a dict of arrays with a leading batch dimension: the keys of `trainer.batch_spec`
(e.g. 'image' [b, *config.model.input_shape] and 'label' [b] for classification), plus an
optional 'mask' [b] (1: the example counts, 0: padding; all ones when absent). Wrong keys,
shapes, dtypes or labels raise a ValueError naming the key and the expected shape before
anything compiles. One process (a notebook or script); its devices form the mesh.
"""

import tempfile
from typing import Dict, List, Mapping, Optional, Tuple

import jax
import numpy as np

from perceiver_jax import tasks
from perceiver_jax.train import run_config
from perceiver_jax.train.experiment import build_experiment
from perceiver_jax.train.objectives import INPUT_KEYS
from perceiver_jax.train.sharding import global_batch

Spec = Dict[str, Tuple[Tuple[int, ...], np.dtype]]


def batch_spec(config) -> Spec:
  """{key: (shape of one example, dtype)} of the batches config.model's objective trains on."""
  model = config.model
  inputs = jax.eval_shape(lambda: tasks.example_inputs(model, 1))
  if model.task in INPUT_KEYS:
    return {INPUT_KEYS[model.task]: (tuple(inputs.shape[1:]), np.dtype(inputs.dtype)),
            "label": ((), np.dtype(np.int32))}
  if model.task == "masked_language_modeling":
    return {"ids": (tuple(inputs.shape[1:]), np.dtype(np.int32))}
  if model.task == "language_modeling":  # Rows of max_context + 1 ids: inputs and targets.
    return {"ids": ((inputs.shape[1] + 1,), np.dtype(np.int32))}
  raise ValueError(f"config.model.task={model.task!r} has no in-memory batch layout; the "
                   f"in-memory trainer takes {sorted(INPUT_KEYS)}, masked_language_modeling "
                   "and language_modeling.")


def _describe(spec: Spec, size) -> str:
  rows = [f"'{key}': {dtype.name} [{', '.join(map(str, (size,) + shape))}]"
          for key, (shape, dtype) in spec.items()]
  return "{" + ", ".join(rows) + "}" + f" (optional 'mask': float32 [{size}])"


def check_arrays(arrays: Mapping[str, np.ndarray], spec: Spec, size: Optional[int] = None,
                 size_name: str = "n", num_classes: Optional[int] = None) -> dict:
  """`arrays` as numpy arrays of the spec's dtypes with a float32 'mask' (ones when absent);
  ValueError naming the first key that is missing, unknown or of another shape or dtype (a
  leading dimension of `size`, or else the same for every key), or a label outside
  [0, num_classes)."""
  if not isinstance(arrays, Mapping):
    raise ValueError(f"a batch is a dict of arrays, {_describe(spec, size_name)}; got "
                     f"{type(arrays).__name__}.")
  allowed = set(spec) | {"mask"}
  for key in list(spec) + sorted(set(arrays) - allowed, key=str):
    if key not in arrays or key not in allowed:
      problem = "is missing" if key in spec else "is not a key the model takes"
      raise ValueError(f"batch key {key!r} {problem}; a batch is {_describe(spec, size_name)}.")
  out = {}
  for key in list(spec) + ["mask"]:
    if key not in arrays:
      continue
    shape, dtype = spec.get(key, ((), np.dtype(np.float32)))
    value = np.asarray(arrays[key])
    if size is None:
      size = value.shape[0] if value.ndim else None
    if value.shape != (size,) + shape:
      raise ValueError(f"batch[{key!r}] has shape {list(value.shape)}; expected "
                       f"[{', '.join(map(str, (size_name,) + shape))}] with {size_name}="
                       f"{size}: a batch is {_describe(spec, size_name)}.")
    if np.issubdtype(dtype, np.integer) and not np.issubdtype(value.dtype, np.integer):
      raise ValueError(f"batch[{key!r}] has dtype {value.dtype}; expected integers "
                       f"({dtype.name}).")
    if not np.issubdtype(value.dtype, np.number) and value.dtype != bool:
      raise ValueError(f"batch[{key!r}] has dtype {value.dtype}; expected {dtype.name}.")
    out[key] = value.astype(dtype, copy=False)
  if "mask" not in out:
    out["mask"] = np.ones((size,), np.float32)
  if num_classes is not None and "label" in out and out["label"].size:
    low, high = out["label"].min(), out["label"].max()
    if low < 0 or high >= num_classes:
      raise ValueError(f"batch['label'] holds {low if low < 0 else high}; labels are in "
                       f"[0, config.model.num_classes={num_classes}).")
  return out


def shuffled_indices(num_examples: int, batch_size: int, seed: int, step: int) -> np.ndarray:
  """The example indices of train step `step` (from 1): consecutive batches of a stream of
  epochs, each a permutation of range(num_examples) seeded by (seed, epoch); [batch_size]."""
  positions = (step - 1) * batch_size + np.arange(batch_size)
  epochs = positions // num_examples
  out = np.empty(batch_size, np.int64)
  for epoch in np.unique(epochs):
    order = np.random.default_rng([seed, int(epoch)]).permutation(num_examples)
    here = epochs == epoch
    out[here] = order[positions[here] % num_examples]
  return out


class InMemoryTrainer:
  """The experiment of a training config, trained and evaluated on numpy arrays.

  config: a training config (configs/X.py's get_config(), or configs/common.py's get_config()
    with `model` and `num_train_steps` set).
  workdir: where checkpoints (and the run's config.json) go; None: a temporary directory
    that `save` refuses (nothing is kept).
  devices: the mesh's devices (default all; see set_cpu_device_count for CPUs).
  """

  def __init__(self, config, workdir: Optional[str] = None, devices=None):
    if jax.process_count() > 1:
      raise ValueError("InMemoryTrainer runs in one process; a multi-process run trains with "
                       "python -m experiments.train.")
    self._temporary = None if workdir else tempfile.TemporaryDirectory(prefix="in_memory_")
    self.workdir = workdir
    self.experiment = build_experiment(config, workdir or self._temporary.name, devices)
    self.config = self.experiment.config
    self.batch_spec = batch_spec(self.config)  # {key: (shape of one example, dtype)}
    self.state, self.step = None, 0

  def init(self, step: Optional[int] = None) -> int:
    """Sets `state` to the workdir's checkpoint of `step` (default the newest), else a fresh
    one (config.init_from's weights when set); returns the state's step."""
    if self.workdir:
      run_config.record(self.config, self.workdir,
                        resuming=bool(self.experiment.checkpointer.all_steps()))
    self.state, self.step = self.experiment.restore_or_init(step)
    return self.step

  def _ready(self):
    if self.state is None:
      self.init()

  def _check(self, arrays, size=None, size_name="n") -> dict:
    return check_arrays(arrays, self.batch_spec, size, size_name,
                        self.config.model.get("num_classes"))

  def _train(self, batch) -> dict:
    self.state, metrics = self.experiment.train_step(
        self.state, global_batch(batch, self.experiment.mesh))
    self.step += 1
    return metrics

  def train_step(self, batch: Mapping[str, np.ndarray]) -> Dict[str, float]:
    """One update on `batch` ([config.batch_size, ...] per key, see batch_spec); returns its
    train metrics (loss, accuracy..., grad_norm, learning_rate)."""
    self._ready()
    metrics = jax.device_get(self._train(self._check(batch, self.config.batch_size,
                                                     "config.batch_size")))
    return {k: float(v) for k, v in metrics.items() if k != "weight"}

  def evaluate(self, data: Mapping[str, np.ndarray]) -> Dict[str, float]:
    """Metrics over every example of `data` ([n, ...] per key) once, as trainer.evaluate
    gives them: batches of config.eval_batch_size, the last padded with mask 0."""
    self._ready()
    data = self._check(data)
    size, total = self.config.eval_batch_size, len(data["mask"])
    if total == 0:
      raise ValueError("evaluate: the data has no examples.")
    totals = None
    for start in range(0, total, size):
      batch = {k: v[start:start + size] for k, v in data.items()}
      pad = size - len(batch["mask"])
      if pad:
        batch = {k: np.concatenate([v, np.zeros((pad,) + v.shape[1:], v.dtype)])
                 for k, v in batch.items()}
      sums = self.experiment.eval_step(self.state, global_batch(batch, self.experiment.mesh))
      totals = sums if totals is None else jax.tree_util.tree_map(np.add, totals, sums)
    totals = jax.device_get(totals)
    weight = max(float(totals.pop("weight")), 1e-8)
    return {name: float(value) / weight for name, value in totals.items()}

  def fit(self, data: Mapping[str, np.ndarray], num_steps: Optional[int] = None,
          eval_data: Optional[Mapping[str, np.ndarray]] = None) -> List[dict]:
    """Trains `num_steps` steps (default: up to config.num_train_steps) on batches of `data`
    ([n, ...] per key) in a shuffled order seeded by config.seed (a function of the step:
    resuming continues it). Every config.log_every_steps and at the end it records the step's
    train metrics, every config.eval_every_steps and at the end `evaluate(eval_data)` when
    given; with a workdir it saves every config.checkpoint_every_steps and at the end.
    Returns the records, {'step', 'split': 'train' | 'eval', **metrics} (as metrics.jsonl;
    experiments.plots.plot_learning_curves draws them)."""
    self._ready()
    config = self.config
    data = self._check(data)
    if eval_data is not None:
      eval_data = self._check(eval_data)
    num_steps = config.num_train_steps - self.step if num_steps is None else num_steps
    if self.step + num_steps > config.num_train_steps:
      raise ValueError(f"fit: step {self.step} + num_steps={num_steps} passes "
                       f"config.num_train_steps={config.num_train_steps}, where the learning "
                       "rate schedule ends; raise config.num_train_steps.")
    total = len(data["mask"])
    if total == 0:
      raise ValueError("fit: the data has no examples.")
    records, last = [], self.step + num_steps
    for step in range(self.step + 1, last + 1):
      indices = shuffled_indices(total, config.batch_size, config.seed, step)
      metrics = self._train({k: v[indices] for k, v in data.items()})
      if step % config.log_every_steps == 0 or step == last:
        train = jax.device_get(metrics)
        records.append(dict(step=step, split="train",
                            **{k: float(v) for k, v in train.items() if k != "weight"}))
      eval_now = step % config.eval_every_steps == 0 or step == last
      if eval_data is not None and eval_now:
        records.append(dict(step=step, split="eval", **self.evaluate(eval_data)))
      if self.workdir and (step % config.checkpoint_every_steps == 0 or step == last):
        self.save(records[-1] if eval_now and eval_data is not None else None)
    return records

  def save(self, metrics: Optional[Mapping[str, float]] = None):
    """Checkpoints the state at its step into workdir/checkpoints (with eval `metrics`, for
    config.checkpoint.best_metric); waits for the write."""
    if not self.workdir:
      raise ValueError("InMemoryTrainer(config) has no workdir: pass workdir= to keep "
                       "checkpoints.")
    self._ready()
    metrics = {k: v for k, v in (metrics or {}).items() if k not in ("step", "split")}
    checkpointer = self.experiment.checkpointer
    checkpointer.save(self.step, self.state, metrics or None,
                      force=(checkpointer.latest_step() or 0) >= self.step)
    checkpointer.wait()

  def close(self):
    """Finishes pending checkpoint writes and removes the temporary workdir."""
    self.experiment.checkpointer.close()
    if self._temporary is not None:
      self._temporary.cleanup()
