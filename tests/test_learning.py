"""experiments/learning.py: the baselines it compares runs with and the results it reports."""

import bz2
import json
import zlib

import numpy as np
import pytest

from experiments import learning


def test_byte_baselines_are_the_compressors_and_the_unigram_on_the_data():
  data = b"def f(x):\n    return x + 1\n" * 40 + bytes(range(256))
  baselines = learning.byte_baselines(data)
  assert baselines["zlib_9"] == pytest.approx(8 * len(zlib.compress(data, 9)) / len(data))
  assert baselines["bz2_9"] == pytest.approx(8 * len(bz2.compress(data, 9)) / len(data))
  assert 0 < baselines["lzma_9e"] < 8
  assert learning.byte_baselines(b"ab" * 50)["unigram_entropy"] == pytest.approx(1.0)
  assert learning.byte_baselines(b"aab" * 10)["most_frequent_byte_accuracy"] == pytest.approx(
      2 / 3)


def test_neighbour_baseline_predicts_the_most_frequent_byte_between_the_same_neighbours():
  train = b"xayxayxby"  # Between x and y: 'a' twice, 'b' once; 'x' and 'y' most frequent.
  # Inner bytes of the test: a (x_y: a), y (a_x: y), x (y_b: x), b (x_y: a, wrong).
  assert learning.neighbour_byte_accuracy(train, b"xayxby") == pytest.approx(3 / 4)
  # An unseen pair predicts train's most frequent byte (the tie x, y goes to the smaller x).
  assert learning.neighbour_byte_accuracy(train, b"qxq") == 1.0
  assert learning.neighbour_byte_accuracy(train, b"qyq") == 0.0
  baselines = learning.mlm_byte_baselines(train, b"xayxby")
  assert baselines == pytest.approx({"most_frequent_byte_accuracy": 1 / 3,
                                     "neighbour_byte_accuracy": 3 / 4})
  with pytest.raises(ValueError, match="train and test need >= 3 bytes"):
    learning.neighbour_byte_accuracy(train, b"xa")


def test_final_eval_is_the_newest_eval_record_and_the_row_names_the_figure(tmp_path):
  records = [{"step": 5, "split": "eval", "bits_per_byte": 3.0},
             {"step": 9, "split": "train", "bits_per_byte": 2.0},
             {"step": 8, "split": "eval", "bits_per_byte": 2.5}]
  (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  assert learning.final_eval(str(tmp_path))["step"] == 8
  (tmp_path / "empty").mkdir()
  (tmp_path / "empty" / "metrics.jsonl").write_text(json.dumps(records[1]) + "\n")
  with pytest.raises(ValueError, match="no eval record"):
    learning.final_eval(str(tmp_path / "empty"))
  row = learning.markdown_row({
      "run": "r", "command": "python -m experiments.train --config=X", "machine": "cpu",
      "date": "today", "train_seconds": 90.0, "metric": "bits_per_byte", "value": 1.9,
      "step": 8, "beat": ["zlib_9"], "baselines": {"zlib_9": 2.03}})
  assert row.startswith("| r | `python -m experiments.train --config=X` | cpu, today, 1.5 min")
  assert "bits_per_byte 1.900 at step 8 (must beat zlib_9; baselines: zlib_9 2.030)" in row


def test_every_run_names_a_config_and_a_baseline_it_computes():
  for name, run in learning.RUNS.items():
    assert run.mode in ("min", "max"), name
    assert run.config.startswith("configs/"), name


def test_importing_it_beside_the_benchmark_launcher_defines_no_clashing_flag():
  from experiments.benchmark import launcher  # pylint: disable=g-import-not-at-top,unused-import
  assert "output" in learning.FLAGS  # The benchmark's; learning defines its own only to run.


def test_flow_baselines_recover_a_global_shift_and_score_zero_flow():
  from experiments import flow_baselines  # pylint: disable=g-import-not-at-top
  from perceiver_jax.data.datasets import synthetic_flow  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  texture = synthetic_flow.random_texture(rng, 40, 40)
  rows, cols = np.mgrid[:24, :24].astype(np.float64)
  frame1 = texture[8:32, 8:32]
  frame2 = synthetic_flow.bilinear(texture, rows + 8 - 0.75, cols + 8 - 1.5)  # Moved (1.5, 0.75).
  shift = flow_baselines.global_translation(frame1, frame2)
  np.testing.assert_allclose(shift, [1.5, 0.75], atol=0.1)
  flow = np.broadcast_to(np.array([1.5, 0.75], np.float32), (24, 24, 2))
  baselines = flow_baselines.flow_baselines([(frame1, frame2, flow)])
  assert baselines["zero_flow_epe"] == pytest.approx(np.hypot(1.5, 0.75))
  assert baselines["half_zero_flow_epe"] == pytest.approx(np.hypot(1.5, 0.75) / 2)
  assert baselines["global_translation_epe"] < 0.1
  run = learning.RUNS["synthetic_flow"]
  assert (run.metric, run.mode) == ("epe", "min") and "global_translation_epe" in run.beat


def test_flow_test_pairs_are_the_centre_crops_the_eval_sees(tmp_path):
  full = list(learning.flow_test_pairs("synthetic_flow/tiny", str(tmp_path)))
  crops = list(learning.flow_test_pairs("synthetic_flow/tiny", str(tmp_path), crop_size=(8, 6)))
  assert len(full) == len(crops) == 4
  for whole, crop in zip(full, crops):
    assert [a.shape[:2] for a in crop] == [(8, 6)] * 3
    for a, b in zip(whole, crop):
      np.testing.assert_array_equal(a[4:12, 5:11], b)
def test_array_baselines_fit_the_raw_inputs():
  x = np.array([[0.0, 0.0], [0.0, 1.0], [3.0, 0.0], [3.0, 1.0], [10.0, 0.0], [10.0, 1.0]])
  labels = np.array([0, 0, 1, 1, 1, 1])
  test = np.array([[0.0, 0.5], [3.0, 0.5], [10.0, 0.5]]), np.array([0, 1, 1])
  baselines = learning.classification_baselines((x, labels), test)
  assert baselines["chance"] == pytest.approx(2 / 3)  # Class 1 is the most frequent.
  # (3, 0.5) is nearer class 0's centroid (0, 0.5) than class 1's (6.5, 0.5).
  assert baselines["nearest_centroid"] == pytest.approx(2 / 3)
  assert baselines["logistic_regression"] == 1.0
  targets = x[:, 0] * 2 + 1
  regression = learning.regression_baselines((x, targets), (x[:2], targets[:2]))
  assert regression["mean_mse"] == pytest.approx(np.mean((targets[:2] - targets.mean()) ** 2))
  assert regression["ridge_mse"] < 0.5 * regression["mean_mse"]
