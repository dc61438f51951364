"""Task models: one module per task of the Perceiver IO paper, the original Perceiver and
Perceiver AR language modelling.

Each task module has `default_config(variant=None)` (the paper's model, as an
ml_collections.ConfigDict with `config.task`), `tiny_config(variant=None)` (the same structure
at test size), `build(config)` (a PerceiverIO; a Perceiver for 'perceiver_classification', a
PerceiverAR for 'language_modeling')
and `example_inputs(config, batch_size)`.
The functions here dispatch on the task name:

  config = tasks.default_config("image_classification", "conv")
  model = tasks.build(config)
  variables = model.init(rng, tasks.example_inputs(config, 1))
"""

from types import ModuleType

from perceiver_jax.tasks.building import expose_attention_settings

from perceiver_jax.tasks import (audio_classification, image_classification, language_modeling,
                                 masked_language_modeling, multimodal_autoencoding, optical_flow,
                                 perceiver_classification, point_cloud_classification,
                                 sequence_classification)

TASKS = {module.TASK: module for module in (
    perceiver_classification, image_classification, masked_language_modeling,
    sequence_classification, optical_flow, multimodal_autoencoding, point_cloud_classification,
    audio_classification, language_modeling)}


def get(task: str) -> ModuleType:
  """The task module called `task`."""
  if task not in TASKS:
    raise ValueError(f"unknown task {task!r}; the tasks are {sorted(TASKS)}.")
  return TASKS[task]


def default_config(task: str, variant: str = None):
  """The paper's config of `task` (and `variant`), attention settings included."""
  return expose_attention_settings(get(task).default_config(variant))


def tiny_config(task: str, variant: str = None):
  """The test-size config of `task` (and `variant`), attention settings included."""
  return expose_attention_settings(get(task).tiny_config(variant))


def build(config):
  """The model of `config.task` that `config` describes."""
  return get(config.task).build(config)


def example_inputs(config, batch_size: int = 1):
  """Zero inputs of the shapes and dtypes `build(config)` takes."""
  return get(config.task).example_inputs(config, batch_size)
