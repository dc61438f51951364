"""The package's top-level entry points: a model, its parameter count and FLOPs from a config.

`config` is a task config (`tasks.default_config(task, variant)` / `tiny_config`: it has
`.task`) or a training config whose `.model` is one (`configs/*.py` get_config()). Its input
shape (no batch dim) is that of `tasks.example_inputs(config)`: a shape, or {modality: shape}
for the multimodal autoencoder; pass `input_shape` to count other inputs (e.g. shorter text).
param_count and flops also take a built flax module, with its `input_shape`.

  config = tasks.tiny_config("image_classification", "conv")
  model = build_model(config)
  param_count(config) == count_params(model.init(rng, tasks.example_inputs(config)))
  flops(config) == flops(model, (8, 8, 3))  # Forward FLOPs per example.
"""

from typing import Mapping

import flax.linen as nn
import jax

from perceiver_jax import tasks
from perceiver_jax.nn import model_stats


def _model_config(config):
  """The task config `config` is or holds as `.model`; ValueError for anything else."""
  if "task" in config:
    return config
  if "model" in config and "task" in config.model:
    return config.model
  raise ValueError(
      "expected a task config (with .task, from tasks.default_config or tasks.tiny_config) or a "
      f"training config whose .model is one (configs/*.py); got keys {sorted(config)}.")


def build_model(config) -> nn.Module:
  """The model (PerceiverIO, Perceiver or PerceiverAR) that `config` describes."""
  return tasks.build(_model_config(config))


def example_input_shape(config):
  """The input shape of `config`'s model, no batch dim ({modality: shape} when multimodal)."""
  inputs = jax.eval_shape(lambda: tasks.example_inputs(_model_config(config), 1))
  if isinstance(inputs, Mapping):
    return {name: x.shape[1:] for name, x in inputs.items()}
  return inputs.shape[1:]


def _model_and_shape(config_or_model, input_shape, caller: str):
  if isinstance(config_or_model, nn.Module):
    if input_shape is None:
      raise ValueError(
          f"{caller}({type(config_or_model).__name__}(...)) needs input_shape (no batch dim), "
          f"e.g. {caller}(model, (224, 224, 3)); a task config gives its own.")
    return config_or_model, input_shape
  if input_shape is None:
    input_shape = example_input_shape(config_or_model)
  return build_model(config_or_model), input_shape


def param_count(config_or_model, input_shape=None) -> int:
  """Parameters of the model of a config (or of a module), without initialising it."""
  return model_stats.param_count(*_model_and_shape(config_or_model, input_shape, "param_count"))


def flops(config_or_model, input_shape=None) -> int:
  """Forward FLOPs per example of the model of a config (or of a module)."""
  return model_stats.flops(*_model_and_shape(config_or_model, input_shape, "flops"))
