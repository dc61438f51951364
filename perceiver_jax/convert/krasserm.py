"""krasserm/perceiver-io checkpoints -> perceiver_jax task models.

  model, variables = convert.from_krasserm("path/to/checkpoint_dir")
  outputs = model.apply(variables, inputs, deterministic=True)

A checkpoint directory is what the `save_pretrained` of krasserm's Hugging Face wrappers
(`perceiver.model.*.huggingface`, perceiver-io 0.11) writes, e.g. a local copy of
krasserm/perceiver-io-mlm: config.json holding `model_type` and `model_config` (the backend
model's config as a dict) and the backend's weights (keys `backend_model.*`) in
model.safetensors or pytorch_model.bin (read with torch's weights_only loading); nothing is
downloaded. `model_type` picks the converter (CONVERTERS; the Perceiver IO ones are in
`krasserm_io`, the Perceiver AR ones in `krasserm_ar`), which builds the matching perceiver_jax task config and places every weight;
an unknown model_type or model_config field, a setting we cannot honour, a weight left
unplaced and variables that do not fit the built model each raise a ValueError naming it.

`python -m perceiver_jax.convert --krasserm DIR --output OUT` writes the converted model as a
perceiver_jax pretrained directory (`perceiver_jax.convert.pretrained`).
"""

from typing import Tuple

import ml_collections

from perceiver_jax import tasks
from perceiver_jax.convert import krasserm_ar, krasserm_io
from perceiver_jax.convert.transformers_checkpoint import read_checkpoint
from perceiver_jax.convert.weights import run_converter

# model_type -> fn(model_config: dict, weights: WeightReader) -> (task config, variables);
# the weights keep the names the checkpoint stores them under (`backend_model.*`).
CONVERTERS = {**krasserm_io.CONVERTERS, **krasserm_ar.CONVERTERS}


def convert_krasserm(path: str) -> Tuple[ml_collections.ConfigDict, dict]:
  """(task model config, variables) of the krasserm checkpoint directory `path`."""
  config, weights = read_checkpoint(path)
  model_type = config.get("model_type")
  if model_type not in CONVERTERS:
    raise ValueError(f"{path}/config.json has model_type {model_type!r}; perceiver_jax "
                     f"converts the krasserm/perceiver-io models {sorted(CONVERTERS)}.")
  if "model_config" not in config:
    raise ValueError(f"{path}/config.json has no 'model_config' (the backend model's config "
                     "that krasserm's save_pretrained writes); it is not a krasserm checkpoint.")
  return run_converter(CONVERTERS[model_type], config["model_config"], weights,
                       f"{path} ({model_type})", path)


def from_krasserm(path: str):
  """(model, variables) of the krasserm checkpoint directory `path`; see the module doc."""
  model_config, variables = convert_krasserm(path)
  return tasks.build(model_config), variables
