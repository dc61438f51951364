"""Every experiment config and option combination: it passes the trainer's checks, its model
builds and initialises (abstractly) at the data's shapes, its dataset's TFDS features fit the
model, and the paper configs reproduce the papers' parameter counts, run lengths and
learning-rate schedules; options compose (configs/common.py parses them) and every config holds
the common defaults. Training itself runs in tests/test_trainer.py (digits, MLM in bf16 on mock
text, Perceiver AR) and tests/test_fine_tuning.py (glue_bytes_perceiver_io:tiny from a
converted checkpoint)."""

import glob
import importlib
import itertools
import os
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import common
from perceiver_jax import tasks
from perceiver_jax.data import data_config
from perceiver_jax.data import point_cloud_ops
from perceiver_jax.train import optim
import perceiver_jax.data.datasets  # pylint: disable=unused-import  # Registers our TFDS builders.
from perceiver_jax.train.experiment import REQUIRED, validate_config
from perceiver_jax.nn.model_stats import count_params, param_count, stats
from perceiver_jax.train.objectives import make_objective

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = ("digits_perceiver", "perceiver_ar_bytes", "cifar10_perceiver", "cifar10_perceiver_io",
         "imagenet_perceiver", "imagenet_perceiver_io", "mlm_bytes_perceiver_io",
         "glue_bytes_perceiver_io", "solids_perceiver_io", "modelnet40_perceiver_io",
         "synthetic_audio_perceiver_io", "speech_commands_perceiver_io",
         "synthetic_av_perceiver_io", "kinetics_multimodal_perceiver_io",
         "synthetic_flow_perceiver_io", "sintel_perceiver_io", "signals_perceiver")


def _module(name):
  return importlib.import_module(f"configs.{name}")


def _combinations(name):
  """Every option string of config `name`, one choice of each group, e.g. 'conv,tiny'."""
  return [",".join(choice) for choice in itertools.product(*_module(name).OPTIONS.values())]


ALL = [(name, arg) for name in NAMES for arg in _combinations(name)]
# No abstract init for models that another combination repeats (up to the number of classes).
NO_ABSTRACT_INIT = {("glue_bytes_perceiver_io", f"{task},full")
                    for task in ("cola", "mrpc", "qqp", "mnli", "qnli", "rte")}
NO_ABSTRACT_INIT |= {("perceiver_ar_bytes", "stdlib,full")}
# The Kinetics model is slow to trace abstractly (802,816 video queries).
NO_ABSTRACT_INIT |= {("kinetics_multimodal_perceiver_io", "full")}
DATA_TASKS = {"perceiver_classification": "image_classification",
              "image_classification": "image_classification",
              "masked_language_modeling": "text_mlm", "language_modeling": "text_mlm",
              "sequence_classification": "text_classification",
              "point_cloud_classification": "point_cloud",
              "audio_classification": "audio",
              "multimodal_autoencoding": "multimodal", "optical_flow": "optical_flow"}
IMAGENET_TRAIN, CIFAR10_TRAIN = 1_281_167, 50_000


def _config(name, arg):
  return _module(name).get_config(arg)


def _paths(config, prefix=""):
  """The dotted paths of `config`'s fields, sections included."""
  paths = []
  for key, value in config.items():
    paths.append(prefix + key)
    if isinstance(value, ml_collections.ConfigDict):
      paths += _paths(value, f"{prefix}{key}.")
  return paths


def test_every_config_file_is_covered():
  files = {os.path.basename(path)[:-3] for path in glob.glob(os.path.join(REPO, "configs", "*.py"))}
  assert files - {"__init__", "common"} == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_unknown_option_raises_listing_the_valid_ones(name):
  with pytest.raises(ValueError, match="unknown config option 'nope'.*size: full[|]tiny"):
    _config(name, "nope")
  with pytest.raises(ValueError, match="'tiny' and 'full' both choose the size"):
    _config(name, "tiny,full")


@pytest.mark.parametrize("name", NAMES)
def test_options_default_and_compose_in_any_order(name):
  configs = {arg: _config(name, arg).to_dict() for arg in _combinations(name)}
  assert _config(name, "").to_dict() == configs[",".join(
      choices[0] for choices in _module(name).OPTIONS.values())]
  for arg, config in configs.items():
    assert _config(name, ",".join(reversed(arg.split(",")))).to_dict() == config
  # Each choice changes the config.
  assert len({str(sorted(c.items())) for c in configs.values()}) == len(configs)


def test_conv_tiny_is_the_conv_model_at_tiny_size():
  config = _config("imagenet_perceiver_io", "conv,tiny")
  expected = tasks.tiny_config("image_classification", "conv")
  expected.num_classes = 1000
  assert config.model.to_dict() == expected.to_dict()
  assert tuple(config.data.image_size) == (8, 8) and config.data.name == "imagenet2012"
  assert (config.num_train_steps, config.batch_size) == (2, 16)
  full = _config("imagenet_perceiver_io", "conv")
  assert full.model.to_dict() == dict(
      tasks.default_config("image_classification", "conv").to_dict(), dtype="bfloat16")
  assert _config("imagenet_perceiver_io", "tiny").model.variant == "fourier"
  with pytest.raises(ValueError, match="'conv' and 'learned' both choose the model"):
    _config("imagenet_perceiver_io", "conv,learned")


def test_task_and_corpus_options_compose_with_tiny():
  glue = _config("glue_bytes_perceiver_io", "mnli,tiny")
  assert (glue.data.name, glue.data.eval_split, glue.model.num_classes) == (
      "glue/mnli", "validation_matched", 3)
  assert glue.model.encoder.to_dict() == tasks.tiny_config(
      "sequence_classification").encoder.to_dict()
  assert glue.num_train_steps == 2
  stdlib = _config("perceiver_ar_bytes", "stdlib,tiny")
  pg19 = _config("perceiver_ar_bytes", "tiny")
  assert stdlib.model.to_dict() == pg19.model.to_dict() == tasks.tiny_config(
      "language_modeling").to_dict()
  assert (stdlib.data.name, pg19.data.name) == ("python_stdlib_text/small", "pg19")


def test_perceiver_ar_data_lengths_follow_the_model_and_stay_overridable():
  config = _config("perceiver_ar_bytes", "stdlib,cpu")
  assert (config.data.max_seq_len, config.data.eval_block_size) == (513, 256)
  config.model.perceiver_ar.max_context, config.model.perceiver_ar.num_latents = 1024, 128
  assert (config.data.max_seq_len, config.data.eval_block_size) == (1025, 128)
  config.data.eval_block_size = 64  # Its own value from now on; the model keeps its latents.
  config.model.perceiver_ar.num_latents = 96
  assert (config.data.eval_block_size, config.model.perceiver_ar.num_latents) == (64, 96)
  assert _config("perceiver_ar_bytes", "stdlib,cpu").model.dtype == "float32"


@pytest.mark.parametrize("name, arg", ALL)
def test_every_config_holds_the_common_defaults(name, arg):
  assert set(_paths(common.get_config())) <= set(_paths(_config(name, arg)))


def test_required_fields_are_the_common_ones_with_model_and_run_length():
  expected = {"model", "num_train_steps"}
  for key, value in common.get_config().items():
    if isinstance(value, ml_collections.ConfigDict) and key not in ("data", "optimizer"):
      expected |= {f"{key}.{field}" for field in value}  # data and optimizer check their own.
    else:
      expected.add(key)
  assert set(REQUIRED) == expected


@pytest.mark.parametrize("path", REQUIRED + ("data.pack",))
def test_validate_config_names_a_missing_field(path):
  config = _config("digits_perceiver", "tiny")
  *sections, field = path.split(".")
  section = config
  for name in sections:
    section = section[name]
  del section[field]
  with pytest.raises(ValueError, match=f"config.{path} is missing"):
    validate_config(config)


@pytest.mark.parametrize("path, value, match", [
    ("label_smoothing", 1.0, r"config.label_smoothing must be in \[0, 1\)"),
    ("label_smoothing", -0.1, r"config.label_smoothing must be in \[0, 1\)"),
    ("optimizer.learning_rate", float("nan"), "config.optimizer.learning_rate must be a number"),
    ("optimizer.learning_rate", float("inf"), "config.optimizer.learning_rate must be in"),
    ("grad_accum_steps", 0, "config.grad_accum_steps must be an int >= 1"),
    ("eval_batch_size", 0, "config.eval_batch_size must be an int >= 1"),
    ("checkpoint.best_metric", "bits_per_byte",
     r"config.checkpoint.best_metric='bits_per_byte' is not a metric.*'accuracy', 'top5'"),
    ("model.input_shape", (8, 8.0, 1), "config.model.input_shape must be a tuple of ints"),
    ("model.input_shape", "8,8,1", "config.model.input_shape must be a tuple of ints"),
    ("init_fresh", "decoder", "config.init_fresh must be a tuple of module paths"),
    ("lm.minimum_crop_length", 8, "config.lm.minimum_crop_length=8 applies to language_mod")])
def test_validate_config_names_a_harmful_value(path, value, match):
  config = _config("digits_perceiver", "tiny")
  *sections, field = path.split(".")
  section = config
  for name in sections:
    section = section[name]
  with section.ignore_type():
    section[field] = value
  with pytest.raises(ValueError, match=match):
    validate_config(config)


def test_best_metric_is_checked_against_the_tasks_metrics():
  config = _config("perceiver_ar_bytes", "stdlib,tiny")
  config.checkpoint.best_metric = "bits_per_byte"
  validate_config(config)
  config.checkpoint.best_metric = "top5"
  with pytest.raises(ValueError, match="config.checkpoint.best_metric='top5'.*language_modeling"):
    validate_config(config)


def test_the_training_launcher_names_a_missing_field(tmp_path):
  path = tmp_path / "no_accumulation.py"
  path.write_text("from configs import digits_perceiver\n\n\ndef get_config():\n"
                  "  config = digits_perceiver.get_config('tiny')\n"
                  "  del config.grad_accum_steps\n  return config\n")
  result = subprocess.run([sys.executable, "-m", "experiments.train", f"--config={path}",
                           f"--workdir={tmp_path / 'work'}"], cwd=REPO, capture_output=True,
                          text=True, timeout=300, check=False)
  assert result.returncode != 0
  assert "ValueError: config.grad_accum_steps is missing" in result.stderr
  assert not os.path.exists(tmp_path / "work")


def _check_data_fits_model(config, input_shape, tmp_path):
  """The data section reads features the dataset has, at the shapes and classes of the model."""
  data, model = config.data, config.model
  data_config.check_config(data)
  assert data.task == DATA_TASKS[model.task] or data.task == "array"  # Any classifier's input.
  features = tfds.builder(data.name, data_dir=str(tmp_path)).info.features  # Offline.
  if data.task == "image_classification":
    stored = features[data.image_feature].shape
    assert tuple(data.image_size or stored[:2]) == input_shape[:2]  # None: the stored size.
    channels = input_shape[2]
    assert stored[-1] == channels
    assert data.mean is None or len(data.mean) == len(data.std) == channels
  elif data.task == "point_cloud":
    channels = 6 if data.point_cloud.use_normals else 3
    assert input_shape == (data.point_cloud.num_points, channels)
    stored = features[data.point_cloud.points_feature].shape
    assert stored[1] == 3 and stored[0] >= data.point_cloud.num_points  # No repeated points.
  elif data.task == "audio":
    assert data.audio.num_samples == input_shape[0]
    assert len(features[data.audio.feature].shape) == 1  # Mono samples.
  elif data.task == "multimodal":  # input_shape {'image': [T, H, W, 3], 'audio': [S, 1], ...}
    settings = data.multimodal
    stored = features[settings.video_feature].shape
    assert (settings.image_size,) * 2 == input_shape["image"][1:3] or (
        settings.image_size is None and stored[1:3] == input_shape["image"][1:3])
    assert settings.num_frames == input_shape["image"][0]
    assert settings.num_frames * settings.audio_samples_per_frame == input_shape["audio"][0]
  elif data.task == "optical_flow":
    stored = features[data.flow.flow_feature].shape
    assert tuple(data.flow.crop_size or stored[:2]) == input_shape[1:3] == model.image_size
    assert len(data.flow.frame_features) == input_shape[0] == 2
  elif data.task == "array":
    stored = features[data.array.feature].shape
    dims, patch = data.array.crop_size or stored[:-1], data.array.patch_size or (1,) * len(dims)
    grid = tuple(n // p for n, p in zip(dims, patch))
    assert grid + (int(np.prod(patch)) * stored[-1],) == input_shape
    assert data.array.mean is None or len(data.array.mean) == len(data.array.std) == stored[-1]
  elif model.task == "language_modeling":
    assert data.max_seq_len == input_shape[0] + 1  # Inputs and next-byte targets.
  else:
    assert data.max_seq_len == input_shape[0]
  names = {"image_classification": [data.image_feature], "text_mlm": [data.text_feature],
           "text_classification": list(data.text_features),
           "point_cloud": [name for _, name in point_cloud_ops.fields(data)],
           "audio": [data.audio.feature],
           "multimodal": [data.multimodal.video_feature, data.multimodal.audio_feature],
           "optical_flow": list(data.flow.frame_features) + [data.flow.flow_feature],
           "array": [data.array.feature]}[data.task]
  assert set(names) <= set(features.keys())
  if data.task == "array" and data.array.target == "regression":
    assert int(np.prod(features[data.label_feature].shape)) == model.num_classes  # Outputs.
  elif "num_classes" in model:
    assert features[data.label_feature].num_classes == model.num_classes


@pytest.mark.parametrize("name, arg", ALL)
def test_config_is_valid_and_its_model_builds_at_the_data_shapes(name, arg, tmp_path):
  config = _config(name, arg)
  validate_config(config, 8)
  make_objective(config)
  _, schedule = optim.make_optimizer(config.optimizer, config.num_train_steps)
  peak = max(float(schedule(step)) for step in np.linspace(0, config.num_train_steps, 101))
  np.testing.assert_allclose(peak, config.optimizer.learning_rate, rtol=1e-2)
  model = tasks.build(config.model)
  inputs = tasks.example_inputs(config.model, 1)
  input_shape = (tuple(inputs.shape[1:]) if not isinstance(inputs, dict)
                 else {name: tuple(x.shape[1:]) for name, x in inputs.items()})
  _check_data_fits_model(config, input_shape, tmp_path)
  output_shape = stats(model, input_shape).output_shape
  if "num_classes" in config.model:
    label_shape = output_shape["label"] if isinstance(output_shape, dict) else output_shape
    assert label_shape == (config.model.num_classes,)
  if (name, arg) not in NO_ABSTRACT_INIT:
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), inputs)
    assert count_params(variables) == param_count(model, input_shape)


@pytest.mark.parametrize("name, arg, millions", [
    ("imagenet_perceiver", "", 44.9),  # Perceiver paper, ImageNet.
    ("imagenet_perceiver_io", "fourier", 48.4),  # Perceiver IO paper, ImageNet table.
    ("imagenet_perceiver_io", "learned", 62.3),
    ("imagenet_perceiver_io", "conv", 48.6),
    ("mlm_bytes_perceiver_io", "", 201.1)])  # Perceiver IO paper, byte-level GLUE model.
def test_paper_configs_have_the_papers_parameter_counts(name, arg, millions):
  config = _config(name, arg)
  shape = tasks.example_inputs(config.model, 1).shape[1:]
  assert round(param_count(tasks.build(config.model), shape) / 1e6, 1) == millions


@pytest.mark.parametrize("name, arg, examples, epochs", [
    ("cifar10_perceiver", "", CIFAR10_TRAIN, 10), ("cifar10_perceiver_io", "", CIFAR10_TRAIN, 10),
    ("imagenet_perceiver", "", IMAGENET_TRAIN, 120),
    ("imagenet_perceiver_io", "conv", IMAGENET_TRAIN, 110),
    ("glue_bytes_perceiver_io", "mrpc", 3668, 10),
    ("glue_bytes_perceiver_io", "mnli", 392_702, 10)])
def test_run_lengths_are_the_recipes_epochs(name, arg, examples, epochs):
  config = _config(name, arg)
  seen = config.num_train_steps * config.batch_size
  assert seen <= epochs * examples < seen + config.batch_size


def _learning_rates(config, steps):
  _, schedule = optim.make_optimizer(config.optimizer, config.num_train_steps)
  return np.array([float(schedule(step)) for step in steps])


def test_perceiver_imagenet_step_schedule():
  config = _config("imagenet_perceiver", "")
  assert (config.batch_size, config.optimizer.name) == (1024, "lamb")
  t = config.num_train_steps
  boundaries = [int(f * t) for f in (0.7, 0.85, 0.95)]  # Epochs 84, 102 and 114 of 120.
  steps = [0] + [b + d for b in boundaries for d in (-1, 0)]
  np.testing.assert_allclose(_learning_rates(config, steps),
                             [4e-3, 4e-3, 4e-4, 4e-4, 4e-5, 4e-5, 4e-6], rtol=1e-5)


@pytest.mark.parametrize("variant", ["fourier", "learned", "conv"])
def test_perceiver_io_imagenet_constant_then_cosine(variant):
  config = _config("imagenet_perceiver_io", variant)
  t = config.num_train_steps
  rates = _learning_rates(config, [0, t // 2, 3 * t // 4, t])
  np.testing.assert_allclose(rates, [2e-3, 2e-3, 1e-3, 0.0], rtol=1e-3, atol=1e-9)
  assert config.optimizer.clip_norm == 10.0 and config.optimizer.eps == 1e-6


def test_byte_mlm_warm_up_then_cosine():
  config = _config("mlm_bytes_perceiver_io", "")
  rates = _learning_rates(config, [0, 500, 1000, config.num_train_steps])
  np.testing.assert_allclose(rates, [0.0, 6.25e-4, 1.25e-3, 0.0], rtol=1e-5, atol=1e-9)
  assert (config.num_train_steps, config.mlm.mask_prob, config.model.dtype) == (
      500_000, 0.15, "bfloat16")
