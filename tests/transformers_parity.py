"""Helpers for the conversion parity tests: save a small random transformers Perceiver head
to a directory (as `save_pretrained` does for the published checkpoints) and compare outputs."""

import numpy as np
import torch


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
