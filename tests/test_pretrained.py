"""Pretrained model directories: save/load round trip (with BatchNorm statistics), clear
errors, the fine-tuning config inheritance, the parameter overlay and a run's stop at arrays
of other shapes (unless config.init_fresh lets them start fresh)."""

import json
import os

import chex
import jax
import ml_collections
import numpy as np
import pytest

from configs import digits_perceiver
from perceiver_jax import tasks
from perceiver_jax.convert import pretrained
from perceiver_jax.train.experiment import build_experiment


@pytest.fixture(scope="module")
def conv_model(tmp_path_factory):
  """A test-size conv-stem ImageNet model (params + batch_stats), saved once."""
  config = tasks.tiny_config("image_classification", "conv")
  model = tasks.build(config)
  variables = model.init(jax.random.PRNGKey(0), tasks.example_inputs(config, 1))
  variables = jax.tree_util.tree_map(  # Non-trivial BatchNorm statistics.
      lambda x: x + 0.5, variables)
  directory = str(tmp_path_factory.mktemp("pretrained") / "conv")
  pretrained.save_pretrained(directory, config, variables)
  return config, model, variables, directory


def test_load_pretrained_round_trip(conv_model):
  config, model, variables, directory = conv_model
  assert "batch_stats" in variables
  loaded_model, loaded = pretrained.load_pretrained(directory)
  assert pretrained.load_model_config(directory) == config  # Tuples come back as tuples.
  assert isinstance(pretrained.load_model_config(directory).image_shape, tuple)
  chex.assert_trees_all_equal(loaded, variables)
  images = np.random.default_rng(0).normal(size=(2,) + tuple(config.image_shape))
  np.testing.assert_array_equal(loaded_model.apply(loaded, images),
                                model.apply(variables, images))


def test_directories_are_checked(conv_model, tmp_path):
  config, _, variables, directory = conv_model
  with pytest.raises(ValueError, match="already holds a pretrained model"):
    pretrained.save_pretrained(directory, config, variables)
  with pytest.raises(ValueError, match="holds no pretrained model.*perceiver_jax.convert"):
    pretrained.load_pretrained(str(tmp_path))
  os.makedirs(tmp_path / "half" / pretrained.VARIABLES_DIR)  # Killed before the config.
  with pytest.raises(ValueError, match="model_config.json is missing"):
    pretrained.load_variables(str(tmp_path / "half"))


def test_same_task_inherits_the_architecture_and_keeps_run_settings():
  source = tasks.tiny_config("image_classification", "conv")
  source.encoder.activation = "gelu_exact"
  run = tasks.tiny_config("image_classification", "conv")
  run.encoder.num_latents = 99  # Architecture: the pretrained model's wins.
  run.encoder.dropout_rate = 0.1  # Run settings: kept.
  run.encoder.attention.implementation = "chunked"
  run.encoder.cross_attention.implementation = "xla"
  run.dtype = "bfloat16"
  run.num_classes = 7
  merged, modules = pretrained.inherit_model_config(run, source)
  assert modules is None
  assert merged.encoder.num_latents == source.encoder.num_latents
  assert merged.encoder.activation == "gelu_exact"
  assert (merged.encoder.dropout_rate, merged.dtype, merged.num_classes) == (0.1, "bfloat16", 7)
  encoder = tasks.build(merged).encoder
  assert (encoder.attention.implementation, encoder.cross_attention.implementation) == (
      "chunked", "xla")
  assert run.encoder.num_latents == 99  # Inputs untouched.


def test_other_task_inherits_encoder_and_input_adapter_only():
  source = tasks.tiny_config("masked_language_modeling")
  source.encoder.activation = "gelu_exact"
  run = tasks.tiny_config("sequence_classification")
  merged, modules = pretrained.inherit_model_config(run, source)
  assert modules == ("encoder", "input_adapter")
  assert merged.task == "sequence_classification"
  assert merged.encoder == source.encoder and merged.input_adapter == source.input_adapter
  assert merged.decoder == run.decoder
  with pytest.raises(ValueError, match="shares no module"):
    pretrained.inherit_model_config(
        run, ml_collections.ConfigDict({"task": "x", "decoder": {"num_heads": 1}}))


def test_overlay_loads_equal_shapes_and_reports_the_rest(conv_model):
  config, model, variables, _ = conv_model
  other = config.copy_and_resolve_references()
  other.num_classes = config.num_classes + 3
  fresh = tasks.build(other).init(jax.random.PRNGKey(1), tasks.example_inputs(other, 1))
  merged, report = pretrained.overlay(fresh, variables)
  flat = lambda tree: dict(jax.tree_util.tree_flatten_with_path(tree)[0])
  assert sorted(report["mismatched"]) == ["params/decoder/output/bias",
                                          "params/decoder/output/kernel"]
  assert report["fresh"] == [] and report["unused"] == []
  for path, value in flat(merged).items():
    name = "/".join(k.key for k in path)
    expected = (flat(fresh) if name in report["mismatched"] else flat(variables))[path]
    np.testing.assert_array_equal(value, expected)
  only_encoder, report = pretrained.overlay(fresh, variables, modules=("encoder",))
  assert all(p.split("/")[1] == "encoder" for p in report["loaded"])
  assert "params/input_adapter/conv/kernel" in report["unused"]
  np.testing.assert_array_equal(only_encoder["params"]["input_adapter"]["conv"]["kernel"],
                                fresh["params"]["input_adapter"]["conv"]["kernel"])
  with pytest.raises(ValueError, match="no pretrained parameter fits"):
    pretrained.overlay(fresh, {"params": {"other": np.zeros(3)}})


def test_init_from_stops_at_arrays_of_other_shapes_unless_init_fresh_names_them(tmp_path):
  config = digits_perceiver.get_config("tiny")
  seven = config.model.copy_and_resolve_references()
  seven.num_classes = 7
  variables = tasks.build(seven).init(jax.random.PRNGKey(0), tasks.example_inputs(seven, 1))
  pretrained.save_pretrained(str(tmp_path / "seven"), seven, variables)
  config.init_from = str(tmp_path / "seven")  # Its num_classes (10) is the run's own.
  experiment = build_experiment(config, str(tmp_path / "work"))
  with pytest.raises(ValueError, match=r"params/decoder/logits/kernel: \(16, 10\) here \(set by "
                                       r"config.model.num_classes\), \(16, 7\) in the checkpoint"
                                       r"(.|\n)*config.init_fresh=\('decoder/logits/bias', "
                                       r"'decoder/logits/kernel'\)"):
    experiment.restore_or_init()
  assert not os.path.exists(tmp_path / "work" / "init_from.json")
  experiment.config.init_fresh = ("decoder/logits",)
  state, _ = experiment.restore_or_init()
  experiment.checkpointer.close()
  assert state.params["decoder"]["logits"]["kernel"].shape == (16, 10)
  np.testing.assert_array_equal(state.params["encoder"]["latents"],
                                variables["params"]["encoder"]["latents"])
  with open(tmp_path / "work" / "init_from.json") as f:
    assert sorted(json.load(f)["mismatched"]) == ["params/decoder/logits/bias",
                                                  "params/decoder/logits/kernel"]
