"""Pretrained Perceiver checkpoints published for transformers -> perceiver_jax task models.

  model, variables = convert.from_transformers("path/to/checkpoint_dir")
  outputs = model.apply(variables, inputs, deterministic=True)

A checkpoint directory is what transformers' `save_pretrained` writes (config.json +
model.safetensors or pytorch_model.bin); nothing is downloaded. config.json's
`architectures[0]` picks the converter: it builds the matching perceiver_jax task config
(`perceiver_jax.tasks`), places every weight, and raises a ValueError naming any weight it
could not place or any config field it cannot honour. Inputs are in JAX layout: images
[batch, height, width, channels], token ids [batch, length], flow frame pairs
[batch, 2, height, width, 3]; outputs are the transformers head's logits.

`python -m perceiver_jax.convert --transformers DIR --output DIR` writes the converted model
as a perceiver_jax checkpoint (`perceiver_jax.convert.pretrained`).

krasserm/perceiver-io checkpoints convert likewise: `from_krasserm(DIR)` /
`convert_krasserm(DIR)` and `--krasserm DIR` (`perceiver_jax.convert.krasserm`).
"""

from typing import Tuple

import ml_collections

from perceiver_jax import tasks
from perceiver_jax.convert import flow, image, multimodal, text
from perceiver_jax.convert.krasserm import convert_krasserm, from_krasserm
from perceiver_jax.convert.transformers_checkpoint import read_checkpoint
from perceiver_jax.convert.weights import run_converter

CONVERTERS = {**image.CONVERTERS, **text.CONVERTERS, **flow.CONVERTERS, **multimodal.CONVERTERS}


def convert(path: str) -> Tuple[ml_collections.ConfigDict, dict]:
  """(task model config, variables) of the transformers checkpoint directory `path`."""
  hf_config, weights = read_checkpoint(path)
  architectures = hf_config.get("architectures") or [None]
  architecture = architectures[0]
  if architecture not in CONVERTERS:
    hint = ("; it holds a krasserm/perceiver-io model_config: convert it with "
            "convert_krasserm / --krasserm" if "model_config" in hf_config else "")
    raise ValueError(f"{path}/config.json names architecture {architecture!r}; perceiver_jax "
                     f"converts {sorted(CONVERTERS)}{hint}.")
  return run_converter(CONVERTERS[architecture], hf_config, weights,
                       f"{path} ({architecture})", path)


def from_transformers(path: str):
  """(model, variables) of the transformers checkpoint directory `path`; see the module doc."""
  model_config, variables = convert(path)
  return tasks.build(model_config), variables

