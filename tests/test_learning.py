"""experiments/learning.py: the baselines it compares runs with and the results it reports."""

import bz2
import json
import zlib

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
