"""Timing a model: step time, throughput, FLOP/s, MFU and memory of the real jitted steps.

- `time_fn(fn, *args)`: compile time, then the median / p10 / p90 of synchronised runs (and
  XLA's compiled memory analysis when `fn` is jitted).
- `benchmark_model(config, batch_size, mode)`: the sharded, donated train step that
  `experiment.build_experiment` compiles (forward, backward, optimizer update) or the jitted
  forward, on random inputs of the config's shapes ([batch, ...] as `tasks.example_inputs`)
  placed on device first; a host transfer inside a timed step raises (transfer guard).
  FLOPs per step are analytic (`model_stats.flops` per example x batch, x3 for training).
- `compile_model(config, batch_size, mode)`: the same program compiled, not run, on an
  abstract state: compile time and XLA's memory figures at any batch size.
- `scaling_sweep(lengths, ...)`: a `sweep_encoder` training step on inputs [batch, N, C]
  for each N: time and memory against input length, out-of-memory (or over an optional
  memory limit) recorded; `fit_exponent` is the slope of a log-log least-squares fit.
- `attention_kernel(shape, implementation)`: forward + backward of the attention function
  alone at one shape, per backend, against `jax.nn.dot_product_attention`'s 'xla' path.
"""

import datetime
import functools
import tempfile
import time
from typing import Callable, Optional, Sequence

import flax
import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

from perceiver_jax import tasks
from perceiver_jax.nn import attention
from perceiver_jax.nn.attention import AttentionConfig
from perceiver_jax.nn.encoder import PerceiverEncoder
from perceiver_jax.train.experiment import build_experiment
from perceiver_jax.nn.model_stats import flops
from perceiver_jax.train.objectives import INPUT_KEYS, make_objective
from perceiver_jax.train.sharding import batch_sharding, global_batch

# Dense (no sparsity) peak FLOP/s per chip; float32 is the non-tensor-core (FMA) rate on
# NVIDIA GPUs. TPUs publish no float32 peak (f32 matmuls run as several bf16 passes): None.
# Sources: NVIDIA H100 datasheet (SXM5: 1,979 / PCIe: 1,513 TFLOPS bf16 with 2:4 sparsity,
# i.e. 989 / 756 dense; FP32 67 / 51 TFLOPS); NVIDIA H200 datasheet (same Hopper SXM rates);
# NVIDIA A100 datasheet (bf16 312 TFLOPS, FP32 19.5 TFLOPS); Google Cloud TPU system
# architecture pages cloud.google.com/tpu/docs/{v4,v5e,v5p} (bf16 per chip: 275, 197, 459).
# Matched in order as lower-case substrings of `device.device_kind`.
PEAK_FLOPS = (
    ("h100 pcie", {"bfloat16": 756e12, "float32": 51e12}),
    ("h100", {"bfloat16": 989e12, "float32": 67e12}),  # SXM: "NVIDIA H100 80GB HBM3".
    ("h200", {"bfloat16": 989e12, "float32": 67e12}),
    ("a100", {"bfloat16": 312e12, "float32": 19.5e12}),
    ("tpu v5 lite", {"bfloat16": 197e12, "float32": None}),
    ("tpu v5e", {"bfloat16": 197e12, "float32": None}),
    ("tpu v5", {"bfloat16": 459e12, "float32": None}),  # v5p reports "TPU v5" / "TPU v5p".
    ("tpu v4", {"bfloat16": 275e12, "float32": None}),
)
MODES = ("train", "inference")
IMPLEMENTATIONS = ("xla", "chunked")
JAX_NN_XLA = "jax.nn-xla"  # jax.nn.dot_product_attention(implementation='xla'): the reference.


def peak_flops(device_kind: str, dtype: str) -> Optional[float]:
  """Dense peak FLOP/s of one `device_kind` device in `dtype`; None when unknown (CPUs)."""
  if dtype not in ("bfloat16", "float32"):
    raise ValueError(f"dtype must be 'bfloat16' or 'float32' for the peak FLOP/s, got {dtype!r}.")
  kind = device_kind.lower()
  for key, peaks in PEAK_FLOPS:
    if key in kind:
      return peaks[dtype]
  return None


def versions() -> dict:
  """Software versions, device kind and count, and the date (UTC), for a results record."""
  device = jax.devices()[0]
  return {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "flax": flax.__version__,
          "backend": jax.default_backend(), "device_kind": device.device_kind,
          "num_devices": jax.device_count(),
          "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def _compiled_bytes(compiled) -> Optional[dict]:
  analysis = compiled.memory_analysis()
  if analysis is None:
    return None
  return {"temp_bytes": int(analysis.temp_size_in_bytes),
          "argument_bytes": int(analysis.argument_size_in_bytes),
          "output_bytes": int(analysis.output_size_in_bytes)}


def time_fn(fn: Callable, *args, warmup: int = 2, iters: int = 10,
            carry_first: bool = False) -> dict:
  """Times `fn(*args)`: {median_s, p10_s, p90_s, compile_s, memory}.

  A jitted `fn` is compiled with `.lower(*args).compile()` (compile_s; memory = XLA's
  temp/argument/output bytes) and the executable is run; an already compiled `fn` is run as
  it is (compile_s ~0); otherwise compile_s is the first call and memory None. Then
  `warmup` untimed and `iters` timed runs, each waited for with `jax.block_until_ready`,
  under `jax.transfer_guard('disallow')`: an implicit host<->device transfer in a run
  (numpy inputs, `np.asarray` of a result) raises. `carry_first` feeds the
  first output back as the first argument (steps that donate their state).
  """
  if warmup < 0 or iters < 1:
    raise ValueError(f"time_fn needs warmup >= 0 and iters >= 1, got {warmup} and {iters}.")
  memory = None
  start = time.perf_counter()
  if hasattr(fn, "lower"):
    fn = fn.lower(*args).compile()
  if hasattr(fn, "memory_analysis"):  # Compiled (here or by the caller): no first call.
    memory = _compiled_bytes(fn)
  else:
    out = jax.block_until_ready(fn(*args))
    args = (out[0],) + args[1:] if carry_first else args
  compile_s = time.perf_counter() - start
  times = []
  with jax.transfer_guard("disallow"):
    for i in range(warmup + iters):
      start = time.perf_counter()
      out = jax.block_until_ready(fn(*args))
      if i >= warmup:
        times.append(time.perf_counter() - start)
      if carry_first:
        args = (out[0],) + args[1:]
  p10, median, p90 = np.percentile(times, [10, 50, 90])
  return {"median_s": float(median), "p10_s": float(p10), "p90_s": float(p90),
          "compile_s": compile_s, "memory": memory}


def peak_memory_bytes() -> Optional[int]:
  """The first device's peak bytes in use since the process started (None where the backend
  does not say: CPU). JAX cannot reset it, so within one process it covers every earlier
  measurement too; XLA's compiled bytes are each program's own."""
  stats = jax.devices()[0].memory_stats()
  return None if not stats else stats.get("peak_bytes_in_use")


def random_batch(config, batch_size: int, seed: int = 0) -> dict:
  """A numpy training batch of `config` (a training config): random inputs of the model's
  shapes (ids in [6, vocab)), random labels, all-ones `mask` [batch_size]."""
  rng = np.random.default_rng(seed)
  model = config.model
  inputs = tasks.example_inputs(model, 1)
  if not hasattr(inputs, "shape"):
    raise ValueError(f"config.model.task={model.task!r} has {{modality: array}} inputs and no "
                     "training objective; benchmark a task with one input array.")
  shape = (batch_size,) + inputs.shape[1:]
  batch = {"mask": np.ones((batch_size,), np.float32)}
  if model.task in INPUT_KEYS and INPUT_KEYS[model.task] != "ids":
    batch[INPUT_KEYS[model.task]] = rng.standard_normal(shape).astype(np.float32)
  else:
    if model.task == "language_modeling":  # Rows of max_context + 1 ids.
      vocab = model.perceiver_ar.vocab_size
      shape = (batch_size, shape[1] + 1)
    else:
      vocab = model.vocab_size
    batch["ids"] = rng.integers(6, vocab, shape).astype(np.int32)
  if model.task in INPUT_KEYS:
    batch["label"] = rng.integers(0, model.num_classes, (batch_size,)).astype(np.int32)
  return batch


def _forward(experiment):
  """The jitted forward pass (as in evaluation, without the loss) of `experiment`."""
  objective = make_objective(experiment.config)
  model = experiment.model

  def forward(state, batch):
    inputs, kwargs, _ = objective.prepare(batch, state.rng, False)
    return model.apply(state.variables, inputs, deterministic=True, **kwargs)

  return jax.jit(forward)


def at_batch_size(config, batch_size: Optional[int] = None):
  """A copy of training config `config` whose train and eval batches are `batch_size`
  (default config.batch_size)."""
  config = config.copy_and_resolve_references()
  batch_size = config.batch_size if batch_size is None else batch_size
  if not isinstance(batch_size, int) or batch_size < 1:
    raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}.")
  with config.unlocked():
    config.batch_size = batch_size
    config.eval_batch_size = batch_size
  return config


def benchmark_model(config, batch_size: Optional[int] = None, mode: str = "train",
                    iters: int = 10, warmup: int = 2) -> dict:
  """Times the train step (mode 'train') or forward (mode 'inference') of training config
  `config` at `batch_size` (default config.batch_size); returns a flat results record."""
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
  config = at_batch_size(config, batch_size)
  batch_size = config.batch_size
  with tempfile.TemporaryDirectory() as workdir:
    experiment = build_experiment(config, workdir)
    try:
      state = experiment.init()
      batch = global_batch(random_batch(config, batch_size), experiment.mesh)
      if mode == "train":
        timing = time_fn(experiment.train_step, state, batch, warmup=warmup, iters=iters,
                         carry_first=True)
      else:
        timing = time_fn(_forward(experiment), state, batch, warmup=warmup, iters=iters)
    finally:
      experiment.checkpointer.close()
  input_shape = tasks.example_inputs(config.model, 1).shape[1:]
  step_flops = flops(experiment.model, input_shape) * batch_size * (3 if mode == "train" else 1)
  dtype = config.model.dtype
  info = versions()
  peak = peak_flops(info["device_kind"], dtype)
  achieved = step_flops / timing["median_s"]
  memory = timing.pop("memory") or {}
  return dict(info, task=config.model.task, mode=mode, batch_size=batch_size, dtype=dtype,
              examples_per_s=batch_size / timing["median_s"], step_s=timing["median_s"],
              step_p10_s=timing["p10_s"], step_p90_s=timing["p90_s"],
              compile_s=timing["compile_s"], flops_per_step=step_flops,
              flops_per_s=achieved,
              mfu=None if peak is None else achieved / (peak * info["num_devices"]),
              peak_memory_bytes=peak_memory_bytes(), **memory)


def compile_model(config, batch_size: Optional[int] = None, mode: str = "train") -> dict:
  """Compiles, without running, the train step (mode 'train') or forward (mode 'inference')
  of training config `config` at `batch_size` on an abstract state: compile_s and XLA's
  temp / argument / output bytes of the program `benchmark_model` runs. Sizes a batch for a
  device from any machine (figures from another backend are estimates: fusion and buffer
  reuse differ, and XLA:CPU keeps float32 copies of some bfloat16 values)."""
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
  config = at_batch_size(config, batch_size)
  with tempfile.TemporaryDirectory() as workdir:
    experiment = build_experiment(config, workdir)
    try:
      batch = jax.tree_util.tree_map(
          lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                         sharding=batch_sharding(experiment.mesh)),
          random_batch(config, config.batch_size))
      step = experiment.train_step if mode == "train" else _forward(experiment)
      start = time.perf_counter()
      compiled = step.lower(experiment.abstract_state, batch).compile()
      compile_s = time.perf_counter() - start
    finally:
      experiment.checkpointer.close()
  return dict(versions(), task=config.model.task, mode=mode, batch_size=config.batch_size,
              dtype=config.model.dtype, compile_s=compile_s,
              compile_only=True, **(_compiled_bytes(compiled) or {}))


def _encoder_step(encoder: PerceiverEncoder, learning_rate: float = 1e-3):
  """A jitted SGD training step of `encoder` on the loss mean(latents ** 2); donates params."""

  def step(params, inputs):
    loss_fn = lambda p: jnp.mean(jnp.square(encoder.apply({"params": p}, inputs)))
    loss, grads = jax.value_and_grad(loss_fn)(params)
    return jax.tree_util.tree_map(lambda p, g: p - learning_rate * g, params, grads), loss

  return jax.jit(step, donate_argnums=0)


def is_oom(error: Exception) -> bool:
  """Whether a JAX runtime error is the device running out of memory."""
  return "RESOURCE_EXHAUSTED" in str(error) or "out of memory" in str(error).lower()


def sweep_encoder(num_latents: int = 256, channels: int = 256, implementation: str = "xla",
                  chunk_size: int = 1024) -> PerceiverEncoder:
  """The sweep's encoder: one cross-attention (1 head) and one self-attention layer (1 head)
  over num_latents x channels latents, attending with `implementation` and `chunk_size`."""
  return PerceiverEncoder(
      num_latents=num_latents, num_latent_channels=channels, num_self_attention_blocks=1,
      num_self_attention_layers_per_block=1, num_self_attention_heads=1,
      attention=AttentionConfig(implementation, chunk_size))


def scaling_sweep(lengths: Sequence[int], num_latents: int = 256, channels: int = 256,
                  implementation: str = "xla", batch_size: int = 1, input_channels: int = 64,
                  chunk_size: int = 1024, iters: int = 3, warmup: int = 1,
                  memory_limit_bytes: Optional[int] = None) -> list:
  """For each N in `lengths`: a `sweep_encoder` training step on inputs
  [batch_size, N, input_channels]. Each row: length, step_s, compile_s, XLA's
  temp/argument/output bytes, the device's peak_memory_bytes so far in this process (None on
  CPU), oom.
  A row is oom when the device runs out of memory, or, with `memory_limit_bytes`, when XLA's
  compiled temp + argument + output bytes exceed it (checked after compiling, before
  running: a CPU has no device memory to exhaust). The sweep stops after the first OOM row."""
  if not lengths or any(not isinstance(n, int) or n < 1 for n in lengths):
    raise ValueError(f"lengths must be a non-empty list of ints >= 1, got {lengths!r}.")
  if memory_limit_bytes is not None and memory_limit_bytes < 1:
    raise ValueError(f"memory_limit_bytes must be >= 1 or None, got {memory_limit_bytes}.")
  encoder = sweep_encoder(num_latents, channels, implementation, chunk_size)
  step = _encoder_step(encoder)
  init = jax.jit(encoder.init)  # Parameters do not depend on N: one compile for the sweep.
  init_inputs = jnp.zeros((batch_size, 1, input_channels))
  rows = []
  for length in lengths:
    row = {"implementation": implementation, "length": length, "num_latents": num_latents,
           "channels": channels, "batch_size": batch_size, "oom": False}
    try:
      inputs = jax.device_put(np.random.default_rng(length).standard_normal(
          (batch_size, length, input_channels), np.float32))
      params = init(jax.random.PRNGKey(0), init_inputs)["params"]  # Fresh: the step donates.
      start = time.perf_counter()
      compiled = step.lower(params, inputs).compile()
      row.update(compile_s=time.perf_counter() - start, **(_compiled_bytes(compiled) or {}))
      total = sum(row.get(k, 0) for k in ("temp_bytes", "argument_bytes", "output_bytes"))
      if memory_limit_bytes is not None and total > memory_limit_bytes:
        row["oom"] = True
      else:
        timing = time_fn(compiled, params, inputs, warmup=warmup, iters=iters, carry_first=True)
        row.update(step_s=timing["median_s"], peak_memory_bytes=peak_memory_bytes())
    except jax.errors.JaxRuntimeError as error:
      if not is_oom(error):
        raise
      row["oom"] = True
    rows.append(row)
    if row["oom"]:
      break
  return rows


def fit_exponent(lengths: Sequence[float], values: Sequence[float]) -> float:
  """Slope k of the least-squares line log(values) = k log(lengths) + c."""
  x, y = np.asarray(lengths, np.float64), np.asarray(values, np.float64)
  if x.shape != y.shape or x.ndim != 1 or x.size < 2:
    raise ValueError(f"fit_exponent needs two equal-length 1-D sequences of >= 2 points, got "
                     f"shapes {x.shape} and {y.shape}.")
  if np.any(x <= 0) or np.any(y <= 0):
    raise ValueError("fit_exponent needs positive lengths and values (log-log fit); drop the "
                     "zero or OOM points.")
  return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def parse_attention_shape(spec: str) -> dict:
  """'BxTxSxHxD' (batch, q_len, kv_len, heads, head_dim), 'c' appended for causal, e.g.
  '16x128x128x8x32' or '1x1024x8192x8x64c' -> dict of those fields."""
  causal = spec.endswith("c")
  parts = spec[:-1 if causal else None].split("x")
  if len(parts) != 5 or not all(part.isdigit() and int(part) > 0 for part in parts):
    raise ValueError(f"attention shape {spec!r} must be BxTxSxHxD of positive ints (batch, "
                     "q_len, kv_len, heads, head_dim), with 'c' appended for causal.")
  batch, q_len, kv_len, heads, head_dim = map(int, parts)
  if causal and q_len > kv_len:
    raise ValueError(f"causal attention shape {spec!r} needs q_len <= kv_len.")
  return dict(spec=spec, batch=batch, q_len=q_len, kv_len=kv_len, heads=heads,
              head_dim=head_dim, causal=causal)


def _kernel_inputs(batch, q_len, kv_len, heads, head_dim, dtype):
  """(query, key, value, out_weight) of `attention_kernel`: random, fixed by the shape."""
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  query, out_weight = (jax.random.normal(key, (batch, q_len, heads, head_dim), dtype)
                       for key in keys[:2])
  key_, value = (jax.random.normal(key, (batch, kv_len, heads, head_dim), dtype)
                 for key in keys[2:])
  return query, key_, value, out_weight


def _jax_nn_xla(query, key, value, causal):
  mask = attention.causal_mask(query.shape[1], key.shape[1]) if causal else None  # End-aligned.
  return jax.nn.dot_product_attention(query, key, value, mask=mask, implementation="xla")


@functools.lru_cache(maxsize=8)
def _reference_output(batch, q_len, kv_len, heads, head_dim, causal, dtype):
  """JAX_NN_XLA's output in float32 on `_kernel_inputs` in float32, once per shape."""
  inputs = _kernel_inputs(batch, q_len, kv_len, heads, head_dim, dtype)[:3]
  return jax.jit(_jax_nn_xla, static_argnums=3)(
      *[x.astype(jnp.float32) for x in inputs], causal)


def attention_kernel(shape: dict, implementation: str, dtype: str = "float32",
                     iters: int = 10, warmup: int = 2) -> dict:
  """Times the jitted forward + backward (gradients of sum(out * w) for query, key and value)
  of `attention.dot_product_attention` with `implementation`, or of `JAX_NN_XLA`, at a
  `parse_attention_shape` shape on random inputs. The row: step_s (median), compile_s,
  XLA's memory bytes and max_abs_error of the output against JAX_NN_XLA in float32 (computed
  once per shape); or `unsupported` with the reason where the backend cannot run here (e.g.
  cudnn on CPU)."""
  dims = tuple(shape[name] for name in ("batch", "q_len", "kv_len", "heads", "head_dim"))
  causal = shape["causal"]
  row = dict(shape, implementation=implementation, dtype=dtype)
  query, key_, value, out_weight = _kernel_inputs(*dims, dtype)
  if implementation == JAX_NN_XLA:
    forward = lambda q, k, v: _jax_nn_xla(q, k, v, causal)
  else:
    forward = lambda q, k, v: attention.dot_product_attention(
        q, k, v, causal=causal, config=AttentionConfig(implementation))
  loss = lambda q, k, v: jnp.sum(forward(q, k, v).astype(jnp.float32) * out_weight)
  step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
  try:
    timing = time_fn(step, query, key_, value, warmup=warmup, iters=iters)
  except ValueError as error:  # The backend's own check, e.g. cudnn off an NVIDIA GPU.
    return dict(row, unsupported=str(error))
  error = jnp.max(jnp.abs(jax.jit(forward)(query, key_, value).astype(jnp.float32)
                          - _reference_output(*dims, causal, dtype)))
  return dict(row, step_s=timing["median_s"], compile_s=timing["compile_s"],
              max_abs_error=float(error), **(timing["memory"] or {}))
