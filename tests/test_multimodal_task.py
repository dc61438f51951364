"""The `multimodal` data task, the synthetic_av builder and the multimodal autoencoding
objective: deterministic clips, aligned temporal crops, the label always masked in evaluation,
the objective's loss against train.losses on hand data (subsampled too), a tiny config trained
for 2 steps, the baselines of experiments/learning and the config errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import synthetic_av_perceiver_io
from experiments import av_baselines
from perceiver_jax import tasks
from perceiver_jax.data import data_config, input_pipeline, multimodal_ops
from perceiver_jax.data.datasets import synthetic_av
from perceiver_jax.data.tensorflow_cpu import tf, tfds
from perceiver_jax.train import trainer
from perceiver_jax.train.losses import multimodal_autoencoding_loss
from perceiver_jax.train.objectives import make_objective


@pytest.fixture(scope="module")
def av_data_dir(tmp_path_factory) -> str:
  """A data_dir holding synthetic_av/tiny (48 / 16 clips), built offline."""
  path = str(tmp_path_factory.mktemp("synthetic_av"))
  tfds.builder("synthetic_av/tiny", data_dir=path).download_and_prepare()
  return path


def _config(data_dir, arg="tiny"):
  config = synthetic_av_perceiver_io.get_config(arg)
  config.data.data_dir = data_dir
  config.data.num_threads = 1
  return config


def test_clips_are_a_function_of_split_and_index(av_data_dir, tmp_path):
  small = synthetic_av.SyntheticAv(
      config=synthetic_av.SyntheticAvConfig(name="small", num_train=5, num_test=2),
      data_dir=str(tmp_path))
  small.download_and_prepare()
  assert small.info.splits["train"].num_examples == 5
  read = lambda builder, split: list(tfds.as_numpy(builder.as_dataset(split=split)))
  tiny = read(tfds.builder("synthetic_av/tiny", data_dir=av_data_dir), "train")
  for a, b in zip(read(small, "train"), tiny):  # The first clips of both builds agree.
    np.testing.assert_array_equal(a["video"], b["video"])
    np.testing.assert_array_equal(a["audio"], b["audio"])
  rng = np.random.default_rng((2, 1))
  label = int(rng.integers(10))
  video, audio = synthetic_av.make_clip(rng, label)
  test = read(small, "test")[1]
  assert int(test["label"]) == label
  np.testing.assert_array_equal(test["video"], video)
  np.testing.assert_array_equal(test["audio"], audio)
  assert {int(x["label"]) for x in tiny} > {0, 1}  # Several classes.


def _ramp_clip(frames=6, size=2, samples_per_frame=3):
  """Frame f's pixels are 10 f; audio sample s is s (int16)."""
  video = tf.constant(np.broadcast_to(10 * np.arange(frames, dtype=np.uint8)[:, None, None, None],
                                      (frames, size, size, 3)))
  audio = tf.constant(np.arange(frames * samples_per_frame, dtype=np.int16))
  return video, audio


def test_temporal_crop_keeps_video_and_audio_aligned():
  video, audio = _ramp_clip()
  starts = set()
  for i in range(12):
    clip, sound = multimodal_ops.temporal_crop(video, audio, 4, 3, tf.constant([i, 7], tf.int64))
    start = int(clip[0, 0, 0, 0]) // 10
    starts.add(start)
    np.testing.assert_array_equal(clip[:, 0, 0, 0].numpy(), 10 * np.arange(start, start + 4))
    np.testing.assert_array_equal(sound.numpy(), np.arange(3 * start, 3 * start + 12))
  assert starts == {0, 1, 2}
  clip, sound = multimodal_ops.temporal_crop(video, audio[:10], 4, 3)  # Eval; short audio.
  np.testing.assert_array_equal(clip[:, 0, 0, 0].numpy(), [0, 10, 20, 30])
  np.testing.assert_array_equal(sound.numpy(), list(range(10)) + [0, 0])


def test_preprocess_scales_and_crops_records_with_their_audio():
  video, audio = _ramp_clip()
  config = data_config.default_config()
  config.multimodal.update(num_frames=4, audio_samples_per_frame=3, flip=True)
  record = {"video": video, "audio": audio, "label": tf.constant(3, tf.int64)}
  row = multimodal_ops.make_preprocess(None, config, True)(record, tf.constant([5, 1], tf.int64))
  start = int(round(float(row["image"][0, 0, 0, 0]) * 255)) // 10
  np.testing.assert_allclose(row["image"][:, 0, 0, 0], 10 * np.arange(start, start + 4) / 255,
                             rtol=1e-6)
  np.testing.assert_allclose(row["audio"][:, 0], np.arange(3 * start, 3 * start + 12) / 32768)
  assert row["audio"].shape == (12, 1) and int(row["label"]) == 3
  config.multimodal.image_size = 4
  row = multimodal_ops.make_preprocess(None, config, False)(record, tf.zeros([2], tf.int64))
  assert row["image"].shape == (4, 4, 4, 3) and float(row["image"][0, 0, 0, 0]) == 0.0


def test_pipeline_batches_of_synthetic_av(av_data_dir):
  config = _config(av_data_dir, "full")
  config.data.name = "synthetic_av/tiny"
  batches = input_pipeline.make_train_iterator(config.data, global_batch_size=8, seed=0,
                                               num_classes=10)
  batch = next(batches)
  assert batch["image"].shape == (8, 4, 16, 16, 3) and batch["audio"].shape == (8, 512, 1)
  assert 0 <= batch["image"].min() and batch["image"].max() <= 1
  assert 0 < np.abs(batch["audio"]).max() <= 1
  again = next(input_pipeline.make_train_iterator(config.data, global_batch_size=8, seed=0))
  np.testing.assert_array_equal(batch["audio"], again["audio"])
  evaluation = list(input_pipeline.make_eval_iterator(config.data, global_batch_size=16))
  stored = next(iter(tfds.as_numpy(tfds.builder("synthetic_av/tiny", data_dir=av_data_dir)
                                   .as_dataset(split="test"))))
  np.testing.assert_allclose(evaluation[0]["image"][0], stored["video"][:4] / 255.0, rtol=1e-6)
  np.testing.assert_allclose(evaluation[0]["audio"][0, :, 0], stored["audio"][:512] / 32768.0)


def _batch(config, size=2, seed=0):
  rng = np.random.default_rng(seed)
  model = config.model
  frames, side = model.num_frames, model.image_size
  return {"image": rng.uniform(size=(size, frames, side, side, 3)).astype(np.float32),
          "audio": rng.uniform(-1, 1, (size, frames * model.audio_samples_per_frame, 1))
                   .astype(np.float32),
          "label": rng.integers(0, model.num_classes, size).astype(np.int32),
          "mask": np.ones(size, np.float32)}


def _model(config):
  model = tasks.build(config.model)
  init = jax.jit(model.init)  # One program (run op by op, each op compiles).
  variables = init({"params": jax.random.PRNGKey(0), "masking": jax.random.PRNGKey(1)},
                   tasks.example_inputs(config.model, 1))
  return model, variables


def test_evaluation_always_masks_the_label_input():
  config = _config(None)
  objective = make_objective(config)
  model, variables = _model(config)
  batch = _batch(config)
  rolled = dict(batch, label=(batch["label"] + 1) % config.model.num_classes)

  def outputs(objective, model, train):
    @jax.jit
    def label_logits(batch):
      inputs, kwargs, _ = objective.prepare(batch, jax.random.PRNGKey(3), train)
      kwargs.pop("subsampled_points", None)  # Decode everything, as evaluation does.
      return model.apply(variables, inputs, rngs={"masking": jax.random.PRNGKey(2)},
                         **kwargs)["label"]
    return label_logits(batch), label_logits(rolled)

  np.testing.assert_array_equal(*outputs(objective, model, False))
  config.model.mask_probs.label = 0.0  # Training shows the label: it reaches the outputs.
  assert not np.allclose(*outputs(make_objective(config), tasks.build(config.model), True))


def test_loss_is_the_multimodal_autoencoding_loss_on_the_decoded_points():
  config = _config(None)
  config.autoencoding.update(image_points=5, audio_patches=2)
  config.model.loss_weights = dict(image=0.5, audio=2.0, label=0.25)
  objective = make_objective(config)
  batch = _batch(config, size=3)
  inputs, kwargs, targets = objective.prepare(batch, jax.random.PRNGKey(0), True)
  points = kwargs["subsampled_points"]
  assert len(set(np.asarray(points["image"]).tolist())) == 5
  np.testing.assert_array_equal(targets["image"],
                                batch["image"].reshape(3, -1, 3)[:, points["image"]])
  patches = batch["audio"].reshape(3, -1, config.model.samples_per_patch)[:, points["audio"]]
  np.testing.assert_array_equal(targets["audio"], patches.reshape(3, -1))
  np.testing.assert_array_equal(inputs["label"], jax.nn.one_hot(batch["label"], 10))
  rng = np.random.default_rng(1)  # Outputs of the subsampled decode's shapes.
  outputs = {"image": rng.normal(size=(3, 5, 3)), "audio": rng.normal(size=(3, 2 * 16)),
             "label": rng.normal(size=(3, 10))}
  loss, weight, metrics = objective.score(outputs, targets)
  expected = multimodal_autoencoding_loss(config.model.loss_weights, outputs, targets)
  np.testing.assert_allclose(loss / weight, expected, rtol=1e-5)
  image_l1 = np.abs(np.asarray(outputs["image"]) - targets["image"]).mean()
  np.testing.assert_allclose(metrics["image_l1"] / weight, image_l1, rtol=1e-5)
  # Padding rows (mask 0) add nothing.
  padded = dict(targets, mask=jnp.array([1.0, 1.0, 0.0]))
  loss_2, weight_2, _ = objective.score(outputs, padded)
  first_two = jax.tree_util.tree_map(lambda x: x[:2], (outputs, targets))
  assert float(weight_2) == 2.0
  np.testing.assert_allclose(loss_2 / 2, multimodal_autoencoding_loss(
      config.model.loss_weights, *first_two), rtol=1e-5)


def test_tiny_config_trains_two_steps(av_data_dir, tmp_path):
  config = _config(av_data_dir)
  metrics = trainer.train_and_evaluate(config, str(tmp_path / "work"))
  assert set(metrics) >= {"loss", "image_l1", "audio_l1", "reconstruction_l1", "accuracy"}
  assert np.isfinite(metrics["loss"]) and metrics["reconstruction_l1"] > 0


def test_baselines_on_tiny_clips(av_data_dir):
  baselines = av_baselines.synthetic_av_baselines("synthetic_av/tiny", data_dir=av_data_dir)
  train = av_baselines.clips("synthetic_av/tiny", "train", 4, 128, av_data_dir)
  test = av_baselines.clips("synthetic_av/tiny", "test", 4, 128, av_data_dir)
  np.testing.assert_allclose(baselines["mean_image_l1"],
                             np.abs(test[0] - train[0].mean(0)).mean(), rtol=1e-5)
  assert test[1].shape == (16, 512) and np.abs(test[1]).max() <= 1
  np.testing.assert_allclose(baselines["mean_reconstruction_l1"],
                             baselines["mean_image_l1"] + baselines["mean_audio_l1"])
  for name in ("nearest_centroid_accuracy", "logistic_regression_accuracy", "majority_accuracy"):
    assert 0 <= baselines[name] <= 1


@pytest.mark.parametrize("path, value, match", [
    ("data.multimodal.num_frames", 0, r"config.data.multimodal.num_frames must be an int >= 1"),
    ("data.multimodal.flip", "yes", "config.data.multimodal.flip must be True or False"),
    ("data.multimodal.image_size", 0, "config.data.multimodal.image_size must be None"),
    ("data.multimodal.audio_feature", "", "config.data.multimodal.audio_feature must be a"),
    ("data.multimodal.num_frames", 3, r"config.data.multimodal.num_frames=3 must equal "
                                      r"config.model.num_frames=2"),
    ("autoencoding.image_points", 200, r"config.autoencoding.image_points must be .* 128"),
    ("autoencoding.audio_patches", -1, r"config.autoencoding.audio_patches must be"),
    ("model.mask_probs", {"audio": 0.0}, r"config.model.mask_probs must name 'label'")])
def test_bad_fields_raise_value_errors_naming_them(path, value, match):
  config = _config(None)
  *sections, field = path.split(".")
  section = config
  for name in sections:
    section = section[name]
  with section.ignore_type():
    section[field] = value
  with pytest.raises(ValueError, match=match):
    data_config.check_config(config.data)
    make_objective(config)


def test_a_missing_feature_is_named(av_data_dir):
  config = _config(av_data_dir)
  config.data.multimodal.video_feature = "frames"
  with pytest.raises(ValueError, match="multimodal.video_feature='frames' is not a feature"):
    input_pipeline.make_train_iterator(config.data, global_batch_size=8, seed=0)


def test_kinetics_config_reads_mock_kinetics700_av_at_the_models_shapes(tmp_path):
  from configs import kinetics_multimodal_perceiver_io  # pylint: disable=import-outside-toplevel
  config = kinetics_multimodal_perceiver_io.get_config("tiny")
  config.data.num_threads = 1
  model = config.model
  with tfds.testing.mock_data(num_examples=4, data_dir=str(tmp_path)):
    batch = next(input_pipeline.make_train_iterator(config.data, global_batch_size=2, seed=0,
                                                    num_classes=model.num_classes))
  assert batch["image"].shape == (2, model.num_frames, model.image_size, model.image_size, 3)
  assert batch["audio"].shape == (2, model.num_frames * model.audio_samples_per_frame, 1)
  assert batch["label"].shape == (2,) and batch["label"].max() < 700
