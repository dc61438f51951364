"""The `array` data task: the synthetic_signals builder, array_ops on real numbers, the
pipeline's rows at 1-D and 3-D index dims, the Perceiver at other ranks, the regression
objective and two training steps of configs/signals_perceiver.py:tiny (the regression option
trains in experiments/learning.py's run 'signals_regression')."""

import json
import os
import re

from etils import epath
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import signals_perceiver
from perceiver_jax import tasks
from perceiver_jax.data import array_ops, data_config, input_pipeline
from perceiver_jax.data.datasets import synthetic_signals
from perceiver_jax.data.tensorflow_cpu import tf
from perceiver_jax.train import trainer
from perceiver_jax.train.experiment import validate_config
from perceiver_jax.train.objectives import make_objective
from tfds_offline import build

SEED = tf.constant([3, 4], tf.int64)


class ArrayTestVolumes(tfds.core.GeneratorBasedBuilder):
  """12 volumes [4, 5, 6, 2] of value 100 * example + flat index, labels example % 3."""

  VERSION = tfds.core.Version("1.0.0")
  pkg_dir_path = epath.Path(os.path.dirname(os.path.abspath(__file__)))  # Not in a package.

  def _info(self):
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
        "volume": tfds.features.Tensor(shape=(4, 5, 6, 2), dtype=np.float32),
        "label": tfds.features.ClassLabel(num_classes=3)}), disable_shuffling=True)

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples(), "test": self._generate_examples()}

  def _generate_examples(self):
    for i in range(12):
      yield i, {"volume": volume(i), "label": i % 3}


def volume(i):
  return (100.0 * i + np.arange(240, dtype=np.float32)).reshape(4, 5, 6, 2)


@pytest.fixture(scope="module")
def signals_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("signals_tfds")
  build("synthetic_signals/small", path)
  return str(path)


def _read(data_dir, split):
  builder = tfds.builder("synthetic_signals/small", data_dir=data_dir)
  return list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))


def _data(data_dir, arg="tiny", **array):
  config = signals_perceiver.get_config(arg).data
  config.data_dir = data_dir
  config.array.update(array)
  return config


# --- the builder -------------------------------------------------------------------------------


def test_builder_is_deterministic_balanced_and_holds_the_generated_examples(signals_dir):
  train, test = _read(signals_dir, "train"), _read(signals_dir, "test")
  assert (len(train), len(test)) == (240, 120)
  for split, examples in (("train", train), ("test", test)):
    labels = np.array([e["label"] for e in examples])
    np.testing.assert_array_equal(np.bincount(labels), [len(examples) // 12] * 12)
    for i in (0, 7, len(examples) - 1):
      signal, label, frequency = synthetic_signals.example(split, i)
      np.testing.assert_array_equal(examples[i]["signal"], signal)
      assert (examples[i]["label"], examples[i]["frequency"]) == (label, frequency)
  frequencies = np.array([e["frequency"] for e in train])
  assert 2 <= frequencies.min() and frequencies.max() <= 16 and frequencies.std() > 3
  assert train[0]["signal"].shape == (256, 1) and train[0]["signal"].dtype == np.float32
  # Kinds differ in shape: a square wave sits near +-A, a pulse train mostly near 0.
  square, pulses = train[1]["signal"][:, 0], train[7]["signal"][:, 0]
  assert np.median(np.abs(square)) > 3 * np.median(np.abs(pulses))
  assert not np.array_equal(train[0]["signal"], test[0]["signal"])


# --- ops on real numbers -----------------------------------------------------------------------


def test_normalize_is_per_channel_mean_and_std():
  array = np.array([[1.0, 10.0], [3.0, 30.0]], np.float32)
  np.testing.assert_allclose(array_ops.normalize(array, (2.0, 20.0), (0.5, 10.0)),
                             [[-2.0, -1.0], [2.0, 1.0]])
  np.testing.assert_array_equal(array_ops.normalize(array, None, None), array)


def test_shift_moves_the_array_exactly_at_any_rank():
  signal = np.arange(10, dtype=np.float32)[:, None]
  np.testing.assert_array_equal(array_ops.shift(signal, [3]), np.roll(signal, 3, 0))
  np.testing.assert_array_equal(array_ops.shift(signal, [3], "zeros")[:, 0],
                                [0, 0, 0, 0, 1, 2, 3, 4, 5, 6])
  np.testing.assert_array_equal(array_ops.shift(signal, [-2], "zeros")[:, 0],
                                [2, 3, 4, 5, 6, 7, 8, 9, 0, 0])
  cube = volume(1)
  np.testing.assert_array_equal(array_ops.shift(cube, [1, -2, 3]),
                                np.roll(cube, (1, -2, 3), (0, 1, 2)))
  zeros = array_ops.shift(cube, [1, -2, 0], "zeros").numpy()
  np.testing.assert_array_equal(zeros[1:, :3], cube[:-1, 2:])
  assert not zeros[0].any() and not zeros[:, 3:].any()


def test_random_shift_and_crop_are_seeded_windows_of_the_input():
  signal = np.arange(64, dtype=np.float32)[:, None]
  shifted = array_ops.random_shift(signal, [5], SEED).numpy()
  np.testing.assert_array_equal(shifted, array_ops.random_shift(signal, [5], SEED))
  offset = int(shifted[0, 0])  # = -shift mod 64
  shift = -offset if offset < 32 else 64 - offset
  assert -5 <= shift <= 5
  np.testing.assert_array_equal(shifted, np.roll(signal, shift, 0))
  shifts = {int(array_ops.random_shift(signal, [2], tf.constant([s, 0]))[0, 0])
            for s in range(40)}
  assert shifts == {62, 63, 0, 1, 2}  # Every shift in [-2, 2] occurs.
  cropped = array_ops.random_crop(signal, [16], SEED).numpy()
  start = int(cropped[0, 0])
  np.testing.assert_array_equal(cropped[:, 0], np.arange(start, start + 16))
  np.testing.assert_array_equal(array_ops.center_crop(signal, [16])[:, 0], np.arange(24, 40))
  cube = volume(0)
  np.testing.assert_array_equal(array_ops.center_crop(cube, [2, 3, 4]), cube[1:3, 1:4, 1:5])
  window = array_ops.random_crop(cube, [2, 3, 4], SEED).numpy()
  d, h, w = (int(i) for i in np.argwhere(cube == window[0, 0, 0, 0])[0][:3])
  np.testing.assert_array_equal(window, cube[d:d + 2, h:h + 3, w:w + 4])


def test_patch_turns_windows_into_channels():
  signal = np.arange(16, dtype=np.float32)[:, None]
  np.testing.assert_array_equal(array_ops.patch(signal, [4]),
                                np.arange(16).reshape(4, 4))
  cube = volume(0)  # [4, 5, 6, 2]
  patches = array_ops.patch(cube[:, :4], [2, 2, 3]).numpy()
  assert patches.shape == (2, 2, 2, 24)
  np.testing.assert_array_equal(patches[1, 0, 1], cube[2:4, 0:2, 3:6].reshape(-1))
  with pytest.raises(ValueError, match=r"size \(2, 2, 3\) must divide the index dims"):
    array_ops.patch(cube, [2, 2, 3])


def test_scale_and_noise_are_seeded():
  ones = np.ones((4096, 1), np.float32)
  scaled = array_ops.random_scale(ones, (0.5, 0.7), SEED).numpy()
  assert 0.5 <= scaled[0, 0] < 0.7 and np.all(scaled == scaled[0, 0])
  noisy = array_ops.add_noise(ones, 0.1, SEED).numpy()
  np.testing.assert_array_equal(noisy, array_ops.add_noise(ones, 0.1, SEED))
  assert abs(np.std(noisy - 1) - 0.1) < 0.01 and abs(np.mean(noisy - 1)) < 0.01


# --- the pipeline ------------------------------------------------------------------------------


def test_eval_rows_are_the_centre_cropped_normalised_signals(signals_dir):
  config = _data(signals_dir, mean=(0.5,), std=(2.0,), noise_std=1.0, scale_range=(2.0, 3.0))
  batch = next(iter(input_pipeline.make_eval_iterator(config, global_batch_size=40,
                                                      num_classes=12)))
  assert batch["array"].shape == (40, 16, 8) and batch["array"].dtype == np.float32
  assert batch["label"].dtype == np.int32
  test = _read(signals_dir, "test")
  np.testing.assert_allclose(batch["array"], [((e["signal"][64:192] - 0.5) / 2.0).reshape(16, 8)
                                              for e in test[:40]], rtol=1e-6)
  np.testing.assert_array_equal(batch["label"], [e["label"] for e in test[:40]])


def test_train_rows_are_augmented_and_seeded(signals_dir):
  config = _data(signals_dir, crop_size=None, max_shift=(8,), noise_std=0.0, patch_size=None)
  batches = [next(input_pipeline.make_train_iterator(config, global_batch_size=16, seed=seed))
             for seed in (0, 0, 1)]
  np.testing.assert_array_equal(batches[0]["array"], batches[1]["array"])
  assert not np.array_equal(batches[0]["array"], batches[2]["array"])
  row, label = batches[0]["array"][0], batches[0]["label"][0]
  assert row.shape == (256, 1)
  # Some train signal, shifted by at most 8 samples and scaled by 0.8-1.25 (normalised).
  train = _read(signals_dir, "train")
  matches = []
  for example in train:
    for shift in range(-8, 9):
      moved = np.roll(example["signal"], shift, 0) / signals_perceiver.SIGNAL_STD
      factor = np.sum(row * moved) / np.sum(moved * moved)
      if np.allclose(row, factor * moved, atol=1e-4):
        matches.append((example["label"], factor))
  assert len(matches) == 1 and matches[0][0] == label and 0.8 <= matches[0][1] < 1.25


def test_regression_rows_hold_the_float_target(signals_dir):
  config = _data(signals_dir, "regression,tiny")
  batch = next(iter(input_pipeline.make_eval_iterator(config, global_batch_size=40,
                                                      num_classes=1)))
  assert "label" not in batch and batch["target"].shape == (40, 1)
  np.testing.assert_array_equal(batch["target"][:, 0],
                                [e["frequency"] for e in _read(signals_dir, "test")[:40]])


def test_rank_3_arrays_crop_shift_and_batch(tmp_path):
  build("array_test_volumes", tmp_path)
  config = data_config.default_config()
  config.update(name="array_test_volumes", data_dir=str(tmp_path), task="array",
                label_feature="label", shuffle_buffer=4)
  config.array.update(feature="volume", crop_size=(2, 3, 4), max_shift=(1, 1, 1))
  train = next(input_pipeline.make_train_iterator(config, global_batch_size=4, seed=0))
  assert train["array"].shape == (4, 2, 3, 4, 2)
  evaluated = next(iter(input_pipeline.make_eval_iterator(config, global_batch_size=12)))
  np.testing.assert_array_equal(evaluated["array"], [volume(i)[1:3, 1:4, 1:5]
                                                     for i in range(12)])
  np.testing.assert_array_equal(evaluated["label"], np.arange(12) % 3)


@pytest.mark.parametrize("field, value, match", [
    ("crop_size", (2, 3), r"config.data.array.crop_size=\(2, 3\) needs one entry per index dim"),
    ("crop_size", (5, 3, 4), r"config.data.array.crop_size=\(5, 3, 4\) exceeds the index dims"),
    ("max_shift", (1,), r"config.data.array.max_shift=\(1,\) needs one entry per index dim"),
    ("mean", (0.0,), r"config.data.array.mean=\(0.0,\) needs one value per channel \(2"),
    ("patch_size", (2, 2, 4), r"config.data.array.patch_size=\(2, 2, 4\) must divide the index"),
    ("feature", "label", r"config.data.array.feature='label' is not an array"),
    ("label_feature", "volume", "config.data.label_feature='volume' is not an integer class")])
def test_bad_array_fields_are_named_before_reading(tmp_path, field, value, match):
  build("array_test_volumes", tmp_path)
  config = data_config.default_config()
  config.update(name="array_test_volumes", data_dir=str(tmp_path), task="array")
  config.array.update(feature="volume")
  (config if field == "label_feature" else config.array)[field] = value
  with pytest.raises(ValueError, match=match):
    input_pipeline.make_eval_iterator(config, global_batch_size=12)


@pytest.mark.parametrize("field, value", [
    ("target", "classes"), ("loss", "l2"), ("std", (0.0,)), ("crop_size", (0,)),
    ("max_shift", (-1,)), ("shift_mode", "wrap"), ("scale_range", (1.2, 0.8)),
    ("noise_std", -0.1), ("feature", ""), ("patch_size", (0,))])
def test_check_config_names_a_bad_array_field(field, value):
  config = data_config.default_config()
  with config.array.ignore_type():
    config.array[field] = value
  with pytest.raises(ValueError, match=f"config.data.array.{field} must be"):
    data_config.check_config(config)


# --- model and objective -----------------------------------------------------------------------


def test_perceiver_takes_volumes():  # Signals [16, 8]: the tiny config trains below.
  config = tasks.tiny_config("perceiver_classification", "cifar10_study")
  config.input_shape = (4, 4, 4, 2)
  config.fourier.max_resolution = None  # The index dims.
  model = tasks.build(config)
  inputs = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, 4, 2))
  variables = model.init(jax.random.PRNGKey(1), inputs)
  loss = lambda v: -jnp.sum(jax.nn.log_softmax(model.apply(v, inputs))[:, 3])
  value, grads = jax.jit(jax.value_and_grad(loss))(variables)
  leaves = jax.tree_util.tree_leaves(grads)
  assert np.isfinite(value) and all(np.isfinite(g).all() for g in leaves)
  assert max(float(np.abs(g).max()) for g in leaves) > 0


@pytest.mark.parametrize("input_shape", [(16, 2), (4, 4, 4, 2)])
def test_max_resolution_of_another_rank_names_the_fields(input_shape):
  config = tasks.tiny_config("perceiver_classification", "cifar10_study")
  config.input_shape = input_shape
  config.fourier.max_resolution = (8, 8)
  with pytest.raises(ValueError, match=r"config.model.fourier.max_resolution=\(8, 8\) needs one "
                     + re.escape(f"entry per index dim of config.model.input_shape={input_shape}")):
    tasks.build(config)


@pytest.mark.parametrize("loss", ["mse", "l1"])
def test_regression_scores_are_masked_sums_of_mse_and_mae(loss):
  config = signals_perceiver.get_config("regression,tiny")
  config.model.num_classes = 2
  config.data.array.loss = loss
  objective = make_objective(config)
  assert objective.metrics == ("loss", "mse", "mae")
  batch = {"array": jnp.zeros((3, 4, 1)), "target": jnp.array([[1.0, 2.0], [0.0, 0.0],
                                                                [5.0, 5.0]]),
           "mask": jnp.array([1.0, 1.0, 0.0])}
  inputs, kwargs, targets = objective.prepare(batch, jax.random.PRNGKey(0), True)
  assert inputs.shape == (3, 4, 1) and kwargs == {}
  predictions = jnp.array([[2.0, 0.0], [0.5, -1.5], [0.0, 0.0]])
  loss_sum, weight, metrics = objective.score(predictions, targets)
  mse, mae = (1 + 4) / 2 + (0.25 + 2.25) / 2, (1 + 2) / 2 + (0.5 + 1.5) / 2
  np.testing.assert_allclose([weight, metrics["mse"], metrics["mae"]], [2.0, mse, mae])
  np.testing.assert_allclose(loss_sum, mse if loss == "mse" else mae)
  config.model.num_classes = 3
  with pytest.raises(ValueError, match="config.model.num_classes=3 outputs; set it to 2"):
    make_objective(config).prepare(batch, None, True)


def test_regression_rejects_classification_settings():
  config = signals_perceiver.get_config("regression,tiny")
  validate_config(config)
  config.label_smoothing = 0.1
  with pytest.raises(ValueError, match="config.label_smoothing=0.1 applies to classification"):
    validate_config(config)
  config = signals_perceiver.get_config("regression,tiny")
  config.checkpoint.best_metric = "accuracy"
  with pytest.raises(ValueError, match="best_metric='accuracy' is not a metric"):
    validate_config(config)


# --- training ----------------------------------------------------------------------------------


def test_the_tiny_config_trains_two_steps(signals_dir, tmp_path):
  config = signals_perceiver.get_config("tiny")
  config.data.data_dir = signals_dir
  metrics = trainer.train_and_evaluate(config, str(tmp_path))
  with open(os.path.join(tmp_path, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  assert [(r["step"], r["split"]) for r in records if r["split"] == "eval"] == [(2, "eval")]
  assert np.isfinite(metrics["loss"]) and 0 <= metrics["accuracy"] <= 1
