"""Every experiment config and variant: it passes the trainer's checks, its model builds and
initialises (abstractly) at the data's shapes, its dataset's TFDS features fit the model, and
the paper configs reproduce the papers' parameter counts, run lengths and learning-rate
schedules. Training itself runs in tests/test_trainer.py (digits, MLM in bf16 on mock text)
and tests/test_fine_tuning.py (glue_bytes_perceiver_io:tiny from a converted checkpoint)."""

import glob
import importlib
import os

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from perceiver_jax import tasks
from perceiver_jax.data import data_config
from perceiver_jax.train import optim
import perceiver_jax.data.datasets  # pylint: disable=unused-import  # Registers our TFDS builders.
from perceiver_jax.train.experiment import validate_config
from perceiver_jax.nn.model_stats import count_params, param_count, stats
from perceiver_jax.train.objectives import make_objective

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = {
    "digits_perceiver": ("", "tiny"),
    "perceiver_ar_bytes": ("", "stdlib", "tiny"),
    "cifar10_perceiver": ("", "tiny"),
    "cifar10_perceiver_io": ("", "tiny"),
    "imagenet_perceiver": ("", "tiny"),
    "imagenet_perceiver_io": ("", "fourier", "learned", "conv", "tiny"),
    "mlm_bytes_perceiver_io": ("", "tiny"),
    "glue_bytes_perceiver_io": ("", "tiny", "cola", "sst2", "mrpc", "qqp", "mnli", "qnli",
                                "rte"),
}
ALL = [(name, variant) for name, variants in VARIANTS.items() for variant in variants]
# No abstract init for models that another variant's repeats (up to the number of classes).
NO_ABSTRACT_INIT = {("glue_bytes_perceiver_io", v) for v in VARIANTS["glue_bytes_perceiver_io"][2:]}
NO_ABSTRACT_INIT |= {("imagenet_perceiver_io", "fourier"), ("perceiver_ar_bytes", "stdlib")}
DATA_TASKS = {"perceiver_classification": "image_classification",
              "image_classification": "image_classification",
              "masked_language_modeling": "text_mlm", "language_modeling": "text_mlm",
              "sequence_classification": "text_classification"}
IMAGENET_TRAIN, CIFAR10_TRAIN = 1_281_167, 50_000


def _config(name, variant):
  return importlib.import_module(f"configs.{name}").get_config(variant)


def test_every_config_file_is_covered():
  files = {os.path.basename(path)[:-3] for path in glob.glob(os.path.join(REPO, "configs", "*.py"))}
  assert files - {"__init__"} == set(VARIANTS)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_unknown_variant_names_the_variants(name):
  with pytest.raises(ValueError, match=f"configs/{name}.py variants are"):
    _config(name, "nope")


def _check_data_fits_model(config, input_shape, tmp_path):
  """The data section reads features the dataset has, at the shapes and classes of the model."""
  data, model = config.data, config.model
  data_config.check_config(data)
  assert data.task == DATA_TASKS[model.task]
  features = tfds.builder(data.name, data_dir=str(tmp_path)).info.features  # Offline.
  if data.task == "image_classification":
    stored = features[data.image_feature].shape
    assert tuple(data.image_size or stored[:2]) == input_shape[:2]  # None: the stored size.
    channels = input_shape[2]
    assert stored[-1] == channels
    assert data.mean is None or len(data.mean) == len(data.std) == channels
  elif model.task == "language_modeling":
    assert data.max_seq_len == input_shape[0] + 1  # Inputs and next-byte targets.
  else:
    assert data.max_seq_len == input_shape[0]
  names = {"image_classification": [data.image_feature], "text_mlm": [data.text_feature],
           "text_classification": list(data.text_features)}[data.task]
  assert set(names) <= set(features.keys())
  if "num_classes" in model:
    assert features[data.label_feature].num_classes == model.num_classes


@pytest.mark.parametrize("name, variant", ALL)
def test_config_is_valid_and_its_model_builds_at_the_data_shapes(name, variant, tmp_path):
  config = _config(name, variant)
  validate_config(config, 8)
  make_objective(config)
  _, schedule = optim.make_optimizer(config.optimizer, config.num_train_steps)
  peak = max(float(schedule(step)) for step in np.linspace(0, config.num_train_steps, 101))
  np.testing.assert_allclose(peak, config.optimizer.learning_rate, rtol=1e-2)
  model = tasks.build(config.model)
  inputs = tasks.example_inputs(config.model, 1)
  input_shape = tuple(inputs.shape[1:])
  _check_data_fits_model(config, input_shape, tmp_path)
  output_shape = stats(model, input_shape).output_shape
  if "num_classes" in config.model:
    assert output_shape == (config.model.num_classes,)
  if (name, variant) not in NO_ABSTRACT_INIT:
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), inputs)
    assert count_params(variables) == param_count(model, input_shape)


@pytest.mark.parametrize("name, variant, millions", [
    ("imagenet_perceiver", "", 44.9),  # Perceiver paper, ImageNet.
    ("imagenet_perceiver_io", "fourier", 48.4),  # Perceiver IO paper, ImageNet table.
    ("imagenet_perceiver_io", "learned", 62.3),
    ("imagenet_perceiver_io", "conv", 48.6),
    ("mlm_bytes_perceiver_io", "", 201.1)])  # Perceiver IO paper, byte-level GLUE model.
def test_paper_configs_have_the_papers_parameter_counts(name, variant, millions):
  config = _config(name, variant)
  shape = tasks.example_inputs(config.model, 1).shape[1:]
  assert round(param_count(tasks.build(config.model), shape) / 1e6, 1) == millions


@pytest.mark.parametrize("name, variant, examples, epochs", [
    ("cifar10_perceiver", "", CIFAR10_TRAIN, 10), ("cifar10_perceiver_io", "", CIFAR10_TRAIN, 10),
    ("imagenet_perceiver", "", IMAGENET_TRAIN, 120),
    ("imagenet_perceiver_io", "conv", IMAGENET_TRAIN, 110),
    ("glue_bytes_perceiver_io", "mrpc", 3668, 10),
    ("glue_bytes_perceiver_io", "mnli", 392_702, 10)])
def test_run_lengths_are_the_recipes_epochs(name, variant, examples, epochs):
  config = _config(name, variant)
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
