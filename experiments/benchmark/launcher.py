"""Benchmark configs: python -m experiments.benchmark --configs=PRESET|configs/X.py[:options],...

For each config and mode (train, inference) prints and records step time, examples/s,
compile time, analytic FLOPs per step, FLOP/s, MFU and memory (benchmarking.py)
to OUTPUT/results.json (rewritten after every measurement, so a run cut short by a time
limit keeps what it measured). --sweep adds the encoder length sweep (N = sweep_min_length doubling
up to sweep_max_length; inputs [sweep_batch_size, N, 64]) for the attention backends
--sweep_implementations (default 'xla' and 'chunked'), with the fitted log-log exponents,
and plots time and memory against N to OUTPUT/scaling.png. --attention times the attention
function alone (forward + backward) per backend and jax.nn's 'xla' path at --attention_shapes
(--configs= with no config times only that). Runs unchanged on CPU, GPU, TPU.

--peers=transformers,lucidrains times the same model shape in PyTorch (torch_peers.py:
same batch, same step, on the GPU when JAX runs on one (--peer_device), else
on the CPU with torch threads = the CPUs JAX uses) right after ours,
--repeats times interleaved (ours, peers, ours, peers, ...); each row reports the median of
the repeats' medians, and each peer row the median over repeats of ours / peer step time
(each repeat's pair measured back to back) and its parameter count against ours. A config
a peer cannot express is reported and skipped. With --sweep the peers run the sweep's
encoder shape too (torch memory: the allocator's peak bytes in a step).
--compile_only compiles each step without running it (compile time, XLA's memory figures:
sizes a batch for a GPU from a CPU).
On a GPU with --peers, JAX takes SHARED_GPU_MEMORY_FRACTION of its memory
(XLA_PYTHON_CLIENT_MEM_FRACTION, unless set) and torch the rest. --batch_size=16,32,64
measures each size; a step that runs out of device memory is a row saying so, and the run
goes on.
--sweep_memory_limit_gb marks as OOM the lengths whose compiled (XLA) or measured (torch)
step memory exceeds it: how a CPU run shows where a device of that size runs out. On CPU
ours splits each batch over one JAX device per core, as the train launcher does
(--cpu_devices, experiments/cpu_devices.py).

  python -m experiments.benchmark --configs=cifar10_study --mode=train \
      --peers=transformers,lucidrains --repeats=3 --output=/tmp/bench
  python -m experiments.benchmark --configs=cifar10_study,perceiver_ar_8k --output=/tmp/bench
  python -m experiments.benchmark --configs=configs/cifar10_perceiver.py:tiny --mode=train \
      --iters=5 --sweep --sweep_min_length=256 --sweep_max_length=1024 --output=/tmp/bench
  python -m experiments.benchmark --configs=imagenet_io_fourier --set=model.dtype=bfloat16 \
      --set=model.encoder.attention.implementation=cudnn --output=/tmp/bench   # GPU
  python -m experiments.benchmark --configs= --attention --attention_dtype=bfloat16 \
      --output=/tmp/bench   # GPU: cudnn, chunked and xla against jax.nn
"""

import importlib.util
import json
import os

from absl import app, flags, logging
import matplotlib

matplotlib.use("Agg")
import jax  # pylint: disable=wrong-import-position
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from experiments import cpu_devices  # pylint: disable=wrong-import-position
from perceiver_jax.nn import attention  # pylint: disable=wrong-import-position
from experiments.benchmark import benchmarking  # pylint: disable=wrong-import-position
from perceiver_jax.train.experiment import sharded_batch_sizes  # pylint: disable=wrong-import-position

# name -> (config file, options, global batch size). The training runs' batches (1,024
# images, 512 x 2,048 bytes, 64 x 8,193 bytes) span many accelerators; these are sized for
# the 45% of an 80 GB GPU that ours gets beside a peer, from XLA:CPU's compiled memory
# (--compile_only; BENCHMARKS.md; estimates until measured on a GPU; --batch_size overrides).
PRESETS = {
    "cifar10_study": ("configs/cifar10_perceiver.py", "", 32),
    "imagenet_io_fourier": ("configs/imagenet_perceiver_io.py", "fourier", 16),
    "mlm_bytes": ("configs/mlm_bytes_perceiver_io.py", "", 32),
    "perceiver_ar_8k": ("configs/perceiver_ar_bytes.py", "", 8),
}
# The share of GPU memory JAX takes when the peers run on the same GPU (the rest is torch's).
SHARED_GPU_MEMORY_FRACTION = "0.45"
# --attention's default shapes: the presets' attention at their batch sizes.
ATTENTION_SHAPES = {
    "32x128x128x8x32": "cifar10_study self-attention",
    "16x512x512x8x128": "imagenet_io_fourier self-attention (batch 16)",
    "1x1024x8192x16x64c": "perceiver_ar_8k causal cross-attention (batch 1)",
}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FLAGS = flags.FLAGS
flags.adopt_module_key_flags(cpu_devices)  # --help lists --cpu_devices.
flags.DEFINE_list("configs", ["cifar10_study"],
                  f"Presets {sorted(PRESETS)} or configs/X.py[:options], comma-separated "
                  "(e.g. configs/imagenet_perceiver_io.py:conv,tiny,cifar10_study).")
flags.DEFINE_list("batch_size", [], "Global batch sizes, comma-separated, each measured for "
                  "every config (default: the preset's, else the config's).")
flags.DEFINE_multi_string("set", [], "PATH=VALUE: sets config field PATH (as in "
                          "--config.PATH of the train launcher) of every config, e.g. "
                          "--set=model.encoder.attention.implementation=cudnn; repeatable.")
flags.DEFINE_list("mode", ["train", "inference"], "Any of train, inference.")
flags.DEFINE_bool("compile_only", False, "Compile each config's step without running it: "
                  "compile time and XLA's memory figures (e.g. to size a batch for a GPU "
                  "from a CPU). Not with --peers.")
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
flags.DEFINE_float("sweep_memory_limit_gb", None, "Mark sweep lengths whose step needs more "
                   "memory than this (GiB) as OOM instead of running them.")
flags.DEFINE_bool("attention", False, "Also time the attention function alone (forward + "
                  "backward) for every backend and jax.nn's 'xla' path at --attention_shapes.")
flags.DEFINE_list("attention_shapes", list(ATTENTION_SHAPES),
                  "BxTxSxHxD shapes (batch, q_len, kv_len, heads, head_dim; 'c' appended: "
                  "causal) for --attention; default: the presets' attention shapes.")
flags.DEFINE_enum("attention_dtype", "float32", ["float32", "bfloat16", "float16"],
                  "Input dtype for --attention (cudnn needs bfloat16 or float16).")
flags.DEFINE_list("peers", [], "PyTorch peers to time beside ours: any of transformers, "
                  "lucidrains (experiments/benchmark/torch_peers.py; needs torch and the peer package).")
flags.DEFINE_enum("peer_device", "auto", ["auto", "cpu", "cuda"],
                  "torch device of the peers; auto: the GPU when JAX runs on one (torch must "
                  "see it), else the CPU.")
flags.DEFINE_integer("repeats", 1, "Interleaved repetitions of ours and the peers per config "
                     "and mode; rows report the median over repetitions.")
flags.DEFINE_string("output", None, "Directory for results.json (and scaling.png).")
flags.mark_flag_as_required("output")


def config_specs(entries) -> list:
  """The --configs entries with each config file's options rejoined: the list flag splits
  'configs/X.py:conv,tiny' into 'configs/X.py:conv' and 'tiny'."""
  specs = []
  for entry in entries:
    if specs and ".py:" in specs[-1] and entry not in PRESETS and ".py" not in entry:
      specs[-1] += "," + entry
    else:
      specs.append(entry)
  return specs


def load_config(spec: str):
  """(name, config, batch size or None) of a preset name or 'configs/X.py[:options]'."""
  if spec in PRESETS:
    path, options, batch_size = PRESETS[spec]
  else:
    path, _, options = spec.partition(":")
    batch_size = None
    if not path.endswith(".py"):
      raise ValueError(f"--configs entry {spec!r} is neither a preset {sorted(PRESETS)} nor "
                       "a config file configs/X.py[:options].")
  full = path if os.path.exists(path) else os.path.join(ROOT, path)
  if not os.path.exists(full):
    raise ValueError(f"--configs entry {spec!r}: no config file {path!r}.")
  module_spec = importlib.util.spec_from_file_location("benchmark_config", full)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return spec, module.get_config(options), batch_size


def set_fields(config, assignments) -> None:
  """Applies 'PATH=VALUE' assignments to `config`: VALUE is read as the field's current type
  (a string field or an unset string placeholder takes it as is; bool: true/false)."""
  for assignment in assignments:
    path, sep, text = assignment.partition("=")
    *parents, name = path.split(".")
    node = config
    for key in parents:
      node = node.get(key) if hasattr(node, "get") else None
    if not sep or node is None or not hasattr(node, "get_type") or name not in node:
      raise ValueError(f"--set={assignment!r}: no config field {path!r}; write PATH=VALUE with "
                       "a dotted path of an existing field, e.g. "
                       "model.encoder.attention.chunk_size=512.")
    kind = node.get_type(name)
    if kind is bool:
      if text.lower() not in ("true", "false"):
        raise ValueError(f"--set={assignment!r}: {path} is a bool; write true or false.")
      value = text.lower() == "true"
    elif kind in (int, float, str):
      try:
        value = kind(text)
      except ValueError as error:
        raise ValueError(f"--set={assignment!r}: {path} is {kind.__name__}: {error}") from None
    else:
      raise ValueError(f"--set={assignment!r}: {path} is a {kind.__name__}; set it in the "
                       "config file.")
    node[name] = value


def sweep_lengths(min_length: int, max_length: int) -> list:
  """min_length, 2 min_length, ... up to max_length."""
  if min_length < 1 or max_length < min_length:
    raise ValueError(f"need 1 <= --sweep_min_length ({min_length}) <= --sweep_max_length "
                     f"({max_length}).")
  lengths = [min_length]
  while lengths[-1] * 2 <= max_length:
    lengths.append(lengths[-1] * 2)
  return lengths


def _memory(row, total=False):
  """XLA's temp bytes of the row's program (with `total`: temp + argument + output bytes) on
  every backend: the device's peak bytes in use only grow within a process, so they cannot
  tell one row from the next; a torch peer's peak step bytes."""
  if "peak_step_bytes" in row:
    return row["peak_step_bytes"]
  if total:
    return sum(row.get(k, 0) for k in ("temp_bytes", "argument_bytes", "output_bytes"))
  return row.get("temp_bytes")


def _plot_rows(axes, label, rows, style):
  """Time and memory against N of a sweep's finished rows on the two axes."""
  done = [row for row in rows if not row["oom"]]
  xs = [row["length"] for row in done]
  axes[0].loglog(xs, [row["step_s"] for row in done], style, label=label)
  axes[1].loglog(xs, [_memory(row) / 2 ** 20 for row in done], style, label=label)


def _print_sweep_rows(label, rows):
  for row in rows:
    status = "OOM" if row["oom"] else f"{row['step_s'] * 1e3:9.2f} ms  " \
        f"{_memory(row) / 2 ** 20:9.1f} MiB"
    if row["oom"] and _memory(row):
      status += f" (needs {_memory(row, total=True) / 2 ** 20:.1f} MiB)"
    print(f"sweep {label:12s} N={row['length']:7d}  {status}")


def _exponents(rows):
  done = [row for row in rows if not row["oom"]]
  if len(done) < 2:
    return None
  xs = [row["length"] for row in done]
  return {"time": benchmarking.fit_exponent(xs, [row["step_s"] for row in done]),
          "memory": benchmarking.fit_exponent(xs, [_memory(row) for row in done])}


def run_sweep(output: str, peer_device: str, save=lambda sweep: None) -> dict:
  """Every backend's and peer's sweep rows, fitted exponents, and the plot in output; each
  backend's or peer's rows are printed and passed to `save` as soon as they are done."""
  lengths = sweep_lengths(FLAGS.sweep_min_length, FLAGS.sweep_max_length)
  limit = None if FLAGS.sweep_memory_limit_gb is None else int(
      FLAGS.sweep_memory_limit_gb * 2 ** 30)
  result, exponents = {}, {}

  def done(label, rows):
    result[label] = rows
    _print_sweep_rows(label, rows)
    save({"rows": result, "memory_limit_bytes": limit})

  for implementation in FLAGS.sweep_implementations:
    done(implementation, benchmarking.scaling_sweep(
        lengths, FLAGS.sweep_num_latents, FLAGS.sweep_channels, implementation,
        batch_size=FLAGS.sweep_batch_size, iters=FLAGS.iters, warmup=FLAGS.warmup,
        memory_limit_bytes=limit))
  if FLAGS.peers:
    from experiments.benchmark import torch_peers  # pylint: disable=import-outside-toplevel
    encoder = benchmarking.sweep_encoder(FLAGS.sweep_num_latents, FLAGS.sweep_channels)
    for peer in FLAGS.peers:
      done(peer, torch_peers.encoder_sweep(
          peer, lengths, encoder, FLAGS.sweep_batch_size, iters=FLAGS.iters,
          warmup=FLAGS.warmup, memory_limit_bytes=limit, device=peer_device))
  figure, axes = plt.subplots(1, 2, figsize=(10, 4))
  for label, rows in result.items():
    _plot_rows(axes, label, rows, "s--" if label in FLAGS.peers else "o-")
    fitted = _exponents(rows)
    if fitted:
      exponents[label] = fitted
  memory_kind = "XLA temp / torch peak step"
  axes[0].set(xlabel="input length N", ylabel="train step (s)", title="step time")
  axes[1].set(xlabel="input length N", ylabel=f"{memory_kind} memory (MiB)", title="memory")
  for axis in axes:
    axis.legend()
  figure.tight_layout()
  figure.savefig(os.path.join(output, "scaling.png"), dpi=100)
  plt.close(figure)
  for label, fitted in exponents.items():
    print(f"sweep {label}: time ~ N^{fitted['time']:.2f}, memory ~ N^{fitted['memory']:.2f}")
  return {"rows": result, "exponents": exponents, "memory_limit_bytes": limit}


def run_attention() -> list:
  """Rows of `benchmarking.attention_kernel` for every shape and backend (jax.nn's 'xla' path
  first), each with ratio = its step time / jax.nn's at the same shape."""
  rows = []
  for spec in FLAGS.attention_shapes:
    shape = benchmarking.parse_attention_shape(spec)
    reference = None
    for implementation in (benchmarking.JAX_NN_XLA,) + attention.IMPLEMENTATIONS:
      row = benchmarking.attention_kernel(shape, implementation, FLAGS.attention_dtype,
                                          FLAGS.iters, FLAGS.warmup)
      if "unsupported" in row:
        print(f"attention {spec:20s} {implementation:11s} unsupported: {row['unsupported']}")
      else:
        reference = reference or row["step_s"]
        row["ratio"] = row["step_s"] / reference
        print(f"attention {spec:20s} {implementation:11s} {row['step_s'] * 1e3:9.2f} ms "
              f"{row['ratio']:6.2f}x jax.nn  max |err| {row['max_abs_error']:.1e}  "
              f"XLA temp {row.get('temp_bytes', 0) / 2 ** 20:8.1f} MiB")
      rows.append(row)
  return rows


def _row(run) -> str:
  if run.get("compile_only"):
    return (f"{run['name'][:36]:36s} {run['mode']:9s} {run['batch_size']:6d} "
            f"{'-':>10s} {'-':>10s} {run['compile_s']:8.1f}  compiled, not run: XLA temp "
            f"{run.get('temp_bytes', 0) / 2 ** 30:.2f} GiB, with arguments and outputs "
            f"{_memory(run, total=True) / 2 ** 30:.2f} GiB")
  if run.get("oom"):
    return (f"{run['name'][:36]:36s} {run['mode']:9s} {run['batch_size']:6d} out of device "
            "memory: pass a smaller --batch_size")
  mfu = "-" if run["mfu"] is None else f"{100 * run['mfu']:.1f}%"
  memory = _memory(run)
  memory = "-" if memory is None else f"{memory / 2 ** 20:.1f}"
  return (f"{run['name'][:36]:36s} {run['mode']:9s} {run['batch_size']:6d} "
          f"{run['step_s'] * 1e3:10.2f} {run['examples_per_s']:10.1f} {run['compile_s']:8.1f} "
          f"{run['flops_per_step'] / 1e9:10.3f} {run['flops_per_s'] / 1e12:8.4f} {mfu:>6s} "
          f"{memory:>9s}")


def _peer_row(peer: dict) -> str:
  """A peer's line under ours: step, examples/s, first step (as compile), torch peak step
  memory, the ratio ours / peer step time and the parameter count against ours."""
  label = f"  vs {peer['peer']}"
  if "unsupported" in peer:
    return f"{label:36s} {peer['unsupported']}"
  if peer.get("oom"):
    return f"{label:36s} {peer['mode']:9s} {peer['batch_size']:6d} out of device memory"
  return (f"{label[:36]:36s} {peer['mode']:9s} {peer['batch_size']:6d} "
          f"{peer['step_s'] * 1e3:10.2f} {peer['examples_per_s']:10.1f} "
          f"{peer['first_step_s']:8.1f} {'-':>10s} {'-':>8s} {'-':>6s} "
          f"{peer['peak_step_bytes'] / 2 ** 20:9.1f}  ours/peer {peer['ratio']:.3f}  "
          f"params {peer['params']:,} ({100 * peer['params_rel_diff']:+.2f}% vs ours)")


def _median(records: list) -> dict:
  """The record with the median step time (the lower one for an even count), with every
  repeat's step time under repeat_step_s."""
  ordered = sorted(records, key=lambda record: record["step_s"])
  return dict(ordered[(len(ordered) - 1) // 2],
              repeat_step_s=[record["step_s"] for record in records])


def measure(name: str, config, batch_size, mode: str, peers=(), repeats: int = 1,
            iters: int = 10, warmup: int = 2, peer_device: str = "cpu",
            compile_only: bool = False) -> dict:
  """Ours (and each of `peers`) `repeats` times interleaved; the median records, with the
  peers' under run['peers'][peer]. ratio = the median over repeats of ours / peer step time
  of the same repeat (measured back to back, so a slow drift of the machine's load cancels);
  ratio_of_medians = ours / peer median step time. A step that runs out of device memory is
  recorded as {..., 'oom': True, 'error'} (ours: the peers are then not run) and the run goes
  on with the next config or mode. `compile_only`: `benchmarking.compile_model`'s record."""
  if compile_only:
    return dict(benchmarking.compile_model(config, batch_size, mode), name=name)
  if peers:
    from experiments.benchmark import torch_peers  # pylint: disable=import-outside-toplevel
  records = {}
  for peer in peers:
    try:
      torch_peers.build_peer(peer, config.model)
      records[peer] = []
    except ValueError as error:
      records[peer] = {"peer": peer, "unsupported": str(error)}
  ours = []
  for _ in range(repeats):
    try:
      ours.append(benchmarking.benchmark_model(config, batch_size, mode, iters, warmup))
    except jax.errors.JaxRuntimeError as error:
      if not benchmarking.is_oom(error):
        raise
      return {"name": name, "mode": mode, "batch_size": batch_size, "oom": True,
              "error": _first_line(error)}
    for peer, peer_records in records.items():
      if isinstance(peer_records, list):
        try:
          peer_records.append(torch_peers.benchmark_peer(
              peer, config, ours[-1]["batch_size"], mode, iters, warmup, device=peer_device))
        except RuntimeError as error:
          if not torch_peers.is_oom(error):
            raise
          records[peer] = {"peer": peer, "mode": mode, "batch_size": batch_size, "oom": True,
                           "error": _first_line(error)}
  run = dict(_median(ours), name=name)
  if records:
    run["peers"] = {}
    ours_params = torch_peers.our_param_count(config.model)
    for peer, peer_records in records.items():
      if isinstance(peer_records, dict):
        run["peers"][peer] = peer_records
        continue
      record = _median(peer_records)
      repeat_ratios = [mine["step_s"] / theirs["step_s"]
                       for mine, theirs in zip(ours, peer_records)]
      run["peers"][peer] = dict(record, ratio=float(np.median(repeat_ratios)),
                                repeat_ratios=repeat_ratios,
                                ratio_of_medians=run["step_s"] / record["step_s"],
                                params_ours=ours_params,
                                params_rel_diff=record["params"] / ours_params - 1)
  return run


def _first_line(error: Exception) -> str:
  return str(error).strip().splitlines()[0][:300]


def batch_sizes(values) -> list:
  """--batch_size's entries as ints >= 1 (ValueError naming the flag otherwise)."""
  try:
    sizes = [int(value) for value in values]
  except ValueError:
    sizes = [0]
  if any(size < 1 for size in sizes):
    raise ValueError(f"--batch_size must be comma-separated ints >= 1, got {values}.")
  return sizes


def share_gpu_memory(peers, peer_device: str, environ=os.environ):
  """When PyTorch peers may run on the GPU beside ours, caps JAX's GPU memory (preallocated,
  by default 75% of the card) at SHARED_GPU_MEMORY_FRACTION so torch gets the rest; a value
  the user set in XLA_PYTHON_CLIENT_MEM_FRACTION wins. Call before JAX starts its backends."""
  if peers and peer_device != "cpu":
    environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", SHARED_GPU_MEMORY_FRACTION)


def save_results(path: str, results: dict):
  """Writes results.json as it stands (to a temporary name, then renamed), so a run stopped
  by a time limit keeps what it measured."""
  with open(path + ".tmp", "w") as f:
    json.dump(results, f, indent=1)
  os.replace(path + ".tmp", path)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}.")
  share_gpu_memory(FLAGS.peers, FLAGS.peer_device)
  for spec in FLAGS.attention_shapes:
    benchmarking.parse_attention_shape(spec)  # A bad shape fails before anything runs.
  for mode in FLAGS.mode:
    if mode not in benchmarking.MODES:
      raise ValueError(f"--mode entries must be in {benchmarking.MODES}, got {mode!r}.")
  if FLAGS.repeats < 1:
    raise ValueError(f"--repeats must be >= 1, got {FLAGS.repeats}.")
  if FLAGS.compile_only and FLAGS.peers:
    raise ValueError("--compile_only runs no steps, so there is nothing to compare with "
                     "--peers; drop one of them.")
  logging.set_verbosity(logging.WARNING)  # Keeps Orbax's per-experiment INFO off the table.
  os.makedirs(FLAGS.output, exist_ok=True)
  configs, sizes = [], batch_sizes(FLAGS.batch_size)
  for spec in config_specs(FLAGS.configs):
    name, config, batch_size = load_config(spec)
    set_fields(config, FLAGS.set)
    for size in sizes or [batch_size or config.batch_size]:
      configs.append((name, config, size))
  cpu_devices.configure(FLAGS.cpu_devices, [
      size for _, config, batch_size in configs
      for size in sharded_batch_sizes(benchmarking.at_batch_size(config, batch_size))])
  environment = dict(benchmarking.versions(), set=list(FLAGS.set))
  peer_device = None
  if FLAGS.peers:
    from experiments.benchmark import torch_peers  # pylint: disable=import-outside-toplevel
    for peer in FLAGS.peers:
      if peer not in torch_peers.PEERS:
        raise ValueError(f"--peers entries must be in {torch_peers.PEERS}, got {peer!r}.")
    peer_device = torch_peers.peer_device(FLAGS.peer_device)
    environment.update(torch_peers.versions(peer_device))
    if peer_device == "cuda":
      environment["jax_gpu_memory_fraction"] = os.environ["XLA_PYTHON_CLIENT_MEM_FRACTION"]
  print(f"{environment['device_kind']} x{environment['num_devices']} ({environment['backend']}), "
        f"jax {environment['jax']}, flax {environment['flax']}, {environment['date']}"
        + (f"; peers: torch {environment['torch']} on {peer_device}" if peer_device else ""))
  print(f"{'config':36s} {'mode':9s} {'batch':>6s} {'step ms':>10s} {'ex/s':>10s} "
        f"{'compile':>8s} {'GFLOP/st':>10s} {'TFLOP/s':>8s} {'MFU':>6s} {'mem MiB':>9s}")
  results = {"environment": environment, "runs": []}
  path = os.path.join(FLAGS.output, "results.json")
  for name, config, batch_size in configs:
    for mode in FLAGS.mode:
      run = measure(name, config, batch_size, mode, FLAGS.peers, FLAGS.repeats, FLAGS.iters,
                    FLAGS.warmup, peer_device, FLAGS.compile_only)
      print(_row(run))
      for peer in run.get("peers", {}).values():
        print(_peer_row(peer))
      results["runs"].append(run)
      save_results(path, results)
  if FLAGS.attention:
    results["attention"] = run_attention()
    save_results(path, results)
  if FLAGS.sweep:
    results["sweep"] = run_sweep(FLAGS.output, peer_device, lambda sweep: save_results(
        path, dict(results, sweep=sweep)))
    save_results(path, results)
  print(f"wrote {path}")

