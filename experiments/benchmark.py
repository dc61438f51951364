"""Benchmark configs: python -m experiments.benchmark --configs=PRESET|configs/X.py[:variant],...

For each config and mode (train, inference) prints and records step time, examples/s,
compile time, analytic FLOPs per step, FLOP/s, MFU and memory (perceiver_jax/benchmarking.py)
to OUTPUT/results.json. --sweep adds the encoder length sweep (N = sweep_min_length doubling
up to sweep_max_length; inputs [sweep_batch_size, N, 64]) for the attention backends
--sweep_implementations (default 'xla' and 'chunked'), with the fitted log-log exponents,
and plots time and memory against N to OUTPUT/scaling.png. Runs unchanged on CPU, GPU, TPU.

  python -m experiments.benchmark --configs=cifar10_study,perceiver_ar_8k --output=/tmp/bench
  python -m experiments.benchmark --configs=configs/cifar10_perceiver.py:tiny --mode=train \
      --iters=5 --sweep --sweep_min_length=256 --sweep_max_length=1024 --output=/tmp/bench
"""

import importlib.util
import json
import os

from absl import app, flags, logging
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position

from perceiver_jax import benchmarking  # pylint: disable=wrong-import-position

# name -> (config file, variant, batch size or None for the config's own).
PRESETS = {
    "cifar10_study": ("configs/cifar10_perceiver.py", "", 32),
    "imagenet_io_fourier": ("configs/imagenet_perceiver_io.py", "fourier", None),
    "mlm_bytes": ("configs/mlm_bytes_perceiver_io.py", "", None),
    "perceiver_ar_8k": ("configs/perceiver_ar_bytes.py", "", None),
}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FLAGS = flags.FLAGS
flags.DEFINE_list("configs", ["cifar10_study"],
                  f"Presets {sorted(PRESETS)} or configs/X.py[:variant], comma-separated.")
flags.DEFINE_integer("batch_size", None, "Global batch size for every config (default: the "
                     "preset's, else the config's).")
flags.DEFINE_list("mode", ["train", "inference"], "Any of train, inference.")
flags.DEFINE_integer("iters", 10, "Timed steps per measurement (median reported).")
flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.")
flags.DEFINE_bool("sweep", False, "Also run the encoder input-length sweep, both backends.")
flags.DEFINE_integer("sweep_min_length", 1024, "Shortest input length N of the sweep.")
flags.DEFINE_integer("sweep_max_length", 262144, "Longest input length N of the sweep.")
flags.DEFINE_integer("sweep_num_latents", 256, "Latents of the sweep's encoder.")
flags.DEFINE_integer("sweep_channels", 256, "Latent channels of the sweep's encoder.")
flags.DEFINE_integer("sweep_batch_size", 1, "Batch size of the sweep.")
flags.DEFINE_list("sweep_implementations", list(benchmarking.IMPLEMENTATIONS),
                  "Attention backends of the sweep.")
flags.DEFINE_string("output", None, "Directory for results.json (and scaling.png).")
flags.mark_flag_as_required("output")


def load_config(spec: str):
  """(name, config, batch size or None) of a preset name or 'configs/X.py[:variant]'."""
  if spec in PRESETS:
    path, variant, batch_size = PRESETS[spec]
  else:
    path, _, variant = spec.partition(":")
    batch_size = None
    if not path.endswith(".py"):
      raise ValueError(f"--configs entry {spec!r} is neither a preset {sorted(PRESETS)} nor "
                       "a config file configs/X.py[:variant].")
  full = path if os.path.exists(path) else os.path.join(ROOT, path)
  if not os.path.exists(full):
    raise ValueError(f"--configs entry {spec!r}: no config file {path!r}.")
  module_spec = importlib.util.spec_from_file_location("benchmark_config", full)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return spec, module.get_config(variant), batch_size


def sweep_lengths(min_length: int, max_length: int) -> list:
  """min_length, 2 min_length, ... up to max_length."""
  if min_length < 1 or max_length < min_length:
    raise ValueError(f"need 1 <= --sweep_min_length ({min_length}) <= --sweep_max_length "
                     f"({max_length}).")
  lengths = [min_length]
  while lengths[-1] * 2 <= max_length:
    lengths.append(lengths[-1] * 2)
  return lengths


def _memory(row):
  """Device peak bytes where the backend reports them, else XLA's temp bytes."""
  return row["peak_memory_bytes"] or row["temp_bytes"]


def run_sweep(output: str) -> dict:
  """Both backends' sweep rows, fitted exponents, and the plot written to output."""
  lengths = sweep_lengths(FLAGS.sweep_min_length, FLAGS.sweep_max_length)
  result, exponents = {}, {}
  figure, (time_axis, memory_axis) = plt.subplots(1, 2, figsize=(10, 4))
  for implementation in FLAGS.sweep_implementations:
    rows = benchmarking.scaling_sweep(
        lengths, FLAGS.sweep_num_latents, FLAGS.sweep_channels, implementation,
        batch_size=FLAGS.sweep_batch_size, iters=FLAGS.iters, warmup=FLAGS.warmup)
    result[implementation] = rows
    done = [row for row in rows if not row["oom"]]
    xs = [row["length"] for row in done]
    if len(done) >= 2:
      exponents[implementation] = {
          "time": benchmarking.fit_exponent(xs, [row["step_s"] for row in done]),
          "memory": benchmarking.fit_exponent(xs, [_memory(row) for row in done])}
    time_axis.loglog(xs, [row["step_s"] for row in done], "o-", label=implementation)
    memory_axis.loglog(xs, [_memory(row) / 2 ** 20 for row in done], "o-", label=implementation)
    for row in rows:
      status = "OOM" if row["oom"] else f"{row['step_s'] * 1e3:9.2f} ms  " \
          f"{_memory(row) / 2 ** 20:9.1f} MiB"
      print(f"sweep {implementation:8s} N={row['length']:7d}  {status}")
  memory_kind = "peak device" if done and done[0]["peak_memory_bytes"] else "XLA temp"
  time_axis.set(xlabel="input length N", ylabel="train step (s)", title="step time")
  memory_axis.set(xlabel="input length N", ylabel=f"{memory_kind} memory (MiB)", title="memory")
  for axis in (time_axis, memory_axis):
    axis.legend()
  figure.tight_layout()
  figure.savefig(os.path.join(output, "scaling.png"), dpi=100)
  plt.close(figure)
  for implementation, fitted in exponents.items():
    print(f"sweep {implementation}: time ~ N^{fitted['time']:.2f}, "
          f"memory ~ N^{fitted['memory']:.2f}")
  return {"rows": result, "exponents": exponents}


def _row(run) -> str:
  mfu = "-" if run["mfu"] is None else f"{100 * run['mfu']:.1f}%"
  memory = run["peak_memory_bytes"] or run.get("temp_bytes")
  memory = "-" if memory is None else f"{memory / 2 ** 20:.1f}"
  return (f"{run['name'][:36]:36s} {run['mode']:9s} {run['batch_size']:6d} "
          f"{run['step_s'] * 1e3:10.2f} {run['examples_per_s']:10.1f} {run['compile_s']:8.1f} "
          f"{run['flops_per_step'] / 1e9:10.3f} {run['flops_per_s'] / 1e12:8.4f} {mfu:>6s} "
          f"{memory:>9s}")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}.")
  for mode in FLAGS.mode:
    if mode not in benchmarking.MODES:
      raise ValueError(f"--mode entries must be in {benchmarking.MODES}, got {mode!r}.")
  logging.set_verbosity(logging.WARNING)  # Keeps Orbax's per-experiment INFO off the table.
  os.makedirs(FLAGS.output, exist_ok=True)
  environment = benchmarking.versions()
  print(f"{environment['device_kind']} x{environment['num_devices']} ({environment['backend']}), "
        f"jax {environment['jax']}, flax {environment['flax']}, {environment['date']}")
  print(f"{'config':36s} {'mode':9s} {'batch':>6s} {'step ms':>10s} {'ex/s':>10s} "
        f"{'compile':>8s} {'GFLOP/st':>10s} {'TFLOP/s':>8s} {'MFU':>6s} {'mem MiB':>9s}")
  runs = []
  for spec in FLAGS.configs:
    name, config, batch_size = load_config(spec)
    batch_size = FLAGS.batch_size or batch_size
    for mode in FLAGS.mode:
      run = dict(benchmarking.benchmark_model(config, batch_size, mode, FLAGS.iters,
                                              FLAGS.warmup), name=name)
      print(_row(run))
      runs.append(run)
  results = {"environment": environment, "runs": runs}
  if FLAGS.sweep:
    results["sweep"] = run_sweep(FLAGS.output)
  with open(os.path.join(FLAGS.output, "results.json"), "w") as f:
    json.dump(results, f, indent=1)
  print(f"wrote {os.path.join(FLAGS.output, 'results.json')}")


if __name__ == "__main__":
  app.run(main)
