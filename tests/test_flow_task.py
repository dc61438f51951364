"""Optical flow end to end: the synthetic_flow and mpi_sintel builders, .flo files, the
optical_flow data task's crops, flips, scaling and jitter, the end-point-error objective
(subsampled too), the colour wheel, two training steps of the tiny config and its plots, and
the ValueErrors naming bad fields."""

import io
import os
import zipfile

import jax
import jax.numpy as jnp
import matplotlib.image
import numpy as np
import pytest

import tfds_offline
from configs import synthetic_flow_perceiver_io
from experiments import plots
from experiments.plot import plot_run
from perceiver_jax.data import data_config, flo, flow_ops, input_pipeline
from perceiver_jax.data.datasets import synthetic_flow
from perceiver_jax.data.tensorflow_cpu import tf, tfds
from perceiver_jax.train import trainer
from perceiver_jax.train.objectives import make_objective


@pytest.fixture(scope="module")
def flow_data_dir(tmp_path_factory) -> str:
  """A data_dir with synthetic_flow/tiny (16x16 frames, 8 train / 4 test) built offline."""
  path = tmp_path_factory.mktemp("flow_tfds")
  tfds_offline.build("synthetic_flow/tiny", path)
  return str(path)


def _tiny_config(data_dir):
  config = synthetic_flow_perceiver_io.get_config("tiny")
  config.data.data_dir = data_dir
  return config


def _examples(data_dir, split="test"):
  builder = tfds.builder("synthetic_flow/tiny", data_dir=data_dir)
  return list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))


def test_synthetic_flow_is_seeded_and_frame2_is_frame1_moved_by_the_flow(flow_data_dir):
  examples = _examples(flow_data_dir)
  assert len(examples) == 4 and len(_examples(flow_data_dir, "train")) == 8
  again = synthetic_flow.make_example(np.random.default_rng([synthetic_flow.SEEDS["test"], 2]), 16)
  for key in ("frame1", "frame2", "flow"):
    np.testing.assert_array_equal(examples[2][key], again[key])
  for example in examples:
    frame1, frame2, flow = (example[k].astype(np.float64) for k in ("frame1", "frame2", "flow"))
    assert 0.3 < np.sqrt((flow ** 2).sum(-1)).mean() < 8
    rows, cols = np.mgrid[:16, :16].astype(np.float64)
    y, x = rows + flow[..., 1], cols + flow[..., 0]
    inside = (y > 1) & (y < 14) & (x > 1) & (x < 14)  # Away from the borders.
    warped = synthetic_flow.bilinear(frame2, y, x)  # frame2 at p + flow(p): frame1 at p.
    moved = np.abs(warped - frame1)[inside].mean()
    backwards = np.abs(synthetic_flow.bilinear(frame2, rows - flow[..., 1], cols - flow[..., 0])
                       - frame1)[inside].mean()
    assert moved < 2.5 and 3 * moved < min(backwards, np.abs(frame2 - frame1)[inside].mean())


def test_flo_files_round_trip_and_malformed_ones_raise(tmp_path):
  flow = np.random.default_rng(0).normal(size=(3, 5, 2)).astype(np.float32)
  flo.write_flo(str(tmp_path / "a.flo"), flow)
  data = (tmp_path / "a.flo").read_bytes()
  assert data[:4] == b"PIEH" and np.frombuffer(data[4:12], "<i4").tolist() == [5, 3]
  np.testing.assert_array_equal(flo.read_flo(str(tmp_path / "a.flo")), flow)
  with pytest.raises(ValueError, match="tag 202021.25"):
    flo.decode_flo(b"\0" * 40)
  with pytest.raises(ValueError, match="does not hold a 3x5 flow"):
    flo.decode_flo(data[:-4])


def _png(image):
  return tf.io.encode_png(image).numpy()


def test_sintel_builder_reads_the_official_archive_layout(tmp_path):
  rng = np.random.default_rng(0)
  images, flows = {}, {}
  with zipfile.ZipFile(tmp_path / "MPI-Sintel-complete.zip", "w") as archive:
    for scene in ("bamboo_1", "alley_1"):
      for number in (1, 2, 3):
        for render_pass in ("clean", "final"):
          image = rng.integers(0, 256, (6, 8, 3), np.uint8)
          images[render_pass, scene, number] = image
          archive.writestr(f"training/{render_pass}/{scene}/frame_{number:04d}.png", _png(image))
        if number < 3:
          flows[scene, number] = rng.normal(size=(6, 8, 2)).astype(np.float32)
          archive.writestr(f"training/flow/{scene}/frame_{number:04d}.flo",
                           flo.encode_flo(flows[scene, number]))
  for render_pass in ("clean", "final"):
    builder = tfds.builder(f"mpi_sintel/{render_pass}", data_dir=str(tmp_path / "tfds"))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=str(tmp_path)))
    examples = list(tfds.as_numpy(builder.as_dataset(split="train", shuffle_files=False)))
    keys = [(e["scene"].decode(), int(e["frame"])) for e in examples]
    assert keys == [("alley_1", 1), ("alley_1", 2), ("bamboo_1", 1), ("bamboo_1", 2)]
    for (scene, number), example in zip(keys, examples):
      np.testing.assert_array_equal(example["frame1"], images[render_pass, scene, number])
      np.testing.assert_array_equal(example["frame2"], images[render_pass, scene, number + 1])
      np.testing.assert_array_equal(example["flow"], flows[scene, number])


def _preprocess(data_dir, train, **flow_settings):
  config = _tiny_config(data_dir).data
  config.flow.update(flow_settings)
  data_config.check_config(config)
  builder = tfds.builder(config.name, data_dir=data_dir)
  return flow_ops.preprocess(builder, config, train)


def _transform(array, top, left, size, flip_x, flip_y, flow=False):
  """array [..., H, W, C] cropped at (top, left) then flipped; a flow's signs follow."""
  out = array[..., top:top + size, left:left + size, :]
  if flip_x:
    out = out[..., :, ::-1, :] * (np.array([-1.0, 1.0]) if flow else 1.0)
  if flip_y:
    out = out[..., ::-1, :, :] * (np.array([1.0, -1.0]) if flow else 1.0)
  return out


def test_train_crops_and_flips_keep_frames_and_flow_consistent(flow_data_dir):
  record = _examples(flow_data_dir, "train")[0]
  frames = np.stack([record["frame1"], record["frame2"]]).astype(np.float32) / 255 * 2 - 1
  flow = record["flow"]
  row_of = _preprocess(flow_data_dir, True, crop_size=(8, 8), flip_horizontal=True,
                       flip_vertical=True)
  seen = set()
  for seed in range(12):
    row = row_of({k: tf.constant(v) for k, v in record.items()}, tf.constant([seed, 1], tf.int64))
    assert row["frames"].shape == (2, 8, 8, 3) and row["flow"].shape == (8, 8, 2)
    matches = [(t, l, fx, fy) for t in range(9) for l in range(9) for fx in (0, 1)
               for fy in (0, 1) if np.allclose(_transform(frames, t, l, 8, fx, fy),
                                                row["frames"].numpy(), atol=1e-6)]
    assert len(matches) == 1
    top, left, flip_x, flip_y = matches[0]
    np.testing.assert_array_equal(row["flow"].numpy(),
                                  _transform(flow, top, left, 8, flip_x, flip_y, flow=True))
    seen.add((flip_x, flip_y))
  assert len(seen) >= 3  # The flips are random.
  evaluate = _preprocess(flow_data_dir, False, crop_size=(8, 8), flip_horizontal=True)
  row = evaluate({k: tf.constant(v) for k, v in record.items()}, tf.zeros([2], tf.int64))
  np.testing.assert_allclose(row["frames"].numpy(), frames[:, 4:12, 4:12], atol=1e-6)
  np.testing.assert_array_equal(row["flow"].numpy(), flow[4:12, 4:12])


def test_scaling_scales_the_flow_and_jitter_treats_both_frames_alike():
  frames = tf.random.stateless_uniform([2, 10, 12, 3], [0, 1])
  flow = tf.ones([10, 12, 2]) * tf.constant([1.0, 2.0])
  for seed in range(4):
    scaled_frames, scaled = flow_ops.random_scale(frames, flow, tf.constant([seed, 0]), 0.5,
                                                  (9, 9))
    height, width = scaled.shape[:2]
    assert height >= 9 and width >= 9 and scaled_frames.shape == (2, height, width, 3)
    np.testing.assert_allclose(scaled.numpy()[0, 0], [width / 12, 2 * height / 10], rtol=1e-5)
  same = tf.stack([frames[0], frames[0]])
  jittered = flow_ops.photometric_jitter(same, tf.constant([3, 4]), 0.2, 0.3).numpy()
  np.testing.assert_array_equal(jittered[0], jittered[1])
  assert not np.allclose(jittered, same.numpy()) and 0 <= jittered.min() <= jittered.max() <= 1


def _batch(rng, size=(16, 16), batch=3):
  return {"frames": rng.uniform(-1, 1, (batch, 2) + size + (3,)).astype(np.float32),
          "flow": rng.normal(size=(batch,) + size + (2,)).astype(np.float32),
          "mask": np.array([1.0, 0.0, 1.0], np.float32)}


def test_objective_is_the_mean_end_point_error_and_subsamples_pixels(flow_data_dir):
  config = _tiny_config(flow_data_dir)
  objective = make_objective(config)
  assert objective.metrics == ("loss", "epe")
  rng = np.random.default_rng(0)
  batch = _batch(rng)
  outputs = rng.normal(size=(3, 16, 16, 2)).astype(np.float32)
  inputs, kwargs, targets = objective.prepare(batch, jax.random.PRNGKey(0), False)
  assert kwargs == {} and inputs.shape == (3, 2, 16, 16, 3)
  loss, weight, metrics = objective.score(jnp.asarray(outputs), targets)
  per_example = np.sqrt(((outputs - batch["flow"]) ** 2).sum(-1)).mean(axis=(1, 2))
  np.testing.assert_allclose(loss, per_example[0] + per_example[2], rtol=1e-5)
  assert weight == 2 and metrics["epe"] == loss
  # Training decodes config.flow.train_points random pixels per example and scores those.
  inputs, kwargs, targets = objective.prepare(batch, jax.random.PRNGKey(1), True)
  points = np.asarray(kwargs["subsampled_points"])
  assert points.shape == (3, 64) and all(len(set(p)) == 64 for p in points)
  assert not np.array_equal(points[0], points[1]) and points.max() < 256
  flat = batch["flow"].reshape(3, 256, 2)
  np.testing.assert_array_equal(targets["flow"], np.take_along_axis(flat, points[..., None], 1))
  sampled = rng.normal(size=(3, 64, 2)).astype(np.float32)  # The model's [b, k, 2].
  loss, weight, _ = objective.score(jnp.asarray(sampled), targets)
  hand = np.sqrt(((sampled - targets["flow"]) ** 2).sum(-1)).mean(-1)
  np.testing.assert_allclose(loss, hand[0] + hand[2], rtol=1e-5)
  assert weight == 2


def test_colour_wheel_codes_direction_as_hue_and_magnitude_as_saturation(tmp_path):
  flow = np.array([[[0, 0], [1, 0], [-1, 0], [0, 1]], [[0, -1], [0.5, 0], [2, 0], [0, 0]]])
  rgb = plots.flow_to_rgb(flow, max_magnitude=1.0).astype(int)
  assert plots.flow_to_rgb(flow).dtype == np.uint8
  expected = [[[255, 255, 255], [255, 0, 0], [0, 209, 255], [255, 229, 0]],  # still right left down
              [[88, 0, 255], [255, 127, 127], [191, 0, 0], [255, 255, 255]]]  # up, half, beyond
  np.testing.assert_allclose(rgb, expected, atol=1)
  assert plots.colour_wheel().shape == (55, 3)
  frames = np.zeros((2, 2, 4, 4, 3))
  path = plots.plot_flow_examples(frames, np.ones((2, 4, 4, 2)), np.zeros((2, 4, 4, 2)),
                                  str(tmp_path / "flow.png"))
  assert matplotlib.image.imread(path).shape[-1] in (3, 4)


def test_tiny_config_trains_two_steps_and_plots_its_flow(flow_data_dir, tmp_path):
  config = _tiny_config(flow_data_dir)
  workdir = str(tmp_path / "work")
  metrics = trainer.train_and_evaluate(config, workdir)
  assert 0 < metrics["epe"] < 10 and metrics["loss"] == metrics["epe"]
  paths = plot_run(config, workdir, num_images=2)
  assert [os.path.basename(p) for p in paths] == ["learning_curves.png", "flow.png"]
  assert matplotlib.image.imread(paths[1]).shape[0] > 50
  batch = next(iter(input_pipeline.make_eval_iterator(config.data, global_batch_size=8)))
  assert batch["frames"].shape == (8, 2, 16, 16, 3) and batch["mask"].tolist() == [1] * 4 + [0] * 4
  assert -1 <= batch["frames"].min() < 0 < batch["frames"].max() <= 1


@pytest.mark.parametrize("field, value, match", [
    ("frame_features", ("frame1",), "config.data.flow.frame_features must be two feature"),
    ("flow_feature", "", "config.data.flow.flow_feature must be a feature name"),
    ("crop_size", (8, 0), r"config.data.flow.crop_size must be None \(full frames\)"),
    ("max_scale", 0.2, "config.data.flow.max_scale must be 0 when crop_size is None"),
    ("max_scale", -0.1, r"config.data.flow.max_scale must be in \[0, 1\)"),
    ("flip_vertical", 1, "config.data.flow.flip_vertical must be True or False"),
    ("brightness", 2.0, r"config.data.flow.brightness must be in \[0, 1\]"),
    ("contrast", 1.0, r"config.data.flow.contrast must be in \[0, 1\)")])
def test_bad_flow_data_fields_raise_naming_them(field, value, match):
  config = data_config.default_config()
  with config.flow.ignore_type():
    config.flow[field] = value
  with pytest.raises(ValueError, match=match):
    data_config.check_config(config)


def test_bad_sizes_and_train_points_raise_naming_the_field(flow_data_dir):
  with pytest.raises(ValueError, match=r"config.data.flow.crop_size=\(20, 8\) is larger"):
    _preprocess(flow_data_dir, True, crop_size=(20, 8))
  sintel = data_config.default_config()
  sintel.name = "mpi_sintel/clean"
  with pytest.raises(ValueError, match="frames vary in size; set config.data.flow.crop_size"):
    flow_ops.preprocess(tfds.builder(sintel.name, data_dir=flow_data_dir), sintel, False)
  config = _tiny_config(flow_data_dir)
  config.flow.train_points = 257
  with pytest.raises(ValueError, match=r"config.flow.train_points=257 must be 0.*\[1, 256\]"):
    make_objective(config)
  config.flow.train_points = 0
  batch = _batch(np.random.default_rng(0), size=(8, 8))
  with pytest.raises(ValueError, match="set config.data.flow.crop_size to the model's"):
    make_objective(config).prepare(batch, jax.random.PRNGKey(0), False)
