"""The launchers as a user runs them: --help lists each launcher's own flags."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = ("--config", "--workdir", "--cpu_devices", "--coordinator_address")


def test_help_of_every_launcher_lists_its_flags():
  expected = {"train": SHARED, "eval": SHARED + ("--step",),
              "plot": SHARED + ("--num_images",),
              "sample": SHARED + ("--prompt", "--step"),
              "benchmark": ("--configs", "--output", "--cpu_devices")}
  processes = {name: subprocess.Popen([sys.executable, "-m", f"experiments.{name}", "--help"],
                                      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True) for name in expected}
  for name, process in processes.items():
    output, _ = process.communicate(timeout=300)  # absl's --help exits with status 1.
    missing = [flag for flag in expected[name] if f"  {flag}:" not in output]
    assert not missing, f"experiments.{name} --help lacks {missing}:\n{output[-3000:]}"
