"""experiments/cpu_devices.py: how many JAX CPU devices a launcher splits its batch over."""

import os
import subprocess
import sys

import pytest

from experiments import cpu_devices
from perceiver_jax.train.sharding import usable_cpu_cores

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("cores, batch_sizes, expected", [
    (2, [64, 120], 2),
    (1, [64], 1),
    (8, [16, 120], 8),
    (8, [12, 120], 6),  # 6 divides both; 7 and 8 do not.
    (16, [10], 10),
    (4, [3, 9], 3),
    (4, [7], 1),
])
def test_auto_count_is_the_largest_divisor_of_every_batch_up_to_the_cores(
    cores, batch_sizes, expected):
  assert cpu_devices.auto_count(cores, batch_sizes) == expected


def test_auto_leaves_jax_alone_in_multi_process_runs_and_under_a_forced_count(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
  assert cpu_devices.configure(0, [16]) is None
  monkeypatch.delenv("XLA_FLAGS")
  assert cpu_devices.configure(0, [16], multi_process=True) is None
  with pytest.raises(ValueError, match="--cpu_devices must be >= 0"):
    cpu_devices.configure(-1, [16])


@pytest.mark.parametrize("requested, xla_flags, expected", [
    (3, "--xla_force_host_platform_device_count=8", 3),  # An explicit count wins.
    (0, "", None),  # Auto: the largest divisor of 12 up to the cores.
])
def test_configure_sets_the_device_count_before_jax_starts(requested, xla_flags, expected):
  code = ("from experiments import cpu_devices\n"
          f"print(cpu_devices.configure({requested}, [12]))\n"
          "import jax\nprint(jax.device_count())\n")
  env = dict(os.environ, XLA_FLAGS=xla_flags)
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, check=True,
                       capture_output=True, text=True, timeout=120).stdout.split()
  expected = expected or cpu_devices.auto_count(usable_cpu_cores(), [12])
  assert out == [str(expected), str(expected)]
