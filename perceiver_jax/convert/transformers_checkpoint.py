"""Reads a checkpoint directory offline: `config.json` and its weights, as transformers'
`save_pretrained` writes them (also for krasserm/perceiver-io's Hugging Face wrappers).

Weights come from `model.safetensors` (read with safetensors' numpy API, no torch), a sharded
`model.safetensors.index.json` (whose shards must lie inside the directory), or
`pytorch_model.bin` (needs torch; read with `weights_only=True`, so a pickle that holds more
than tensors is refused). Every array comes back as a float32 numpy array keyed by its
transformers name; unreadable files and NaN or infinite weights raise a ValueError naming the
file.
"""

import json
import os
import pickle
from typing import Dict, Tuple

import numpy as np


def read_checkpoint(path: str) -> Tuple[dict, Dict[str, np.ndarray]]:
  """(config.json as a dict, {weight name: float32 array}) of the directory `path`."""
  if not os.path.isdir(path):
    raise ValueError(f"{path!r} is not a directory; pass a checkpoint directory (config.json + "
                     "model.safetensors or pytorch_model.bin) as save_pretrained writes it.")
  config_path = os.path.join(path, "config.json")
  if not os.path.exists(config_path):
    raise ValueError(f"{path!r} has no config.json; it holds {sorted(os.listdir(path))}.")
  config = _json_object(config_path)
  weights = {}
  for file, arrays in _weights(path):
    for name, array in arrays.items():
      array = np.asarray(array, np.float32)
      if not np.isfinite(array).all():
        raise ValueError(f"{file!r}: weight {name!r} holds NaN or infinite values; the "
                         "checkpoint is corrupt or was saved from a diverged run.")
      weights[name] = array
  return config, weights


def _json_object(file: str) -> dict:
  """The JSON object (a dict) in `file`; a ValueError naming it otherwise."""
  try:
    with open(file, encoding="utf-8") as f:
      value = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{file!r} is not valid JSON: {e}.") from None
  if not isinstance(value, dict):
    raise ValueError(f"{file!r} holds a JSON {type(value).__name__}; expected an object "
                     "({...}) as transformers' save_pretrained writes.")
  return value


def _weights(path: str) -> list:
  """[(file, {name: array})] of the checkpoint directory `path`."""
  single = os.path.join(path, "model.safetensors")
  index = os.path.join(path, "model.safetensors.index.json")
  pickled = os.path.join(path, "pytorch_model.bin")
  if os.path.exists(single):
    return [(single, _safetensors(single))]
  if os.path.exists(index):
    return [(shard, _safetensors(shard)) for shard in _shards(path, index)]
  if os.path.exists(pickled):
    return [(pickled, _pickled(pickled))]
  raise ValueError(f"{path!r} has no model.safetensors, model.safetensors.index.json or "
                   f"pytorch_model.bin; it holds {sorted(os.listdir(path))}.")


def _shards(path: str, index: str) -> list:
  """The shard files `index` names, each checked to lie inside the directory `path`."""
  weight_map = _json_object(index).get("weight_map")
  if not isinstance(weight_map, dict) or not all(
      isinstance(v, str) for v in weight_map.values()):
    raise ValueError(f"{index!r} has no 'weight_map' of weight name -> shard file name.")
  root = os.path.realpath(path)
  shards = []
  for name in sorted(set(weight_map.values())):
    shard = os.path.realpath(os.path.join(root, name))
    if os.path.dirname(shard) != root:
      raise ValueError(f"{index!r} names the shard {name!r}, which is not a file in the "
                       f"checkpoint directory {path!r}; refusing to read it.")
    shards.append(shard)
  return shards


def _safetensors(file: str) -> dict:
  from safetensors import safe_open  # pylint: disable=import-outside-toplevel
  try:
    with safe_open(file, framework="numpy") as f:
      return {name: f.get_tensor(name) for name in f.keys()}
  except Exception as e:  # pylint: disable=broad-except  # safetensors' error types vary.
    raise ValueError(f"{file!r} is not a readable safetensors file (truncated or corrupt?): "
                     f"{e}") from None


def _pickled(file: str) -> dict:
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ValueError(f"{file!r} is a PyTorch pickle and reading it needs torch: "
                     "`pip install torch`, or re-save the checkpoint as safetensors.") from e
  try:
    state = torch.load(file, map_location="cpu", weights_only=True)
  except pickle.UnpicklingError:
    raise ValueError(f"{file!r} holds objects other than tensors, which perceiver_jax does not "
                     "load; re-save the checkpoint's state_dict (or as safetensors) with the "
                     "code that wrote it.") from None
  except (RuntimeError, EOFError) as e:
    raise ValueError(f"{file!r} is not a readable PyTorch checkpoint (truncated or corrupt?): "
                     f"{e}") from None
  if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
    raise ValueError(f"{file!r} holds a {type(state).__name__}, not a state_dict of "
                     "{name: tensor}.")
  return {name: tensor.float().numpy() for name, tensor in state.items()}
