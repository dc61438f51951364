"""An experiment built from a training config: model, optimizer, jitted sharded steps, checkpointer.

`build_experiment(config, workdir)` checks the config's top-level fields (`validate_config`),
builds the model (`tasks.build`), optimizer and objective, jits the train and eval steps over a
device mesh (train_step.py) and opens the checkpointer; `check_batch(config, batch)` checks a data batch against the model before
anything compiles; `Experiment.restore_or_init` gives the
newest checkpoint's state or a fresh one (with `config.init_from`'s weights; an array whose
shape differs from the checkpoint's stops it unless `config.init_fresh` names it). Nothing here
reads data: the training loop (trainer.py), the benchmark and the eval / sample / plot
launchers share it.
"""

import dataclasses
import functools
import json
import math
import numbers
import os
from typing import Optional, Tuple

from absl import logging
from flax import traverse_util
import jax

from perceiver_jax import tasks
from perceiver_jax.data import data_config
from perceiver_jax.train import optim
from perceiver_jax.convert import pretrained
from perceiver_jax.train.checkpointing import Checkpointer
from perceiver_jax.train.objectives import make_objective
from perceiver_jax.train.sharding import make_mesh
from perceiver_jax.train.train_state import TrainState, init_state
from perceiver_jax.train.train_step import jit_steps, make_eval_step, make_train_step

# The fields every training config sets (configs/common.py has them all but `model` and
# `num_train_steps`); a dotted name is a field of a section.
REQUIRED = ("seed", "init_from", "init_fresh", "batch_size", "eval_batch_size", "grad_accum_steps",
            "num_train_steps", "log_every_steps", "eval_every_steps", "checkpoint_every_steps",
            "model", "data", "optimizer", "mesh.data", "mesh.fsdp", "mesh.min_fsdp_size",
            "checkpoint.keep", "checkpoint.best_metric", "checkpoint.best_mode",
            "checkpoint.async_save", "label_smoothing", "mixup.mixup_alpha", "mixup.cutmix_alpha",
            "mixup.switch_prob", "mlm.mask_prob", "z_loss", "lm.minimum_crop_length",
            "autoencoding.image_points", "autoencoding.audio_patches", "flow.train_points")
# The data tasks (config.data.task) whose batches each model task (config.model.task) reads.
DATA_TASKS = {"perceiver_classification": ("image_classification", "array"),
              "image_classification": ("image_classification",),
              "masked_language_modeling": ("text_mlm",), "language_modeling": ("text_mlm",),
              "sequence_classification": ("text_classification",),
              "point_cloud_classification": ("point_cloud",), "audio_classification": ("audio",),
              "optical_flow": ("optical_flow",), "multimodal_autoencoding": ("multimodal",)}
# The model fields that set each task's input shape, named when a batch does not fit them.
INPUT_SHAPE_FIELDS = {
    "perceiver_classification": "config.model.input_shape",
    "image_classification": "config.model.image_shape",
    "masked_language_modeling": "config.model.max_seq_len",
    "sequence_classification": "config.model.max_seq_len",
    "language_modeling": "config.model.perceiver_ar.max_context",
    "point_cloud_classification": "config.model.num_points and num_point_channels",
    "audio_classification": "config.model.num_samples",
    "optical_flow": "config.model.image_size",
    "multimodal_autoencoding": ("config.model.num_frames, image_size, audio_samples_per_frame "
                                "and num_classes")}
# Model fields holding an input shape (no batch dimension).
SHAPE_FIELDS = ("input_shape", "image_shape")
# The config field that sets the shape of the arrays under a module path (no collection),
# named when config.init_from's array of that path has another shape.
SHAPE_SOURCES = {"decoder/output": "config.model.num_classes",
                 "decoder/logits": "config.model.num_classes",
                 "input_adapter/position_embeddings": "config.model.max_seq_len",
                 "input_adapter/position_encoding": "config.model.image_shape"}


def sharded_batch_sizes(config) -> tuple:
  """(train micro-batch = batch_size / grad_accum_steps, eval_batch_size): the global batches
  a step splits over the devices, so the device count must divide both."""
  return config.batch_size // config.grad_accum_steps, config.eval_batch_size


def _has(config, path: str) -> bool:
  *sections, field = path.split(".")
  for section in sections:
    if section not in config:
      return False
    config = config[section]
  return field in config


def validate_config(config, num_devices: Optional[int] = None):
  """Raises ValueError naming the first missing or bad field (and, given `num_devices`, a
  batch they do not divide)."""
  for path in REQUIRED:
    if not _has(config, path):
      raise ValueError(f"config.{path} is missing; a training config sets every field of "
                       "experiment.REQUIRED (configs/common.py's get_config() has the defaults).")
  for key in ("batch_size", "eval_batch_size", "num_train_steps", "eval_every_steps",
              "checkpoint_every_steps", "log_every_steps", "grad_accum_steps"):
    if not isinstance(config[key], int) or config[key] < 1:
      raise ValueError(f"config.{key} must be an int >= 1, got {config[key]!r}.")
  accum = config.grad_accum_steps
  if config.batch_size % accum:
    raise ValueError(f"config.grad_accum_steps={accum} must divide "
                     f"config.batch_size={config.batch_size}.")
  data_config.check_config(config.data)
  optim.check_config(config.optimizer, config.num_train_steps)
  _check_values(config)
  if num_devices is not None:
    micro_batch, eval_batch = sharded_batch_sizes(config)
    if micro_batch % num_devices:
      raise ValueError(f"config.batch_size / grad_accum_steps = {micro_batch} must "
                       f"be divisible by the {num_devices} devices.")
    if eval_batch % num_devices:
      raise ValueError(f"config.eval_batch_size must be divisible by the {num_devices} devices.")
  if config.init_from:
    pretrained.check_directory(config.init_from, "config.init_from")


def _is_int(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_values(config):
  """ValueError naming the first training or model field whose value cannot work."""
  smoothing = config.label_smoothing
  if (isinstance(smoothing, bool) or not isinstance(smoothing, numbers.Real)
      or math.isnan(smoothing) or not 0 <= smoothing < 1):
    raise ValueError(f"config.label_smoothing must be in [0, 1) (0: off), got {smoothing!r}.")
  for key in SHAPE_FIELDS:
    shape = config.model.get(key)
    if key in config.model and (not isinstance(shape, (tuple, list)) or not shape
                                or not all(_is_int(n) and n >= 1 for n in shape)):
      raise ValueError(f"config.model.{key} must be a tuple of ints >= 1, e.g. (224, 224, 3); "
                       f"got {shape!r}.")
  fresh = config.init_fresh
  if not isinstance(fresh, (tuple, list)) or not all(isinstance(p, str) and p for p in fresh):
    raise ValueError("config.init_fresh must be a tuple of module paths, e.g. "
                     f"('decoder/output',); got {fresh!r}.")
  if config.model.task != "language_modeling":
    for path, value in (("lm.minimum_crop_length", config.lm.minimum_crop_length),
                        ("data.eval_block_size", config.data.eval_block_size)):
      if value:
        raise ValueError(f"config.{path}={value!r} applies to language_modeling only; set it "
                         f"to 0 for config.model.task={config.model.task!r}.")
  readable = DATA_TASKS.get(config.model.task, ())
  if config.data.task not in readable:
    raise ValueError(f"config.data.task={config.data.task!r} does not feed "
                     f"config.model.task={config.model.task!r}, which reads data.task "
                     f"{' or '.join(map(repr, readable))}: set one of them to match the other.")
  best, reported = config.checkpoint.best_metric, make_objective(config).metrics
  if best is not None and best not in reported:
    raise ValueError(f"config.checkpoint.best_metric={best!r} is not a metric the "
                     f"{config.model.task} task reports; set it to one of {reported} "
                     "(or None: keep only the newest checkpoints).")


@dataclasses.dataclass
class Experiment:
  """Everything built from a config: model, steps, shardings and checkpointer."""
  config: object
  mesh: object
  model: object
  init: object
  train_step: object
  eval_step: object
  abstract_state: TrainState  # Of jax.ShapeDtypeStructs with their shardings.
  checkpointer: Checkpointer
  workdir: str
  init_modules: Optional[tuple] = None  # Modules loaded from config.init_from; None: all.

  def restore_or_init(self, step: Optional[int] = None) -> Tuple[TrainState, int]:
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
    if self.config.init_from:
      state = self._load_pretrained(state)
    return state, 0

  def _load_pretrained(self, state: TrainState) -> TrainState:
    source = self.config.init_from
    loaded = pretrained.load_variables(source)
    variables, report = pretrained.overlay(state.variables, loaded, self.init_modules)
    _check_mismatched(self.config, report["mismatched"], state.variables, loaded)
    logging.info("Initialised %d arrays from %s; %d stay freshly initialised (%d of them "
                 "because their shapes differ), %d pretrained arrays unused.",
                 len(report["loaded"]), source, len(report["fresh"]) + len(report["mismatched"]),
                 len(report["mismatched"]), len(report["unused"]))
    if jax.process_index() == 0:
      os.makedirs(self.workdir, exist_ok=True)
      with open(os.path.join(self.workdir, "init_from.json"), "w") as f:
        json.dump(dict(report, init_from=source), f, indent=1)
    return state.replace(**variables)


def check_batch(config, batch) -> None:
  """Raises ValueError, before anything compiles, when a per-process batch (dict of arrays
  [b, ...]) lacks a key the objective reads or gives the model inputs of other shapes than
  `config.model` declares; the message names the model's shape fields and the data's."""
  objective = make_objective(config)
  data = config.data
  source = (f"config.data.name={data.name!r} (config.data.task={data.task!r})")
  try:
    inputs = jax.eval_shape(lambda b: objective.prepare(b, jax.random.PRNGKey(0), True)[0],
                            dict(batch))
  except KeyError as error:
    raise ValueError(f"the batches of {source} have keys {sorted(batch)} but "
                     f"config.model.task={config.model.task!r} reads {error}: the data task "
                     "does not produce the model's input.") from None
  size = next(iter(batch.values())).shape[0]
  expected = jax.eval_shape(lambda: tasks.example_inputs(config.model, size))
  got = {jax.tree_util.keystr(p): x.shape[1:]
         for p, x in jax.tree_util.tree_leaves_with_path(inputs)}
  want = {jax.tree_util.keystr(p): x.shape[1:]
          for p, x in jax.tree_util.tree_leaves_with_path(expected)}
  if got != want:
    shapes = lambda d: ", ".join(f"{k or 'inputs'} {tuple(v)}" for k, v in sorted(d.items()))
    raise ValueError(
        f"{source} gives the model inputs of shape {shapes(got)} (no batch dim), but "
        f"{INPUT_SHAPE_FIELDS.get(config.model.task, 'config.model')} declare(s) "
        f"{shapes(want)}: set the model's fields to the data's shapes, or the data's "
        "(e.g. config.data.image_size, config.data.max_seq_len) to the model's.")


def _under(path: str, prefix: str) -> bool:
  return path == prefix or path.startswith(prefix + "/")


def _check_mismatched(config, mismatched, fresh: dict, loaded: dict):
  """Warns of each array (collection/module/.../name) left fresh because its shape differs from
  config.init_from's, naming the field that sets it; ValueError unless config.init_fresh holds
  the module of each."""
  fresh, loaded = (traverse_util.flatten_dict(v, sep="/") for v in (fresh, loaded))
  lines, blocked = [], set()
  for path in mismatched:
    module = path.split("/", 1)[1]
    field = next((f for p, f in SHAPE_SOURCES.items() if _under(module, p)), None)
    cause = f"set by {field}" if field else "set by the model config"
    lines.append(f"{path}: {tuple(fresh[path].shape)} here ({cause}), "
                 f"{tuple(loaded[path].shape)} in the checkpoint")
    logging.warning("config.init_from: %s stays freshly initialised.", lines[-1])
    if not any(_under(module, prefix) for prefix in config.init_fresh):
      blocked.add(module)
  if blocked:
    raise ValueError(
        f"config.init_from={config.init_from!r} has arrays of other shapes than the model's:\n  "
        + "\n  ".join(lines) + "\nSet the fields to the checkpoint's values, or let these "
        f"arrays start fresh with config.init_fresh={tuple(sorted(blocked))!r} (or their "
        "modules' paths).")


def build_experiment(config, workdir: str, devices=None, read_only: bool = False) -> Experiment:
  """Builds the model, optimizer, jitted steps and checkpointer that `config` describes
  (over `devices`, by default every device of every process)."""
  devices = jax.devices() if devices is None else devices
  validate_config(config, len(devices))
  init_modules = None
  if config.init_from:
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
      make_train_step(model, tx, objective, schedule, config.grad_accum_steps),
      make_eval_step(model, objective), mesh, abstract, fsdp=config.mesh.fsdp > 1,
      min_fsdp_size=config.mesh.min_fsdp_size)
  abstract = jax.tree_util.tree_map(
      lambda s, sharding: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
      abstract, shardings)
  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.checkpoint.keep,
                              best_metric=config.checkpoint.best_metric,
                              best_mode=config.checkpoint.best_mode,
                              async_save=config.checkpoint.async_save, read_only=read_only)
  return Experiment(config, mesh, model, jax.jit(init, out_shardings=shardings), train_step,
                    eval_step, abstract, checkpointer, workdir, init_modules)
