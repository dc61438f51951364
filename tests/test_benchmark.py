"""Tests for perceiver_jax/benchmarking.py and the experiments/benchmark.py launcher."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import benchmark
from perceiver_jax import benchmarking, tasks
from perceiver_jax.model_stats import flops

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tiny_config():
  return benchmark.load_config("configs/digits_perceiver.py:tiny")[1]


def test_time_fn_sane_numbers_and_carries_state():
  step = jax.jit(lambda x, y: (x + y, jnp.sum(x)), donate_argnums=0)
  x, y = jnp.zeros((64, 64)), jnp.ones((64, 64))
  timing = benchmarking.time_fn(step, x, y, warmup=1, iters=7, carry_first=True)
  assert timing["compile_s"] > 0 and timing["median_s"] > 0
  assert timing["p10_s"] <= timing["median_s"] <= timing["p90_s"]
  assert timing["memory"]["argument_bytes"] == 2 * 64 * 64 * 4
  # Plain Python functions: compile_s is the first call; no compiled memory analysis.
  calls = []
  timing = benchmarking.time_fn(lambda a: calls.append(a) or a, y, warmup=2, iters=3)
  assert len(calls) == 1 + 2 + 3 and timing["memory"] is None


def test_transfer_inside_a_timed_step_raises():
  on_device = jnp.ones(4)
  with pytest.raises(jax.errors.JaxRuntimeError, match="Disallowed host-to-device"):
    benchmarking.time_fn(jax.jit(lambda a, b: a + b), on_device, np.ones(4, np.float32))
  # A host round-trip inside the step (numpy maths, then back to the device).
  with pytest.raises(jax.errors.JaxRuntimeError, match="Disallowed host-to-device"):
    benchmarking.time_fn(lambda a: jnp.asarray(np.asarray(a) * 2), on_device)
  benchmarking.time_fn(jax.jit(lambda a: a * 2), on_device, iters=2)  # On device: fine.


def _model_flops(config):
  shape = tasks.example_inputs(config.model, 1).shape[1:]
  return flops(tasks.build(config.model), shape)


def test_benchmark_model_train(tiny_config):
  """(Inference mode runs in the launcher test below: one compile fewer.)"""
  result = benchmarking.benchmark_model(tiny_config, batch_size=8, mode="train", iters=2,
                                        warmup=1)
  model_flops = _model_flops(tiny_config)
  assert model_flops > 0 and result["flops_per_step"] == 3 * model_flops * 8
  assert np.isfinite(result["examples_per_s"]) and result["examples_per_s"] > 0
  assert result["examples_per_s"] == pytest.approx(8 / result["step_s"])
  assert result["flops_per_s"] == pytest.approx(result["flops_per_step"] / result["step_s"])
  assert result["mfu"] is None and result["peak_memory_bytes"] is None  # CPU.
  assert result["temp_bytes"] > 0 and result["device_kind"] == "cpu"
  assert result["jax"] == jax.__version__ and result["mode"] == "train"


def test_benchmark_model_bad_values(tiny_config):
  with pytest.raises(ValueError, match="mode"):
    benchmarking.benchmark_model(tiny_config, 8, mode="serve")
  with pytest.raises(ValueError, match="batch_size"):
    benchmarking.benchmark_model(tiny_config, 0)


def test_peak_flops_lookup():
  assert benchmarking.peak_flops("NVIDIA H100 80GB HBM3", "bfloat16") == 989e12
  assert benchmarking.peak_flops("NVIDIA H100 PCIe", "float32") == 51e12
  assert benchmarking.peak_flops("TPU v5 lite", "bfloat16") == 197e12
  assert benchmarking.peak_flops("TPU v4", "float32") is None
  assert benchmarking.peak_flops("cpu", "bfloat16") is None
  with pytest.raises(ValueError, match="dtype"):
    benchmarking.peak_flops("TPU v4", "float16")


def test_fit_exponent_exact_power_laws():
  lengths = [64, 128, 256, 512]
  for k in (0.5, 1.0, 2.0):
    assert benchmarking.fit_exponent(lengths, [3.0 * n ** k for n in lengths]) == \
        pytest.approx(k)
  with pytest.raises(ValueError, match="positive"):
    benchmarking.fit_exponent([1, 2], [0.0, 1.0])
  with pytest.raises(ValueError, match="equal-length"):
    benchmarking.fit_exponent([1, 2, 3], [1.0, 2.0])


@pytest.fixture(scope="module")
def launcher_output(tmp_path_factory):
  """One launcher run (its own process, so its flags stay its own): tiny config inference and
  an 'xla' sweep over N=64..256."""
  output = tmp_path_factory.mktemp("bench")
  command = [sys.executable, "-m", "experiments.benchmark",
             "--configs=configs/digits_perceiver.py:tiny", "--mode=inference",
             "--batch_size=8", "--iters=2", "--warmup=1", "--sweep", "--sweep_min_length=64",
             "--sweep_max_length=256", "--sweep_num_latents=4", "--sweep_channels=16",
             "--sweep_implementations=xla", f"--output={output}"]
  subprocess.run(command, cwd=REPO, check=True, capture_output=True, timeout=600)
  return output


def test_launcher_end_to_end(launcher_output, tiny_config):
  results = json.loads((launcher_output / "results.json").read_text())
  (run,) = results["runs"]
  assert run["mode"] == "inference" and run["batch_size"] == 8 and run["step_s"] > 0
  assert run["flops_per_step"] == _model_flops(tiny_config) * 8  # Forward only.
  assert np.isfinite(run["examples_per_s"]) and run["mfu"] is None
  assert results["environment"]["device_kind"] == "cpu"
  assert list(results["sweep"]["rows"]) == ["xla"]
  assert (launcher_output / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  with pytest.raises(ValueError, match="preset"):
    benchmark.load_config("no_such_preset")
  assert benchmark.sweep_lengths(1024, 5000) == [1024, 2048, 4096]
  with pytest.raises(ValueError, match="sweep_min_length"):
    benchmark.sweep_lengths(64, 32)


def test_scaling_sweep_memory_grows_with_length(launcher_output):
  lengths = [64, 128, 256]
  sweep = json.loads((launcher_output / "results.json").read_text())["sweep"]
  rows = sweep["rows"]["xla"]
  assert [row["length"] for row in rows] == lengths and not any(row["oom"] for row in rows)
  temp = [row["temp_bytes"] for row in rows]
  assert temp == sorted(temp) and temp[-1] > temp[0]
  assert all(row["step_s"] > 0 for row in rows)
  # Arguments are params + float32 inputs [1, N, 64]: they grow by exactly the input bytes.
  arguments = np.diff([row["argument_bytes"] for row in rows])
  np.testing.assert_array_equal(arguments, np.diff(lengths) * 64 * 4)
  # The Perceiver's memory is at most linear in N (plus a constant): exponent in (0, 1].
  exponent = sweep["exponents"]["xla"]["memory"]
  assert exponent == pytest.approx(benchmarking.fit_exponent(lengths, temp))
  assert 0 < exponent <= 1.0
  with pytest.raises(ValueError, match="implementation"):
    benchmarking.scaling_sweep(lengths, implementation="flash")
