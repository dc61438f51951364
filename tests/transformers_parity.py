"""Helpers for the conversion parity tests: save a small random transformers Perceiver head
to a directory (as `save_pretrained` does for the published checkpoints) and compare outputs."""

import json
import os
import shutil

import numpy as np
import torch
from safetensors.numpy import load_file, save_file


def save(model, directory) -> str:
  """Writes `model` (a transformers PreTrainedModel, eval mode) as config.json +
  model.safetensors into `directory`; returns the directory as a string."""
  model.eval()
  model.save_pretrained(str(directory), safe_serialization=True)
  return str(directory)


def run(model, **inputs) -> np.ndarray:
  """The transformers head's logits for numpy `inputs`, as float32 numpy."""
  with torch.no_grad():
    outputs = model(**{k: torch.from_numpy(np.asarray(v)) for k, v in inputs.items()})
  return outputs.logits.float().numpy()


def assert_parity(ours, theirs, tolerance: float = 1e-4):
  """max |ours - theirs| / max |theirs| < tolerance, with equal shapes."""
  ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
  assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
  scale = np.max(np.abs(theirs))
  assert scale > 0
  error = np.max(np.abs(ours - theirs)) / scale
  assert error < tolerance, f"relative max error {error:.2e} >= {tolerance:.0e}"


def edited_copy(source, target, edit_weights=None, edit_config=None) -> str:
  """A copy of checkpoint directory `source` at `target` whose {name: array} weights and
  config.json dict were passed through the edits (each changes its dict in place or returns
  a new one); returns the copy's path."""
  target = shutil.copytree(str(source), str(target))
  weights_file = os.path.join(target, "model.safetensors")
  if edit_weights is not None:
    weights = load_file(weights_file)
    weights = edit_weights(weights) or weights
    save_file(weights, weights_file, metadata={"format": "pt"})
  if edit_config is not None:
    with open(os.path.join(target, "config.json")) as f:
      config = json.load(f)
    config = edit_config(config) or config
    with open(os.path.join(target, "config.json"), "w") as f:
      json.dump(config, f)
  return target
