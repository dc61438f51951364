"""Tests for experiments/benchmark/: benchmarking.py and the launcher."""

import fcntl
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.benchmark import launcher as benchmark
from perceiver_jax import tasks
from experiments.benchmark import benchmarking, torch_peers
from perceiver_jax.train.experiment import build_experiment
from perceiver_jax.nn.model_stats import flops
from perceiver_jax.train.sharding import global_batch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEVICE_KIND = jax.devices()[0].device_kind  # The tests also run on a GPU (BENCHMARKS.md).
PEER_DEVICE = "cuda" if jax.default_backend() == "gpu" else "cpu"  # --peer_device=auto.
# Attention outputs against jax.nn's: float32 matmuls may use TF32 on a GPU.
ATTENTION_ATOL = 1e-5 if jax.default_backend() == "cpu" else 1e-2
# Runs the benchmark launcher as on an accelerator image without TensorFlow (the NVIDIA images
# the GPU figures come from have jax, flax, torch and transformers but no TensorFlow or TFDS):
# the path finder stops seeing those packages, so importing one raises ModuleNotFoundError.
WITHOUT_TENSORFLOW = """
import importlib.machinery, runpy, sys

class PathFinderWithoutTensorFlow(importlib.machinery.PathFinder):
  @classmethod
  def find_spec(cls, fullname, path=None, target=None):
    if fullname.partition(".")[0] in ("tensorflow", "tensorflow_datasets"):
      return None
    return super().find_spec(fullname, path, target)

sys.meta_path = [PathFinderWithoutTensorFlow if finder is importlib.machinery.PathFinder
                 else finder for finder in sys.meta_path]
sys.argv[0] = "benchmark"
runpy.run_module("experiments.benchmark", run_name="__main__", alter_sys=True)
"""


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


def test_benchmark_model_train(tiny_config, monkeypatch):
  """(Inference mode runs in the launcher test below: one compile fewer.) MFU against a
  stand-in peak of 50 GFLOP/s per device (this device kind may have none)."""
  monkeypatch.setattr(benchmarking, "peak_flops", lambda kind, dtype: 50e9)
  result = benchmarking.benchmark_model(tiny_config, batch_size=8, mode="train", iters=2,
                                        warmup=1)
  model_flops = _model_flops(tiny_config)
  assert model_flops > 0 and result["flops_per_step"] == 3 * model_flops * 8
  assert np.isfinite(result["examples_per_s"]) and result["examples_per_s"] > 0
  assert result["examples_per_s"] == pytest.approx(8 / result["step_s"])
  assert result["flops_per_s"] == pytest.approx(result["flops_per_step"] / result["step_s"])
  assert result["mfu"] == pytest.approx(
      result["flops_per_s"] / (50e9 * result["num_devices"]))
  assert (result["peak_memory_bytes"] is None) == (jax.default_backend() == "cpu")
  assert result["temp_bytes"] > 0 and result["device_kind"] == DEVICE_KIND
  assert result["jax"] == jax.__version__ and result["mode"] == "train"


def test_the_benchmarked_train_step_donates_its_state(tiny_config, tmp_path):
  """The step benchmark_model times updates the state in place: its input buffers are gone."""
  config = benchmarking.at_batch_size(tiny_config, 8)
  experiment = build_experiment(config, str(tmp_path))
  state = experiment.init()
  batch = global_batch(benchmarking.random_batch(config, 8), experiment.mesh)
  new_state, _ = experiment.train_step(state, batch)
  experiment.checkpointer.close()
  assert all(leaf.is_deleted() for leaf in jax.tree_util.tree_leaves(state.params))
  assert not any(leaf.is_deleted() for leaf in jax.tree_util.tree_leaves(new_state.params))

def test_compile_only_reports_the_memory_of_the_program_that_runs(tiny_config):
  for mode in benchmarking.MODES:
    compiled = benchmarking.compile_model(tiny_config, 16, mode)
    ran = benchmarking.benchmark_model(tiny_config, 16, mode, iters=1, warmup=0)
    assert compiled["compile_only"] and "step_s" not in compiled
    for key in ("temp_bytes", "argument_bytes", "output_bytes"):
      assert compiled[key] == ran[key] > 0
  run = benchmark.measure("tiny", tiny_config, 16, "train", compile_only=True)
  assert run["batch_size"] == 16 and "compiled, not run: XLA temp" in benchmark._row(run)
  with pytest.raises(ValueError, match="mode must be one of"):
    benchmarking.compile_model(tiny_config, 16, "eval")

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
  """One launcher run (its own process, so its flags stay its own; TensorFlow unimportable, as
  on the GPU images): inference of two tiny configs at batch sizes 8 and 16 beside both
  PyTorch peers, twice interleaved (the digits one has residual dropout, which neither peer
  has; both with a chunked cross-attention set by --set), an 'xla' sweep over N=64..256 with
  the peers, and the attention kernels at two tiny shapes (one causal with fewer queries
  than keys). Under xdist the workers share it: the first makes it in their common base
  temporary directory while holding a lock, the others wait and read it."""
  shared = tmp_path_factory.getbasetemp()
  if "PYTEST_XDIST_WORKER" in os.environ:
    shared = shared.parent  # pytest-N/, above each worker's popen-gwK/.
  output = shared / "bench"
  with open(shared / "bench.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # Released when the file closes.
    if not (output / "done").exists():
      _run_launcher(output)
      (output / "done").touch()
  return output


def _run_launcher(output):
  output.mkdir(exist_ok=True)
  command = [sys.executable, "-c", WITHOUT_TENSORFLOW,
             "--configs=configs/digits_perceiver.py:tiny,configs/cifar10_perceiver.py:tiny",
             "--mode=inference", "--batch_size=8,16", "--iters=2", "--warmup=1", "--sweep",
             "--sweep_min_length=64", "--sweep_max_length=256", "--sweep_num_latents=4",
             "--sweep_channels=16", "--sweep_implementations=xla",
             "--peers=transformers,lucidrains", "--repeats=2", "--attention",
             "--attention_shapes=2x8x16x2x8,1x4x12x2x8c",
             "--set=model.encoder.cross_attention.implementation=chunked", f"--output={output}"]
  run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-4000:]


def test_launcher_end_to_end(launcher_output, tiny_config):
  results = json.loads((launcher_output / "results.json").read_text())
  run, large, cifar, _ = results["runs"]  # Each config at --batch_size=8,16.
  assert run["mode"] == "inference" and run["batch_size"] == 8 and run["step_s"] > 0
  assert run["flops_per_step"] == _model_flops(tiny_config) * 8  # Forward only.
  assert large["batch_size"] == 16 and large["flops_per_step"] == _model_flops(tiny_config) * 16
  assert np.isfinite(run["examples_per_s"]) and run["examples_per_s"] > 0
  assert (run["mfu"] is None) == (benchmarking.peak_flops(DEVICE_KIND, "float32") is None)
  assert results["environment"]["device_kind"] == DEVICE_KIND
  assert results["environment"]["set"] == ["model.encoder.cross_attention.implementation=chunked"]
  assert list(results["sweep"]["rows"]) == ["xla", "transformers", "lucidrains"]
  assert (launcher_output / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert not (launcher_output / "results.json.tmp").exists()  # Saved after every step.
  with pytest.raises(ValueError, match="preset"):
    benchmark.load_config("no_such_preset")
  assert benchmark.sweep_lengths(1024, 5000) == [1024, 2048, 4096]
  with pytest.raises(ValueError, match="sweep_min_length"):
    benchmark.sweep_lengths(64, 32)
  # A GPU row: the process's device peak only grows, so tables and fits use XLA's bytes.
  assert benchmark._memory({"peak_memory_bytes": 2 ** 30, "temp_bytes": 5}) == 5
  assert benchmark.batch_sizes(["16", "32"]) == [16, 32] and benchmark.batch_sizes([]) == []
  for bad in (["0"], ["x"], ["8", "-1"]):
    with pytest.raises(ValueError, match="--batch_size must be comma-separated ints >= 1"):
      benchmark.batch_sizes(bad)


def test_configs_entries_keep_a_files_options_together():
  entries = ["configs/imagenet_perceiver_io.py:conv", "tiny", "cifar10_study",
             "configs/digits_perceiver.py:tiny", "configs/cifar10_perceiver.py"]
  specs = benchmark.config_specs(entries)
  assert specs == ["configs/imagenet_perceiver_io.py:conv,tiny"] + entries[2:]
  name, config, batch_size = benchmark.load_config(specs[0])
  assert (name, config.model.variant, config.num_train_steps, batch_size) == (
      specs[0], "conv", 2, None)


def test_peers_on_the_gpu_leave_torch_part_of_its_memory():
  environ = {}
  benchmark.share_gpu_memory([], "auto", environ)
  benchmark.share_gpu_memory(["transformers"], "cpu", environ)
  assert not environ  # No peers, or peers on the CPU: JAX keeps its default.
  benchmark.share_gpu_memory(["transformers"], "auto", environ)
  assert environ == {"XLA_PYTHON_CLIENT_MEM_FRACTION": benchmark.SHARED_GPU_MEMORY_FRACTION}
  environ = {"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.3"}
  benchmark.share_gpu_memory(["lucidrains"], "cuda", environ)
  assert environ == {"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.3"}  # The user's value wins.


def test_scaling_sweep_memory_grows_with_length(launcher_output):
  lengths = [64, 128, 256]
  sweep = json.loads((launcher_output / "results.json").read_text())["sweep"]
  rows = sweep["rows"]["xla"]
  for peer in torch_peers.PEERS:  # Same lengths; the torch step's peak memory grows with N.
    peer_rows = sweep["rows"][peer]
    assert [row["length"] for row in peer_rows] == lengths
    assert all(row["step_s"] > 0 and not row["oom"] for row in peer_rows)
    peaks = [row["peak_step_bytes"] for row in peer_rows]
    assert peaks == sorted(peaks) and peaks[-1] > peaks[0]
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


def test_launcher_reports_peers_with_ratios(launcher_output):
  results = json.loads((launcher_output / "results.json").read_text())
  digits, _, cifar, _ = results["runs"]
  for peer in torch_peers.PEERS:  # Residual dropout: reported, not run.
    assert "dropout_rate" in digits["peers"][peer]["unsupported"]
    record = cifar["peers"][peer]
    assert record["mode"] == "inference" and record["batch_size"] == 8
    assert record["step_s"] > 0 and record["peak_step_bytes"] > 0
    assert record["ratio_of_medians"] == pytest.approx(cifar["step_s"] / record["step_s"])
    pairs = np.array(cifar["repeat_step_s"]) / np.array(record["repeat_step_s"])  # 2 repeats.
    assert record["ratio"] == pytest.approx(pairs.mean())
    assert record["params_ours"] == _model_params("configs/cifar10_perceiver.py:tiny")
    assert abs(record["params_rel_diff"]) < 0.02
    assert record["device"] == PEER_DEVICE  # --peer_device=auto follows JAX.
  assert results["environment"]["torch_threads"] == len(os.sched_getaffinity(0))
  assert results["environment"]["peer_device"] == PEER_DEVICE


def test_peer_device_follows_jax_and_refuses_a_cross_machine_comparison(monkeypatch):
  import torch  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
  monkeypatch.setattr(torch_peers.jax, "default_backend", lambda: "cpu")
  assert torch_peers.peer_device("auto") == "cpu" and torch_peers.peer_device("cpu") == "cpu"
  with pytest.raises(ValueError, match="torch that sees a GPU.*--peer_device=cpu"):
    torch_peers.peer_device("cuda")
  with pytest.raises(ValueError, match="peer device must be one of"):
    torch_peers.peer_device("mps")
  monkeypatch.setattr(torch_peers.jax, "default_backend", lambda: "gpu")
  with pytest.raises(ValueError, match="torch that sees a GPU"):  # JAX on a GPU, torch on CPU.
    torch_peers.peer_device("auto")
  assert torch_peers.peer_device("cpu") == "cpu"  # Asked for: compares with the CPU anyway.
  monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
  assert torch_peers.peer_device("auto") == "cuda"
  monkeypatch.setattr(torch_peers.jax, "default_backend", lambda: "tpu")
  with pytest.raises(ValueError, match="JAX runs on 'tpu'"):
    torch_peers.peer_device("auto")
  config = benchmark.load_config("configs/cifar10_perceiver.py:tiny")[1]
  with pytest.raises(ValueError, match="peer_device resolves 'auto'"):
    torch_peers.benchmark_peer("transformers", config, 2, device="auto")


def _torch_sees_a_gpu() -> bool:
  import torch  # pylint: disable=import-outside-toplevel
  return torch.cuda.is_available()


@pytest.mark.skipif(not _torch_sees_a_gpu(), reason="needs a CUDA torch and an NVIDIA GPU")
def test_peers_run_and_are_measured_on_the_gpu():
  """On the GPU: the step and its memory are the device's (synchronised; CUDA allocator)."""
  config = benchmark.load_config("configs/cifar10_perceiver.py:tiny")[1]
  for mode in benchmarking.MODES:
    record = torch_peers.benchmark_peer("transformers", config, 8, mode, iters=2, warmup=1,
                                        device="cuda")
    assert record["device"] == "cuda" and record["step_s"] > 0
    assert record["peak_step_bytes"] > 0
  rows = torch_peers.encoder_sweep("lucidrains", [64, 128], benchmarking.sweep_encoder(4, 16),
                                   iters=1, device="cuda")
  assert [row["oom"] for row in rows] == [False, False]
  assert 0 < rows[0]["peak_step_bytes"] <= rows[1]["peak_step_bytes"]



def test_out_of_memory_is_recorded_and_the_run_goes_on(monkeypatch):
  """A step that exhausts the device (ours: XLA's RESOURCE_EXHAUSTED; a peer: torch's
  OutOfMemoryError) is a result row, not a crash; other runtime errors still raise."""
  import torch  # pylint: disable=import-outside-toplevel
  config = benchmark.load_config("configs/cifar10_perceiver.py:tiny")[1]
  message = "RESOURCE_EXHAUSTED: Out of memory while trying to allocate 96.00GiB."

  def fails_with(error):
    def run(*args, **kwargs):
      raise error
    return run

  real_benchmark_model = benchmarking.benchmark_model
  monkeypatch.setattr(benchmarking, "benchmark_model",
                      fails_with(jax.errors.JaxRuntimeError(message)))
  run = benchmark.measure("big", config, 1024, "train", peers=("transformers",))
  assert run == {"name": "big", "mode": "train", "batch_size": 1024, "oom": True,
                 "error": message}
  assert "out of device memory: pass a smaller --batch_size" in benchmark._row(run)
  monkeypatch.setattr(benchmarking, "benchmark_model",
                      fails_with(jax.errors.JaxRuntimeError("INTERNAL: something else")))
  with pytest.raises(jax.errors.JaxRuntimeError, match="INTERNAL"):
    benchmark.measure("big", config, 1024, "train")
  monkeypatch.setattr(benchmarking, "benchmark_model", real_benchmark_model)
  monkeypatch.setattr(torch_peers, "benchmark_peer", fails_with(torch.cuda.OutOfMemoryError(
      "CUDA out of memory. Tried to allocate 2.00 GiB.")))
  run = benchmark.measure("tiny", config, 8, "inference", peers=("transformers",), iters=1,
                          warmup=0)
  assert run["step_s"] > 0 and run["peers"]["transformers"]["oom"]
  assert "out of device memory" in benchmark._peer_row(run["peers"]["transformers"])


def _model_params(spec):
  config = benchmark.load_config(spec)[1]
  model = tasks.build(config.model)
  variables = model.init(jax.random.PRNGKey(0), tasks.example_inputs(config.model, 1))
  return sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(variables["params"]))


def test_peer_parameter_counts_match_ours():
  """transformers has our exact parameters; lucidrains lacks the q/k/v biases (3 x the qk
  width per attention) and adds a LayerNorm (2 x latent channels) before its logits."""
  config = benchmark.load_config("configs/cifar10_perceiver.py:tiny")[1].model
  ours = _model_params("configs/cifar10_perceiver.py:tiny")
  assert torch_peers.our_param_count(config) == ours
  assert torch_peers.count_params(torch_peers.build_peer("transformers", config)) == ours
  cross_qk = 3 + 2 * (2 * 2 + 1)  # RGB + 2-D Fourier features with 2 bands.
  latent = config.encoder.num_latent_channels
  layers = config.encoder.num_self_attention_layers_per_block
  expected = ours - 3 * cross_qk - 3 * latent * layers + 2 * latent
  assert torch_peers.count_params(torch_peers.build_peer("lucidrains", config)) == expected
  io = benchmark.load_config("configs/cifar10_perceiver_io.py:tiny")[1].model  # Perceiver IO.
  assert torch_peers.count_params(torch_peers.build_peer("transformers", io)) == \
      torch_peers.our_param_count(io)


def test_peers_compute_logits_of_our_shape():
  import torch  # pylint: disable=import-outside-toplevel
  config = benchmark.load_config("configs/cifar10_perceiver.py:tiny")[1].model
  images = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 8, 8, 3), np.float32))
  for peer in torch_peers.PEERS:
    logits = torch_peers.build_peer(peer, config)(images)
    assert tuple(logits.shape) == (2, 10) and bool(torch.isfinite(logits).all())
  encoder = benchmarking.sweep_encoder(num_latents=4, channels=16)
  for peer in torch_peers.PEERS:
    module = torch_peers.build_encoder_peer(peer, encoder, input_channels=6)
    assert tuple(module(torch.zeros(2, 5, 6)).shape) == (2, 4, 16)


def test_inexpressible_shapes_raise():
  imagenet = tasks.tiny_config("perceiver_classification", "imagenet")  # 2 cross-attends.
  with pytest.raises(ValueError, match="num_cross_attention_layers=2"):
    torch_peers.build_peer("transformers", imagenet)
  with pytest.raises(ValueError, match="first_self_attention_block_shared=False"):
    torch_peers.build_peer("lucidrains", imagenet)  # Its first block is shared: not in lucidrains.
  io = benchmark.load_config("configs/cifar10_perceiver_io.py:tiny")[1].model
  with pytest.raises(ValueError, match="query decoder"):
    torch_peers.build_peer("lucidrains", io)
  digits = benchmark.load_config("configs/digits_perceiver.py:tiny")[1].model
  with pytest.raises(ValueError, match="dropout_rate=0.1"):
    torch_peers.build_peer("transformers", digits)
  with pytest.raises(ValueError, match="peer must be one of"):
    torch_peers.build_peer("timm", digits)


def test_sweep_memory_limit_marks_oom(launcher_output):
  """A limit between N=64's and N=128's compiled bytes: 64 runs, 128 is OOM, the sweep stops."""
  rows = json.loads((launcher_output / "results.json").read_text())["sweep"]["rows"]["xla"]
  total = lambda row: row["temp_bytes"] + row["argument_bytes"] + row["output_bytes"]
  limit = (total(rows[0]) + total(rows[1])) // 2
  limited = benchmarking.scaling_sweep([64, 128, 256], num_latents=4, channels=16, iters=1,
                                       memory_limit_bytes=limit)
  assert [row["oom"] for row in limited] == [False, True]
  assert total(limited[1]) == total(rows[1]) > limit
  encoder = benchmarking.sweep_encoder(num_latents=4, channels=16)
  peer_rows = torch_peers.encoder_sweep("transformers", [64, 4096], encoder, iters=1,
                                        memory_limit_bytes=2 ** 20)
  assert [row["oom"] for row in peer_rows] == [False, True]
  assert peer_rows[0]["peak_step_bytes"] < 2 ** 20 < peer_rows[1]["peak_step_bytes"]


def test_attention_kernels_in_the_launcher(launcher_output):
  """Every backend at both shapes, jax.nn's 'xla' path first as the reference; cudnn is
  reported unsupported on CPU with the backend's own reason; the others agree with jax.nn."""
  rows = json.loads((launcher_output / "results.json").read_text())["attention"]
  assert [(row["spec"], row["implementation"]) for row in rows] == [
      (spec, implementation) for spec in ("2x8x16x2x8", "1x4x12x2x8c")
      for implementation in ("jax.nn-xla", "xla", "cudnn", "chunked")]
  for row in rows:
    if row["implementation"] == "cudnn":
      assert "cudnn" in row["unsupported"] and "step_s" not in row
      continue
    assert row["step_s"] > 0 and row["temp_bytes"] >= 0
    assert row["max_abs_error"] < ATTENTION_ATOL
    assert row["ratio"] == (1.0 if row["implementation"] == "jax.nn-xla" else
                            pytest.approx(row["step_s"] / rows[0 if row["spec"] == "2x8x16x2x8"
                                                               else 4]["step_s"]))
  assert rows[4]["causal"] and (rows[4]["q_len"], rows[4]["kv_len"]) == (4, 12)


def test_parse_attention_shape():
  assert benchmarking.parse_attention_shape("16x128x256x8x32") == dict(
      spec="16x128x256x8x32", batch=16, q_len=128, kv_len=256, heads=8, head_dim=32,
      causal=False)
  assert benchmarking.parse_attention_shape("1x4x8x2x16c")["causal"]
  for bad in ("16x128x128x8", "16x128x128x8x0", "ax1x1x1x1", "2x8x4x1x8c", ""):
    with pytest.raises(ValueError, match="shape"):
      benchmarking.parse_attention_shape(bad)


def test_attention_kernel_error_flags_a_wrong_backend(monkeypatch):
  """max_abs_error compares with jax.nn, so a backend that drops the causal mask shows."""
  shape = benchmarking.parse_attention_shape("1x6x6x2x8c")
  good = benchmarking.attention_kernel(shape, "xla", iters=1, warmup=0)
  assert good["max_abs_error"] < ATTENTION_ATOL
  real = benchmarking.attention.dot_product_attention
  monkeypatch.setattr(benchmarking.attention, "dot_product_attention",
                      lambda *args, causal, **kwargs: real(*args, causal=False, **kwargs))
  wrong = benchmarking.attention_kernel(shape, "xla", iters=1, warmup=0)
  assert wrong["max_abs_error"] > 0.1


def test_attention_kernel_reference_is_computed_once_per_shape(monkeypatch):
  traced, real = [], jax.nn.dot_product_attention
  monkeypatch.setattr(jax.nn, "dot_product_attention",
                      lambda *args, **kwargs: traced.append(1) or real(*args, **kwargs))
  shape = benchmarking.parse_attention_shape("1x5x7x1x8")
  rows = [benchmarking.attention_kernel(shape, implementation, iters=1, warmup=0)
          for implementation in ("xla", "chunked", "xla")]
  assert len(traced) == 1 and all(row["max_abs_error"] < ATTENTION_ATOL for row in rows)


def test_set_fields_reads_values_as_the_fields_types():
  config = benchmark.load_config("configs/cifar10_perceiver.py:tiny")[1]
  benchmark.set_fields(config, [
      "model.encoder.cross_attention.implementation=chunked",
      "model.encoder.attention.chunk_size=8", "model.dtype=bfloat16",
      "optimizer.learning_rate=0.5", "model.encoder.use_query_residual=false"])
  encoder = config.model.encoder
  assert (encoder.cross_attention.implementation, encoder.attention.chunk_size) == ("chunked", 8)
  assert config.model.dtype == "bfloat16" and config.optimizer.learning_rate == 0.5
  assert encoder.use_query_residual is False
  for bad, match in (("model.encoder.num_latent=8", "no config field 'model.encoder.num_latent'"),
                     ("model.encoder.attention.chunk_size", "no config field"),
                     ("model.encoder.attention.chunk_size=big", "chunk_size is int"),
                     ("model.encoder.use_query_residual=yes", "true or false"),
                     ("model.input_shape=(1, 2)", "set it in the config file")):
    with pytest.raises(ValueError, match=match):
      benchmark.set_fields(config, [bad])


def test_a_language_model_batch_has_rows_of_max_context_plus_one_ids():
  from configs import perceiver_ar_bytes  # pylint: disable=g-import-not-at-top
  config = perceiver_ar_bytes.get_config("stdlib,tiny")
  batch = benchmarking.random_batch(config, 4)
  context = config.model.perceiver_ar.max_context
  assert batch["ids"].shape == (4, context + 1)
  assert 6 <= batch["ids"].min() and batch["ids"].max() < config.model.perceiver_ar.vocab_size
