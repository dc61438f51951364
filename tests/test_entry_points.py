"""The top-level entry points: build_model, param_count and flops from any task config (or a
training config holding one), count_params of initialised variables."""

import jax
import ml_collections
import pytest

import perceiver_jax
from perceiver_jax import tasks
from perceiver_jax.nn import model_stats

CONFIGS = [("perceiver_classification", None), ("image_classification", "conv"),
           ("masked_language_modeling", None), ("multimodal_autoencoding", None),
           ("language_modeling", None)]


def _init_count(model, config):
  rngs = {"params": jax.random.PRNGKey(0), "masking": jax.random.PRNGKey(1)}
  inputs = tasks.example_inputs(config, 2)
  return perceiver_jax.count_params(jax.eval_shape(model.init, rngs, inputs))


@pytest.mark.parametrize("name,variant", CONFIGS)
def test_param_count_of_a_task_config_equals_the_initialised_model(name, variant):
  config = tasks.tiny_config(name, variant)
  model = perceiver_jax.build_model(config)
  assert type(model) is type(tasks.build(config))
  assert perceiver_jax.param_count(config) == _init_count(model, config) > 0


@pytest.mark.parametrize("name,variant,input_shape", [
    ("perceiver_classification", None, (8, 8, 3)),
    ("image_classification", "conv", (8, 8, 3)),
    ("language_modeling", None, (32,)),
])
def test_flops_of_a_task_config_equal_flops_of_its_model_at_the_config_input_shape(
    name, variant, input_shape):
  config = tasks.tiny_config(name, variant)
  model = perceiver_jax.build_model(config)
  assert perceiver_jax.flops(config) == model_stats.flops(model, input_shape) > 0
  assert perceiver_jax.flops(model, input_shape) == perceiver_jax.flops(config)
  assert perceiver_jax.param_count(model, input_shape) == perceiver_jax.param_count(config)


def test_multimodal_config_gives_one_shape_per_modality():
  config = tasks.tiny_config("multimodal_autoencoding")
  shapes = {name: x.shape[1:] for name, x in tasks.example_inputs(config, 1).items()}
  model = perceiver_jax.build_model(config)
  assert perceiver_jax.flops(config) == model_stats.flops(model, shapes) > 0


def test_a_training_config_counts_its_model():
  config = ml_collections.ConfigDict(dict(
      model=tasks.tiny_config("image_classification", "conv"), batch_size=4, seed=0))
  assert perceiver_jax.param_count(config) == perceiver_jax.param_count(config.model)
  assert perceiver_jax.flops(config) == perceiver_jax.flops(config.model)
  assert type(perceiver_jax.build_model(config)) is type(tasks.build(config.model))


def test_input_shape_overrides_the_config_inputs():
  config = tasks.tiny_config("masked_language_modeling")
  (length,) = tasks.example_inputs(config, 1).shape[1:]
  shorter = (length // 2,)
  assert perceiver_jax.flops(config, shorter) == model_stats.flops(
      perceiver_jax.build_model(config), shorter) < perceiver_jax.flops(config)
  assert perceiver_jax.param_count(config, shorter) == perceiver_jax.param_count(config)


def test_a_module_needs_its_input_shape_and_a_config_needs_a_task():
  model = perceiver_jax.build_model(tasks.tiny_config("perceiver_classification"))
  with pytest.raises(ValueError, match=r"param_count\(Perceiver\(...\)\) needs input_shape"):
    perceiver_jax.param_count(model)
  with pytest.raises(ValueError, match=r"flops\(Perceiver\(...\)\) needs input_shape"):
    perceiver_jax.flops(model)
  with pytest.raises(ValueError, match="expected a task config"):
    perceiver_jax.build_model(ml_collections.ConfigDict(dict(batch_size=4)))
  with pytest.raises(ValueError, match="expected a task config"):
    perceiver_jax.param_count(ml_collections.ConfigDict(dict(model=dict(batch_size=4))))
