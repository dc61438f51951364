"""The audio data task, the synthetic_audio builder and the audio_classification objective:
crops, pads, seeded augmentation, int16 scaling, multi-label rows and loss against numpy, the
tiny config trained 2 steps, Speech Commands shapes on mock data, and fields named in errors."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import common, speech_commands_perceiver_io, synthetic_audio_perceiver_io
from experiments import learning
from perceiver_jax.data import audio_ops, data_config, input_pipeline
from perceiver_jax.data.datasets import synthetic_audio
from perceiver_jax.data.tensorflow_cpu import tf
from perceiver_jax.train import trainer
from perceiver_jax.train.experiment import validate_config
from perceiver_jax.train.objectives import make_objective
from tfds_offline import build, forbid_downloads


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> str:
  """A data_dir holding the 36 / 24-clip `synthetic_audio/tiny` build."""
  path = tmp_path_factory.mktemp("audio_tfds")
  build("synthetic_audio/tiny", path)
  return str(path)


def _tiny_config(data_dir):
  config = synthetic_audio_perceiver_io.get_config("tiny")
  config.data.data_dir = data_dir
  return config


def _rows(builder, config, train, seeds, index=0):
  """Test record `index` preprocessed with each of `seeds`, as numpy."""
  fn = audio_ops.preprocess(builder, config.data, train)
  record = next(iter(builder.as_dataset(split="test", shuffle_files=False).skip(index)))
  return [{k: v.numpy() for k, v in fn(record, tf.constant(seed, tf.int64)).items()}
          for seed in seeds]


def test_tiny_build_holds_the_deterministic_clips_of_every_split(tiny_dir):
  builder = tfds.builder("synthetic_audio/tiny", data_dir=tiny_dir)
  assert {s: builder.info.splits[s].num_examples for s in ("train", "test")} == {
      "train": 36, "test": 24}
  for split in ("train", "test"):
    examples = list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))
    for index, example in enumerate(examples):
      samples, label = synthetic_audio.clip(split, index)
      np.testing.assert_array_equal(example["audio"], samples)
      assert example["label"] == label and example["labels"].tolist() == [label]
  again, _ = synthetic_audio.clip("test", 3)
  np.testing.assert_array_equal(again, examples[3]["audio"])
  assert not np.array_equal(synthetic_audio.clip("train", 3)[0], again)


def test_every_kind_occurs_and_gives_a_bounded_event():
  labels = [synthetic_audio.clip("train", i)[1] for i in range(80)]
  assert len(synthetic_audio.KINDS) >= 10
  assert set(labels) == set(range(len(synthetic_audio.KINDS)))
  rng = np.random.default_rng(0)
  for kind in synthetic_audio.KINDS:
    event = synthetic_audio._event(kind, rng, 2000)  # pylint: disable=protected-access
    assert event.shape == (2000,) and np.all(np.isfinite(event))
    assert np.max(np.abs(event)) == pytest.approx(1.0), kind
  samples, _ = synthetic_audio.clip("test", 0)
  assert samples.dtype == np.int16 and samples.shape == (synthetic_audio.NUM_SAMPLES,)


def test_int16_is_scaled_to_minus_one_one_and_floats_kept():
  ints = tf.constant([-32768, 0, 16384, 32767], tf.int16)
  np.testing.assert_allclose(audio_ops.to_float(ints).numpy(), [-1.0, 0.0, 0.5, 32767 / 32768])
  np.testing.assert_array_equal(audio_ops.to_float(tf.constant([0.25, -2.0])).numpy(),
                                [0.25, -2.0])


def test_crops_pads_and_eval_windows():
  samples = tf.range(10, dtype=tf.float32)
  np.testing.assert_array_equal(audio_ops.crop_or_pad(samples, 4, 3).numpy(), [3, 4, 5, 6])
  np.testing.assert_array_equal(audio_ops.crop_or_pad(samples[:3], 5, 0).numpy(),
                                [0, 1, 2, 0, 0])
  np.testing.assert_array_equal(audio_ops.eval_crop(samples, 4, "center").numpy(), [3, 4, 5, 6])
  np.testing.assert_array_equal(audio_ops.eval_crop(samples, 4, "start").numpy(), [0, 1, 2, 3])
  np.testing.assert_array_equal(audio_ops.eval_crop(samples, 12, "center").numpy(),
                                list(range(10)) + [0, 0])
  starts = set()
  for seed in range(40):
    window = audio_ops.random_crop(samples, 4, tf.constant([seed, 1], tf.int64)).numpy()
    np.testing.assert_array_equal(window, window[0] + np.arange(4))  # A contiguous window.
    np.testing.assert_array_equal(
        window, audio_ops.random_crop(samples, 4, tf.constant([seed, 1], tf.int64)).numpy())
    starts.add(int(window[0]))
  assert starts == set(range(7))  # Every offset in [0, 10 - 4].


def test_gain_and_noise_are_seeded_and_evaluation_is_unaugmented(tiny_dir):
  builder = tfds.builder("synthetic_audio/tiny", data_dir=tiny_dir)
  config = _tiny_config(tiny_dir)
  config.data.audio.update(num_samples=synthetic_audio.NUM_SAMPLES, gain_db=6.0)
  clean, _ = synthetic_audio.clip("test", 0)
  clean = clean / 32768.0
  gained = _rows(builder, config, True, [[1, 2], [1, 2], [3, 4]])
  np.testing.assert_array_equal(gained[0]["audio"], gained[1]["audio"])  # Same seed.
  gains = [np.dot(row["audio"], clean) / np.dot(clean, clean) for row in gained]
  for row, gain in zip(gained, gains):
    np.testing.assert_allclose(row["audio"], gain * clean, rtol=1e-5, atol=1e-7)
    assert 10 ** -0.3 <= gain <= 10 ** 0.3  # +-6 dB.
  assert abs(gains[0] - gains[2]) > 1e-3  # Another seed, another gain.
  config.data.audio.update(gain_db=0.0, noise_std=0.1)
  noisy = _rows(builder, config, True, [[1, 2], [5, 6]])
  residual = noisy[0]["audio"] - clean
  assert 0 < np.std(residual) <= 0.1 and abs(np.mean(residual)) < 0.01
  assert not np.allclose(noisy[0]["audio"], _rows(builder, config, True, [[7, 8]])[0]["audio"])
  config.data.audio.update(num_samples=4000, gain_db=6.0)
  for row in _rows(builder, config, False, [[0, 0], [9, 9]]):
    np.testing.assert_allclose(row["audio"], clean[48:4048], rtol=1e-6)  # The centre, as is.
    assert row["label"] == synthetic_audio.clip("test", 0)[1] and row["mask"] == 1.0


def test_multi_label_pipeline_gives_multi_hot_labels(tiny_dir):
  config = _tiny_config(tiny_dir)
  config.data.update(label_feature="labels")
  config.data.audio.multi_label = True
  batch = next(iter(input_pipeline.make_eval_iterator(config.data, global_batch_size=8,
                                                      num_classes=11)))
  labels = [synthetic_audio.clip("test", i)[1] for i in range(8)]
  np.testing.assert_array_equal(batch["labels"], np.eye(11)[labels])
  assert batch["audio"].shape == (8, 1024) and "label" not in batch
  with pytest.raises(ValueError, match="has 11 classes.*config.model.num_classes=10"):
    input_pipeline.make_eval_iterator(config.data, global_batch_size=8, num_classes=10)
  config.data.label_feature = "label"
  with pytest.raises(ValueError, match="config.data.label_feature='label'.*multi-hot"):
    input_pipeline.make_eval_iterator(config.data, global_batch_size=8, num_classes=11)


def test_multi_hot_from_a_sequence_of_ids_or_a_multi_hot_vector():
  multi_hot = lambda labels, is_sequence: audio_ops.multi_hot(labels, 4, is_sequence).numpy()
  np.testing.assert_array_equal(multi_hot(tf.constant([2, 0, 2], tf.int64), True), [1, 0, 1, 0])
  np.testing.assert_array_equal(multi_hot(tf.zeros([0], tf.int64), True), [0, 0, 0, 0])
  np.testing.assert_array_equal(multi_hot(tf.constant([0, 1, 1, 0], tf.int32), False),
                                [0, 1, 1, 0])


def _audio_config(**data_audio):
  config = synthetic_audio_perceiver_io.get_config("tiny")
  config.data.audio.update(data_audio)
  config.label_smoothing = 0.0
  return config


def test_multi_label_loss_and_metrics_equal_a_hand_computation():
  objective = make_objective(_audio_config(multi_label=True))
  assert objective.metrics == ("loss", "precision_at_1", "label_accuracy")
  labels = np.zeros((3, 11), np.float32)
  labels[0, [1, 4]] = labels[1, 7] = labels[2, 0] = 1
  batch = {"audio": jnp.zeros((3, 1024)), "labels": jnp.asarray(labels),
           "mask": jnp.array([1.0, 1.0, 0.0])}
  inputs, kwargs, targets = objective.prepare(batch, None, True)
  assert inputs is batch["audio"] and kwargs == {}
  logits = np.random.default_rng(0).normal(size=(3, 11)).astype(np.float32) * 3
  logits[0, 4], logits[1, 2] = 10.0, 10.0  # Example 0's top class is a positive, 1's is not.
  loss, weight, metrics = objective.score(jnp.asarray(logits), targets)
  x = logits.astype(np.float64)
  per_example = np.sum(np.maximum(x, 0) - x * labels + np.log1p(np.exp(-np.abs(x))), -1)
  np.testing.assert_allclose(loss, per_example[:2].sum(), rtol=1e-5)
  assert float(weight) == 2.0 and float(metrics["precision_at_1"]) == 1.0
  agree = np.mean((logits > 0) == (labels > 0.5), -1)
  np.testing.assert_allclose(metrics["label_accuracy"], agree[:2].sum(), rtol=1e-6)


def test_single_label_audio_is_classification_with_accuracy_and_top5():
  objective = make_objective(_audio_config())
  assert objective.metrics == ("loss", "accuracy", "top5")
  logits = jnp.asarray(np.tile(np.arange(11, dtype=np.float32)[::-1], (3, 1)))  # Ranks 0..10.
  batch = {"audio": jnp.zeros((3, 1024)), "label": jnp.array([0, 3, 7]),
           "mask": jnp.array([1.0, 1.0, 0.0])}
  inputs, _, targets = objective.prepare(batch, None, False)
  assert inputs is batch["audio"]
  loss, weight, metrics = objective.score(logits, targets)
  log_probs = np.arange(11)[::-1] - np.log(np.sum(np.exp(np.arange(11.0))))
  np.testing.assert_allclose(loss, -log_probs[0] - log_probs[3], rtol=1e-5)
  assert (float(weight), float(metrics["accuracy"]), float(metrics["top5"])) == (2.0, 1.0, 2.0)


def test_tiny_config_trains_two_steps(tiny_dir, tmp_path):
  config = _tiny_config(tiny_dir)
  common.tiny_run(config)  # 2 steps of 16 clips.
  metrics = trainer.train_and_evaluate(config, str(tmp_path / "work"))
  assert np.isfinite(metrics["loss"]) and 0 <= metrics["accuracy"] <= 1
  with open(tmp_path / "work" / "metrics.jsonl") as f:
    records = [json.loads(line) for line in f]
  assert [(r["step"], r["split"]) for r in records if r["split"] == "eval"] == [(2, "eval")]


def test_speech_commands_batches_fit_the_model_on_mock_data(tmp_path):
  config = speech_commands_perceiver_io.get_config("tiny")
  config.data.data_dir = str(tmp_path)
  validate_config(config)
  with tfds.testing.mock_data(num_examples=8), forbid_downloads():
    batch = next(input_pipeline.make_train_iterator(config.data, global_batch_size=4, seed=0,
                                                    num_classes=12))
  assert batch["audio"].shape == (4, 16000) and batch["audio"].dtype == np.float32
  assert batch["label"].shape == (4,) and np.all((0 <= batch["label"]) & (batch["label"] < 12))
  assert 0 < np.abs(batch["audio"]).max() <= 2.1  # int16 in [-1, 1), +-6 dB, a little noise.


@pytest.mark.parametrize("field, value, match", [
    ("num_samples", 0, r"config.data.audio.num_samples must be an int >= 1"),
    ("eval_crop", "middle", r"config.data.audio.eval_crop must be one of \('center', 'start'\)"),
    ("gain_db", -1.0, "config.data.audio.gain_db must be a finite number >= 0"),
    ("noise_std", float("nan"), "config.data.audio.noise_std must be a finite number >= 0"),
    ("multi_label", "yes", "config.data.audio.multi_label must be True or False"),
    ("feature", "", "config.data.audio.feature must be the name of the waveform feature")])
def test_bad_audio_fields_are_named(field, value, match):
  config = data_config.default_config()
  with config.audio.ignore_type():
    config.audio[field] = value
  with pytest.raises(ValueError, match=match):
    data_config.check_config(config)


def test_fields_that_do_not_fit_the_model_or_data_are_named(tiny_dir):
  config = _tiny_config(tiny_dir)
  config.data.audio.num_samples = 2048
  with pytest.raises(ValueError, match=r"config.data.audio.num_samples=2048 must be the model's "
                                       r"config.model.num_samples=1024"):
    validate_config(config)
  for path, value in (("mixup.mixup_alpha", 0.2), ("label_smoothing", 0.1)):
    config = _tiny_config(tiny_dir)
    config.data.audio.multi_label = True
    section, field = path.split(".") if "." in path else (None, path)
    (config[section] if section else config)[field] = value
    with pytest.raises(ValueError, match=f"config.{path}"):
      validate_config(config)
  config = _tiny_config(tiny_dir)
  config.data.audio.feature = "waveform"
  with pytest.raises(ValueError, match=r"audio.feature='waveform' is not a feature"):
    input_pipeline.make_eval_iterator(config.data, global_batch_size=8)
  config.data.audio.feature = "label"
  with pytest.raises(ValueError, match=r"config.data.audio.feature='label'.*mono int16"):
    input_pipeline.make_eval_iterator(config.data, global_batch_size=8)


def test_synthetic_audio_baselines_on_the_tiny_build(tiny_dir):
  baselines = learning.synthetic_audio_baselines("synthetic_audio/tiny", tiny_dir)
  labels = np.array([synthetic_audio.clip("test", i)[1] for i in range(24)])
  assert baselines["majority_class"] == pytest.approx(np.bincount(labels).max() / 24)
  for name in ("nearest_centroid_raw", "logistic_regression_raw"):
    assert 0 <= baselines[name] <= 1 and baselines[name] * 24 == pytest.approx(
        round(baselines[name] * 24))
