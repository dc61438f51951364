"""The point_cloud data task: its ops, the synthetic_solids and modelnet40 builders, the OFF
meshes they sample, the config checks and a 2-step run of configs/solids_perceiver_io.py:tiny."""

import zipfile

import numpy as np
import pytest

from configs import solids_perceiver_io
from experiments import learning
from perceiver_jax.data import data_config, input_pipeline, point_cloud_ops
from perceiver_jax.data.datasets import meshes, modelnet40, synthetic_solids
from perceiver_jax.data.tensorflow_cpu import tf, tfds
from perceiver_jax.train import trainer
from perceiver_jax.train.experiment import validate_config

SEED = tf.constant([3, 4], tf.int64)
CUBE = ("OFF\n8 6 0\n" + "".join(f"{x} {y} {z}\n" for x in (0, 1) for y in (0, 1) for z in (0, 1))
        + "4 0 1 3 2\n4 4 6 7 5\n4 0 4 5 1\n4 2 3 7 6\n4 0 2 6 4\n4 1 5 7 3\n")


@pytest.fixture(scope="module")
def solids_dir(tmp_path_factory):
  """A data_dir holding synthetic_solids/small (36 train / 24 test, 64 points)."""
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  tfds.builder("synthetic_solids/small", data_dir=data_dir).download_and_prepare()
  return data_dir


def _data(data_dir, **point_cloud):
  config = data_config.default_config()
  config.update(name="synthetic_solids/small", data_dir=data_dir, task="point_cloud",
                shuffle_buffer=64)
  config.point_cloud.update(num_points=32, **point_cloud)
  return config


def _cloud(n=50, seed=0):
  rng = np.random.default_rng(seed)
  normals = rng.normal(size=(n, 3))
  normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
  return tf.constant(np.concatenate([rng.normal(size=(n, 3)), normals], -1), tf.float32)


def test_solids_build_deterministically_with_balanced_labels(solids_dir):
  builder = tfds.builder("synthetic_solids/small", data_dir=solids_dir)
  assert builder.info.features["label"].names == list(synthetic_solids.CLASSES)
  test = list(tfds.as_numpy(builder.as_dataset(split="test")))
  assert [e["label"] for e in test] == [i % 12 for i in range(24)]
  again = synthetic_solids.solid(synthetic_solids.SPLIT_SEEDS["test"], 5, 64)
  np.testing.assert_array_equal(test[5]["points"], again["points"])
  np.testing.assert_allclose(np.linalg.norm(test[5]["normals"], axis=-1), 1.0, atol=1e-5)
  other = synthetic_solids.solid(synthetic_solids.SPLIT_SEEDS["train"], 5, 64)
  assert not np.allclose(other["points"], again["points"])  # Splits differ.


def test_rotation_keeps_the_up_coordinate_exactly_and_the_norms():
  cloud = _cloud()
  for axis in range(3):
    turned = point_cloud_ops.random_rotation(cloud, SEED, axis).numpy()
    np.testing.assert_array_equal(turned[:, [axis, axis + 3]], cloud.numpy()[:, [axis, axis + 3]])
    for block in (slice(0, 3), slice(3, 6)):
      np.testing.assert_allclose(np.linalg.norm(turned[:, block], axis=-1),
                                 np.linalg.norm(cloud.numpy()[:, block], axis=-1), rtol=1e-5)
    assert not np.allclose(turned, cloud.numpy())
  quarter = point_cloud_ops.rotate(tf.constant([[1.0, 0.0, 5.0]]), np.pi / 2, 2).numpy()
  np.testing.assert_allclose(quarter, [[0.0, 1.0, 5.0]], atol=1e-6)


def test_scaling_and_clipped_jitter_change_only_xyz_by_their_amounts():
  cloud = _cloud()
  scaled = point_cloud_ops.random_scale(cloud, SEED, 0.8, 1.25).numpy()
  factor = scaled[0, 0] / cloud.numpy()[0, 0]
  assert 0.8 <= factor <= 1.25 and factor != 1.0
  np.testing.assert_allclose(scaled[:, :3], factor * cloud.numpy()[:, :3], rtol=1e-5)
  np.testing.assert_array_equal(scaled[:, 3:], cloud.numpy()[:, 3:])
  zeros = tf.zeros([20_000, 3])
  noise = point_cloud_ops.jitter(zeros, SEED, 0.01, 1.0).numpy()
  assert noise.std() == pytest.approx(0.01, rel=0.03)
  clipped = point_cloud_ops.jitter(zeros, SEED, 1.0, 0.05).numpy()
  assert np.abs(clipped).max() == pytest.approx(0.05)
  assert np.mean(np.abs(clipped) == np.float32(0.05)) > 0.9  # |N(0, 1)| > 0.05: 96%.


def test_resampling_counts_and_dropout_by_the_first_point():
  fewer = point_cloud_ops.resample_indices(25, 10, SEED).numpy()
  assert sorted(np.bincount(fewer, minlength=10)) == [2] * 5 + [3] * 5
  subset = point_cloud_ops.resample_indices(30, 100, SEED).numpy()
  assert len(set(subset)) == 30 and subset.max() < 100
  np.testing.assert_array_equal(point_cloud_ops.resample_indices(4, 10).numpy(), [0, 2, 5, 7])
  np.testing.assert_array_equal(point_cloud_ops.resample_indices(4, 2).numpy(), [0, 0, 1, 1])
  cloud = _cloud(2000)
  dropped = point_cloud_ops.random_dropout(cloud, SEED, 0.9).numpy()
  changed = np.any(dropped != cloud.numpy(), axis=-1)
  assert 0 < changed.mean() < 0.9
  np.testing.assert_array_equal(dropped[changed], np.repeat(cloud.numpy()[:1], changed.sum(), 0))


def test_normalize_centres_into_the_unit_sphere_and_keeps_normals():
  cloud = _cloud() * tf.constant([3.0, 3.0, 3.0, 1.0, 1.0, 1.0]) + tf.constant([5.0] * 3
                                                                              + [0.0] * 3)
  out = point_cloud_ops.normalize(cloud).numpy()
  np.testing.assert_allclose(out[:, :3].mean(0), 0.0, atol=1e-5)
  assert np.linalg.norm(out[:, :3], axis=-1).max() == pytest.approx(1.0)
  np.testing.assert_array_equal(out[:, 3:], cloud.numpy()[:, 3:])


def test_pipeline_rows_eval_is_deterministic_and_normals_add_channels(solids_dir):
  config = _data(solids_dir, use_normals=True, rotate=True, scale_range=(0.8, 1.2),
                 jitter_std=0.01, dropout_max_rate=0.5)
  train = next(input_pipeline.make_train_iterator(config, global_batch_size=4, seed=0,
                                                  num_classes=12))
  assert train["points"].shape == (4, 32, 6) and train["points"].dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(train["points"][..., 3:], axis=-1), 1.0, atol=1e-5)
  again = next(input_pipeline.make_train_iterator(config, global_batch_size=4, seed=0))
  np.testing.assert_array_equal(train["points"], again["points"])
  evals = [list(input_pipeline.make_eval_iterator(config, global_batch_size=16))
           for _ in range(2)]
  assert len(evals[0]) == 2 and evals[0][1]["mask"].sum() == 8  # 24 rows, padded.
  for first, second in zip(*evals):
    np.testing.assert_array_equal(first["points"], second["points"])
  stored = next(iter(tfds.as_numpy(tfds.builder("synthetic_solids/small", data_dir=solids_dir)
                                   .as_dataset(split="test"))))
  expected = point_cloud_ops.normalize(tf.constant(stored["points"])).numpy()[::2]
  np.testing.assert_allclose(evals[0][0]["points"][0, :, :3], expected, atol=1e-6)
  assert evals[0][0]["label"][0] == stored["label"]


def test_off_parsing_with_a_glued_header_and_polygons():
  vertices, faces = meshes.parse_off(CUBE.encode())
  assert vertices.shape == (8, 3) and faces.shape == (12, 3)  # Quads split in two.
  glued, glued_faces = meshes.parse_off("OFF3 1 0\n# a comment\n0 0 0\n1 0 0\n0 2 0\n3 0 1 2\n")
  np.testing.assert_array_equal(glued[2], [0, 2, 0])
  np.testing.assert_array_equal(glued_faces, [[0, 1, 2]])
  with pytest.raises(ValueError, match="first line must start with 'OFF'"):
    meshes.parse_off("PLY\n")
  with pytest.raises(ValueError, match="declares 3 vertices and 1 faces"):
    meshes.parse_off("OFF\n3 1 0\n0 0 0\n")


def test_surface_sampling_is_area_weighted_on_the_faces():
  vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 3, 1], [3, 0, 1.0]])
  faces = np.array([[0, 1, 2], [3, 4, 5]])  # Areas 0.5 and 4.5, normals +-z.
  points, normals = meshes.sample_surface(vertices, faces, 4000, np.random.default_rng(0))
  upper = points[:, 2] == 1.0
  assert upper.mean() == pytest.approx(0.9, abs=0.02)
  assert np.all(points[:, :2].sum(-1) <= np.where(upper, 3, 1) + 1e-5)
  np.testing.assert_allclose(np.abs(normals[:, 2]), 1.0)


def test_modelnet40_builds_from_the_archive_with_sorted_class_labels(tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  with zipfile.ZipFile(manual / modelnet40.ARCHIVE, "w") as archive:
    archive.writestr("ModelNet40/chair/train/chair_0001.off", CUBE)
    archive.writestr("ModelNet40/chair/test/chair_0002.off", CUBE.replace("OFF\n", "OFF"))
    archive.writestr("ModelNet40/airplane/train/airplane_0001.off", CUBE)
    archive.writestr("ModelNet40/xbox/train/xbox_0001.off", CUBE.replace("OFF\n", "OFF"))
    archive.writestr("ModelNet40/README.txt", "not a mesh")
  builder = modelnet40.Modelnet40(config=modelnet40.ModelNet40Config(name="t", num_points=16),
                                  data_dir=str(tmp_path / "data"))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  train = list(tfds.as_numpy(builder.as_dataset(split="train")))
  assert [(e["path"].decode(), e["label"]) for e in train] == [
      ("ModelNet40/airplane/train/airplane_0001.off", 0),
      ("ModelNet40/chair/train/chair_0001.off", 8), ("ModelNet40/xbox/train/xbox_0001.off", 39)]
  assert builder.info.splits["test"].num_examples == 1
  points = train[1]["points"]
  assert points.shape == (16, 3) and points.min() >= 0 and points.max() <= 1
  assert np.all(np.any(np.isclose(points, 0, atol=1e-6) | np.isclose(points, 1, atol=1e-6), -1))
  expected = modelnet40.point_cloud(train[1]["path"].decode(), CUBE.encode(), 16)
  np.testing.assert_array_equal(points, expected["points"])
  with pytest.raises(ValueError, match="unknown class 'chairs'"):
    modelnet40.archive_meshes(["ModelNet40/chairs/train/chairs_0001.off"], "train")


@pytest.mark.parametrize("field, value, match", [
    ("num_points", 0, "config.data.point_cloud.num_points must be an int >= 1"),
    ("up_axis", 3, "config.data.point_cloud.up_axis must be 0, 1 or 2"),
    ("scale_range", (1.2, 0.8), "config.data.point_cloud.scale_range must be"),
    ("jitter_std", -0.1, "config.data.point_cloud.jitter_std must be >= 0"),
    ("jitter_clip", 0.0, "config.data.point_cloud.jitter_clip must be > 0"),
    ("dropout_max_rate", 1.0, r"config.data.point_cloud.dropout_max_rate must be in \[0, 1\)")])
def test_bad_point_cloud_fields_raise_naming_them(field, value, match):
  config = solids_perceiver_io.get_config("tiny")
  with config.data.point_cloud.ignore_type():
    config.data.point_cloud[field] = value
  with pytest.raises(ValueError, match=match):
    validate_config(config)


def test_the_model_and_the_rows_must_agree():
  config = solids_perceiver_io.get_config("tiny")
  config.data.point_cloud.use_normals = True
  with pytest.raises(ValueError, match="use_normals=True gives 6 channels.*num_point_channels=3"):
    validate_config(config)
  config.model.num_point_channels = 6
  validate_config(config)
  config.data.point_cloud.num_points = 8
  with pytest.raises(ValueError, match="point_cloud.num_points=8 differs from config.model"):
    validate_config(config)
  config.data.task = "image_classification"
  with pytest.raises(ValueError, match="config.data.task='image_classification' does not feed"):
    validate_config(config)


def test_tiny_config_trains_two_steps(solids_dir, tmp_path):
  config = solids_perceiver_io.get_config("tiny")
  config.data.data_dir = solids_dir
  metrics = trainer.train_and_evaluate(config, str(tmp_path / "work"))
  assert np.isfinite(metrics["loss"]) and 0 <= metrics["accuracy"] <= 1


def test_radius_histogram_baseline_on_the_small_solids(solids_dir):
  baselines = learning.solids_baselines("synthetic_solids/small", solids_dir)
  assert baselines["chance"] == pytest.approx(2 / 24)  # Each class twice in 24.
  assert 0 <= baselines["radius_histogram_logreg"] <= 1
  octahedra = np.concatenate([np.eye(3), -np.eye(3)])[None] * [[[2.0]], [[3.0]]] + 1.0
  np.testing.assert_array_equal(learning.radius_histograms(octahedra, bins=4),
                                [[0, 0, 0, 1], [0, 0, 0, 1]])  # Every radius is the largest.
  centred_line = np.array([[[-1.0, 0, 0], [0, 0, 0], [1, 0, 0], [0.5, 0, 0]]]) - [0.125, 0, 0]
  np.testing.assert_array_equal(learning.radius_histograms(centred_line, bins=2), [[0.5, 0.5]])
