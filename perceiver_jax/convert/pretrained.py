"""Pretrained model directories: a task model config plus its variables, saved and loaded.

A directory DIR holds `variables/` (an Orbax checkpoint of {'params': ..., 'batch_stats': ...})
and `model_config.json` (the `perceiver_jax.tasks` config that builds the model), written last,
so a directory with a model_config.json is complete. `python -m perceiver_jax.convert` writes
them for transformers and krasserm/perceiver-io checkpoints.

  model, variables = load_pretrained(DIR)          # a notebook
  outputs = model.apply(variables, inputs)

Fine-tuning (`config.init_from=DIR` in a training config): `inherit_model_config` takes the
architecture from DIR (all of it for the same task; the encoder and input adapter when the
task differs, e.g. GLUE classification from the byte MLM) and keeps the run's own settings of
`RUN_SETTINGS` (dtypes, dropout, the attention settings, remat) and of the task's outputs
(e.g. num_classes); `overlay` then copies the pretrained parameters of the inherited modules
into a freshly initialised state, reporting what was loaded and what stays fresh.
"""

import json
import os
from typing import Dict, Tuple

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from flax import traverse_util

from perceiver_jax import tasks

CONFIG_FILE = "model_config.json"
VARIABLES_DIR = "variables"
# Settings a fine-tuning run keeps from its own config: they do not change what the
# pretrained weights mean.
RUN_SETTINGS = ("dtype", "param_dtype", "dropout_rate", "attention", "cross_attention", "remat")
# Top-level values a fine-tuning run of the same task keeps from its own config.
OUTPUT_SETTINGS = ("num_classes",)
# Sections inherited when the fine-tuning task differs from the pretrained one.
SHARED_SECTIONS = ("encoder", "input_adapter")


def save_pretrained(directory: str, model_config: ml_collections.ConfigDict, variables: dict):
  """Writes `variables` and `model_config` to `directory` (created; must not hold a model)."""
  directory = os.path.abspath(directory)
  if os.path.exists(os.path.join(directory, CONFIG_FILE)):
    raise ValueError(f"{directory} already holds a pretrained model; choose a new --output "
                     "directory or delete it.")
  os.makedirs(directory, exist_ok=True)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.join(directory, VARIABLES_DIR), jax.device_get(variables),
                    force=True)
  checkpointer.wait_until_finished()
  checkpointer.close()
  temporary = os.path.join(directory, CONFIG_FILE + ".tmp")
  with open(temporary, "w") as f:
    f.write(model_config.to_json(indent=2))
  os.replace(temporary, os.path.join(directory, CONFIG_FILE))


def check_directory(directory: str, field: str = "directory"):
  """ValueError naming `field` unless `directory` holds a complete pretrained model."""
  if not os.path.isfile(os.path.join(directory, CONFIG_FILE)):
    raise ValueError(f"{field}={directory!r} holds no pretrained model ({CONFIG_FILE} is "
                     "missing); write one with `python -m perceiver_jax.convert --transformers "
                     "DIR --output DIR` (or --krasserm DIR).")


def load_model_config(directory: str) -> ml_collections.ConfigDict:
  """The task model config saved in `directory` (lists restored as tuples)."""
  check_directory(directory)
  return read_config_json(os.path.join(directory, CONFIG_FILE))


def read_config_json(file: str) -> ml_collections.ConfigDict:
  """The ConfigDict written as JSON to `file`, its lists restored as the tuples they were."""
  with open(file, encoding="utf-8") as f:
    return ml_collections.ConfigDict(_tuples(json.load(f)))


def load_variables(directory: str) -> dict:
  """The variables saved in `directory`, as host numpy arrays."""
  check_directory(directory)
  checkpointer = ocp.StandardCheckpointer()
  try:
    variables = checkpointer.restore(os.path.join(os.path.abspath(directory), VARIABLES_DIR))
  finally:
    checkpointer.close()
  return jax.tree_util.tree_map(np.asarray, variables)


def load_pretrained(directory: str):
  """(model, variables) saved in `directory`: `model.apply(variables, inputs)` runs it."""
  return tasks.build(load_model_config(directory)), load_variables(directory)


def inherit_model_config(run_config, pretrained_config) -> Tuple[ml_collections.ConfigDict,
                                                                   Tuple[str, ...]]:
  """(model config for fine-tuning, names of the modules whose weights to load).

  Same task: the pretrained config, with the run's RUN_SETTINGS (at the top level and in
  every section) and OUTPUT_SETTINGS (e.g. num_classes), all modules loaded (an output layer
  whose shape then differs stays fresh). Other task: the
  run's config with the pretrained SHARED_SECTIONS (the run's RUN_SETTINGS kept in them).
  """
  run_config = ml_collections.ConfigDict(run_config.to_dict())
  pretrained_config = ml_collections.ConfigDict(pretrained_config.to_dict())
  if run_config.task == pretrained_config.task:
    merged = pretrained_config
    for key in RUN_SETTINGS + OUTPUT_SETTINGS:
      if key in run_config and key in merged:
        merged[key] = run_config[key]
    sections, modules = [k for k, v in merged.items()
                         if isinstance(v, ml_collections.ConfigDict)], None
  else:
    merged = run_config
    sections = [s for s in SHARED_SECTIONS if s in run_config and s in pretrained_config]
    if not sections:
      raise ValueError(f"the pretrained {pretrained_config.task} model shares no module with "
                       f"the {run_config.task} model of config.model; pick a checkpoint of "
                       f"the same task or one with an {' or '.join(SHARED_SECTIONS)}.")
    for section in sections:
      merged[section] = pretrained_config[section]
    modules = tuple(sections)
  for section in sections:
    for key in RUN_SETTINGS:
      if key in run_config.get(section, {}):
        merged[section][key] = run_config[section][key]
  return merged, modules


def overlay(fresh: dict, pretrained: dict, modules=None) -> Tuple[dict, Dict[str, list]]:
  """`fresh` variables with the `pretrained` value at every path of the same shape (within
  the top-level `modules` of each collection, or everywhere when None), cast to the fresh
  dtype and sharding. Returns (variables, {'loaded', 'fresh', 'unused', 'mismatched'} paths);
  ValueError when nothing is loaded."""
  flat_fresh = traverse_util.flatten_dict(fresh, sep="/")
  flat_pretrained = traverse_util.flatten_dict(pretrained, sep="/")
  wanted = lambda path: modules is None or path.split("/")[1] in modules
  report = {"loaded": [], "fresh": [], "unused": [], "mismatched": []}
  merged = {}
  for path, value in flat_fresh.items():
    source = flat_pretrained.get(path) if wanted(path) else None
    if source is not None and tuple(source.shape) == tuple(value.shape):
      source = np.asarray(source).astype(value.dtype)
      sharding = getattr(value, "sharding", None)
      merged[path] = source if sharding is None else jax.make_array_from_callback(
          source.shape, sharding, lambda index, source=source: source[index])
      report["loaded"].append(path)
    else:
      merged[path] = value
      report["mismatched" if source is not None else "fresh"].append(path)
  report["unused"] = sorted(p for p in flat_pretrained if p not in flat_fresh or not wanted(p))
  if not report["loaded"]:
    raise ValueError("no pretrained parameter fits the model: its names or shapes all differ "
                     f"(pretrained: {sorted(flat_pretrained)[:5]}..., model: "
                     f"{sorted(flat_fresh)[:5]}...).")
  return traverse_util.unflatten_dict(merged, sep="/"), report


def _tuples(value):
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  return value
