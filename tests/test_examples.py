"""The README's main job (examples/train_digits.py) runs end to end and learns."""

import json
import os
import subprocess
import sys


def test_train_digits_learns_in_four_epochs(tmp_path):
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  subprocess.run([sys.executable, "-m", "examples.train_digits", f"--workdir={tmp_path}",
                  "--epochs=4"], cwd=root, check=True, capture_output=True, timeout=600)
  records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert [r["epoch"] for r in records] == [1, 2, 3, 4]
  assert records[3]["loss"] < records[1]["loss"] < records[0]["loss"]
  assert records[3]["test_accuracy"] > 0.5  # Chance is 0.1.
