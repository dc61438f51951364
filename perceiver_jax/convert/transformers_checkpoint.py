"""Reads a transformers checkpoint directory offline: `config.json` and its weights.

Weights come from `model.safetensors` (read with safetensors' numpy API, no torch), a sharded
`model.safetensors.index.json`, or `pytorch_model.bin` (needs torch). Every array comes back
as a float32 numpy array keyed by its transformers name.
"""

import json
import os
from typing import Dict, Tuple

import numpy as np


def read_checkpoint(path: str) -> Tuple[dict, Dict[str, np.ndarray]]:
  """(config.json as a dict, {weight name: float32 array}) of the directory `path`."""
  if not os.path.isdir(path):
    raise ValueError(f"{path!r} is not a directory; pass a transformers checkpoint directory "
                     "(config.json + model.safetensors), e.g. one written by save_pretrained.")
  config_path = os.path.join(path, "config.json")
  if not os.path.exists(config_path):
    raise ValueError(f"{path!r} has no config.json; it holds {sorted(os.listdir(path))}.")
  with open(config_path) as f:
    config = json.load(f)
  return config, {name: np.asarray(array, np.float32) for name, array in _weights(path).items()}


def _weights(path: str) -> dict:
  single = os.path.join(path, "model.safetensors")
  index = os.path.join(path, "model.safetensors.index.json")
  pickled = os.path.join(path, "pytorch_model.bin")
  if os.path.exists(single):
    return _safetensors(single)
  if os.path.exists(index):
    with open(index) as f:
      shards = sorted(set(json.load(f)["weight_map"].values()))
    weights = {}
    for shard in shards:
      weights.update(_safetensors(os.path.join(path, shard)))
    return weights
  if os.path.exists(pickled):
    try:
      import torch  # pylint: disable=import-outside-toplevel
    except ImportError as e:
      raise ValueError(f"{pickled!r} is a PyTorch pickle and reading it needs torch: "
                       "`pip install torch`, or re-save the checkpoint as safetensors.") from e
    state = torch.load(pickled, map_location="cpu", weights_only=True)
    return {name: tensor.float().numpy() for name, tensor in state.items()}
  raise ValueError(f"{path!r} has no model.safetensors, model.safetensors.index.json or "
                   f"pytorch_model.bin; it holds {sorted(os.listdir(path))}.")


def _safetensors(file: str) -> dict:
  from safetensors import safe_open  # pylint: disable=import-outside-toplevel
  weights = {}
  with safe_open(file, framework="numpy") as f:
    for name in f.keys():
      weights[name] = f.get_tensor(name)
  return weights
