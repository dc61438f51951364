"""PyTorch peers of our Perceiver models, built from our configs, for side-by-side timing.

Peers (torch and the peer packages are imported inside the functions; the library never needs
them):
- 'transformers': transformers' `PerceiverModel` from a `PerceiverConfig` (random init, no
  download). Images [batch, H, W, C] go through its pixels + Fourier `PerceiverImagePreprocessor`
  (NCHW in, as the model expects); the original Perceiver's head is the mean over latents and
  Linear of its `PerceiverProjectionDecoder` (written out: that class is abstract in 5.x),
  Perceiver IO's query head its `PerceiverClassificationDecoder` (together:
  `PerceiverForImageClassificationFourier` at the ImageNet shape).
- 'lucidrains': `perceiver_pytorch.Perceiver` (one cross-attend before each of its `depth`
  blocks); its fixed GEGLU x4 feed-forwards are replaced by our MLP (Linear(D, w D) -> GELU ->
  Linear(w D, D)) so the widening factor matches; the rest (bias-free q/k/v projections, a
  LayerNorm before the logits) is its own.

`build_peer(peer, model_config)`: images [batch, H, W, C] -> logits [batch, classes] for a
  'perceiver_classification' or pixels + Fourier 'image_classification' task config.
`build_encoder_peer(peer, encoder, input_channels)`: a `PerceiverEncoder`'s shape as a peer,
  inputs [batch, N, input_channels] -> latents [batch, num_latents, num_latent_channels].
Both raise ValueError for settings the peer cannot express.
`benchmark_peer(...)` and `encoder_sweep(...)` time a peer's train step (forward, backward,
  AdamW / SGD update) or no-grad forward like `benchmarking.benchmark_model` and
  `benchmarking.scaling_sweep`, on the device `peer_device` picks: the GPU when JAX runs on
  one, else the CPU (torch threads = the CPUs this process may use, JAX's CPU thread pool
  size). On the GPU every timed step ends with `torch.cuda.synchronize()` (torch launches
  kernels asynchronously) and float32 matmuls may use TF32, as JAX's default precision does
  there. Torch memory is the peak bytes the allocator holds during one step above what it held
  before it: on the CPU from the torch profiler (`profile_memory`), on the GPU from
  `torch.cuda.max_memory_allocated`.
"""

from typing import Optional, Sequence

import jax
import numpy as np

from perceiver_jax import tasks
from experiments.benchmark import benchmarking
from perceiver_jax.nn.encoder import PerceiverEncoder
from perceiver_jax.nn.model_stats import param_count
from perceiver_jax.train.sharding import usable_cpu_cores

PEERS = ("transformers", "lucidrains")
DEVICES = ("auto", "cpu", "cuda")  # Where the peers run; 'auto' follows JAX's backend.
AUTOCAST = ("float32", "bfloat16")  # Compute dtypes; bfloat16 runs under torch.autocast.
# Our MLP activation name -> transformers' ACT2FN name / torch GELU approximation.
_HF_ACTIVATIONS = {"gelu": "gelu_pytorch_tanh", "gelu_exact": "gelu", "relu": "relu"}


def _check_peer(peer: str):
  if peer not in PEERS:
    raise ValueError(f"peer must be one of {PEERS}, got {peer!r}.")


def _cannot(peer: str, what: str, fix: str):
  return ValueError(f"the {peer!r} peer cannot express {what}; {fix}.")


def peer_device(requested: str = "auto") -> str:
  """The torch device the peers run on, 'cpu' or 'cuda'. 'auto' follows JAX: 'cuda' when JAX
  runs on a GPU, 'cpu' when it runs on the CPU. A peer on the CPU beside ours on an
  accelerator would compare machines, not code, so 'auto' raises ValueError there unless torch
  can use that GPU; 'cpu' compares with the CPU anyway."""
  import torch  # pylint: disable=import-outside-toplevel
  if requested not in DEVICES:
    raise ValueError(f"peer device must be one of {DEVICES}, got {requested!r}.")
  backend = jax.default_backend()
  if requested == "auto":
    if backend == "cpu":
      return "cpu"
    if backend != "gpu":
      raise ValueError(f"JAX runs on {backend!r} and the PyTorch peers run on 'cpu' or 'cuda' "
                       "only; pass --peer_device=cpu to compare with torch on the CPU anyway.")
    requested = "cuda"
  if requested == "cuda" and not torch.cuda.is_available():
    raise ValueError(f"peer device 'cuda' needs a torch that sees a GPU; torch "
                     f"{torch.__version__} sees none. Install a CUDA build of torch, or pass "
                     "--peer_device=cpu to compare with torch on the CPU.")
  return requested


def _check_device(device: str):
  if device not in DEVICES[1:]:
    raise ValueError(f"device must be 'cpu' or 'cuda' (peer_device resolves 'auto'), got "
                     f"{device!r}.")


def versions(device: str = "cpu") -> dict:
  """torch, transformers and perceiver-pytorch versions, the peers' device (the GPU's name on
  'cuda') and torch's thread count."""
  from importlib import metadata  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  info = {"torch": torch.__version__, "transformers": metadata.version("transformers"),
          "perceiver_pytorch": metadata.version("perceiver-pytorch"),
          "torch_threads": usable_cpu_cores(), "peer_device": device}
  if device == "cuda":
    info["peer_gpu"] = torch.cuda.get_device_name()
  return info


def _prepare(device: str, seed: int):
  """Seeds torch and sets its threads and float32 matmul precision for `device`."""
  import torch  # pylint: disable=import-outside-toplevel
  torch.set_num_threads(usable_cpu_cores())
  torch.manual_seed(seed)
  # JAX's default precision lets float32 dots use TF32 on NVIDIA GPUs; torch's does not.
  torch.set_float32_matmul_precision("high" if device == "cuda" else "highest")


def _synchronized(step, device: str):
  """`step` that returns only once the device has finished it (CUDA kernels run async)."""
  import torch  # pylint: disable=import-outside-toplevel
  if device != "cuda":
    return step

  def run(*args):
    out = step(*args)
    torch.cuda.synchronize()
    return out
  return run


def _check_encoder(peer: str, encoder: PerceiverEncoder):
  """Settings neither peer has: residual dropout, non-float32 compute, squared ReLU."""
  if encoder.dropout_rate > 0:
    raise _cannot(peer, f"encoder dropout_rate={encoder.dropout_rate} (no residual dropout)",
                  "set it to 0.0")
  if np.dtype(encoder.dtype).name not in AUTOCAST:
    raise _cannot(peer, f"dtype {np.dtype(encoder.dtype).name}",
                  f"benchmark configs of dtype {AUTOCAST}")
  if encoder.activation not in _HF_ACTIVATIONS:
    raise _cannot(peer, f"activation={encoder.activation!r}",
                  f"use one of {tuple(_HF_ACTIVATIONS)}")


def _hf_config(encoder: PerceiverEncoder, input_channels: int, num_classes: int = 1):
  """A transformers PerceiverConfig of `encoder`'s shape; ValueError where it has none."""
  from transformers import PerceiverConfig  # pylint: disable=import-outside-toplevel
  _check_encoder("transformers", encoder)
  if encoder.num_cross_attention_layers != 1:
    raise _cannot("transformers", f"num_cross_attention_layers="
                  f"{encoder.num_cross_attention_layers} (its encoder cross-attends once)",
                  "benchmark a config with one cross-attend")
  if encoder.num_self_attention_blocks > 1 and not encoder.first_self_attention_block_shared:
    raise _cannot("transformers", "an unshared first self-attention block (it repeats one "
                  "block)", "set first_self_attention_block_shared=True")
  qk = {encoder.cross_attention_qk_channels, encoder.self_attention_qk_channels}
  v = {encoder.cross_attention_v_channels, encoder.self_attention_v_channels}
  if len(qk) > 1 or len(v) > 1:
    raise _cannot("transformers", "different cross- and self-attention qk/v channels (one "
                  "qk_channels and one v_channels for both)", "set them equal or leave them None")
  return PerceiverConfig(
      num_latents=encoder.num_latents, d_latents=encoder.num_latent_channels,
      d_model=input_channels, num_blocks=encoder.num_self_attention_blocks,
      num_self_attends_per_block=encoder.num_self_attention_layers_per_block,
      num_self_attention_heads=encoder.num_self_attention_heads,
      num_cross_attention_heads=encoder.num_cross_attention_heads, qk_channels=qk.pop(),
      v_channels=v.pop(), cross_attention_shape_for_attention="kv",
      self_attention_widening_factor=encoder.self_attention_widening_factor,
      cross_attention_widening_factor=encoder.cross_attention_widening_factor,
      hidden_act=_HF_ACTIVATIONS[encoder.activation],
      attention_probs_dropout_prob=encoder.attention.dropout_rate,
      use_query_residual=encoder.use_query_residual, num_labels=num_classes)


def _mlp(channels: int, widening_factor: int, activation: str):
  """Our MLP in torch: Linear(C, w C) -> activation -> Linear(w C, C)."""
  import torch  # pylint: disable=import-outside-toplevel
  act = {"gelu": torch.nn.GELU(approximate="tanh"), "gelu_exact": torch.nn.GELU(),
         "relu": torch.nn.ReLU()}[activation]
  return torch.nn.Sequential(torch.nn.Linear(channels, widening_factor * channels), act,
                             torch.nn.Linear(widening_factor * channels, channels))


def _lucidrains_perceiver(encoder: PerceiverEncoder, input_channels: int, fourier: Optional[dict],
                          num_classes: Optional[int]):
  """perceiver_pytorch.Perceiver of `encoder`'s shape with our MLPs; `fourier`: its Fourier
  settings ({bands, max_freq, axes}) or None for inputs [batch, N, input_channels]."""
  from perceiver_pytorch import perceiver_pytorch as lucidrains  # pylint: disable=C0415
  _check_encoder("lucidrains", encoder)
  p, l = encoder.num_cross_attention_layers, encoder.num_self_attention_blocks
  if p != l:
    raise _cannot("lucidrains", f"num_cross_attention_layers={p} != num_self_attention_blocks="
                  f"{l} (it cross-attends before every block)", "set them equal")
  if l > 1 and (encoder.first_cross_attention_layer_shared
                or encoder.first_self_attention_block_shared):
    raise _cannot("lucidrains", "a first cross-attention or block shared with the later ones "
                  "(weight_tie_layers shares blocks 2.. only)",
                  "set first_cross_attention_layer_shared=False and "
                  "first_self_attention_block_shared=False")
  if encoder.attention.dropout_rate > 0:
    raise _cannot("lucidrains", "attention dropout in benchmarks", "set it to 0.0")
  cross_qk = encoder.cross_attention_qk_channels or (input_channels + (fourier or {}).get(
      "channels", 0))
  self_qk = encoder.self_attention_qk_channels or encoder.num_latent_channels
  if (encoder.cross_attention_v_channels or cross_qk) != cross_qk or (
      encoder.self_attention_v_channels or self_qk) != self_qk:
    raise _cannot("lucidrains", "v_channels != qk_channels (one inner width per attention)",
                  "leave the v channels None")
  if encoder.num_latent_channels % encoder.num_self_attention_heads or (
      cross_qk % encoder.num_cross_attention_heads):
    raise _cannot("lucidrains", "channels not divisible by the heads", "fix the head counts")
  model = lucidrains.Perceiver(
      num_freq_bands=(fourier or {}).get("bands", 1), depth=l,
      max_freq=(fourier or {}).get("max_freq", 2.0), input_channels=input_channels,
      input_axis=(fourier or {}).get("axes", 1), num_latents=encoder.num_latents,
      latent_dim=encoder.num_latent_channels, cross_heads=encoder.num_cross_attention_heads,
      latent_heads=encoder.num_self_attention_heads,
      cross_dim_head=cross_qk // encoder.num_cross_attention_heads,
      latent_dim_head=self_qk // encoder.num_self_attention_heads,
      num_classes=num_classes or 1, weight_tie_layers=l > 1,
      fourier_encode_data=fourier is not None,
      self_per_cross_attn=encoder.num_self_attention_layers_per_block,
      final_classifier_head=num_classes is not None)
  for module in list(model.modules()):
    if isinstance(module, lucidrains.PreNorm) and isinstance(module.fn,
                                                             lucidrains.FeedForward):
      in_cross = any(block.cross_ff is module for block in model.layers)
      widening = (encoder.cross_attention_widening_factor if in_cross
                  else encoder.self_attention_widening_factor)
      module.fn = _mlp(encoder.num_latent_channels, widening, encoder.activation)
  return model


def build_encoder_peer(peer: str, encoder: PerceiverEncoder, input_channels: int):
  """`encoder`'s shape as a torch module: [batch, N, input_channels] -> [batch, latents, D]."""
  _check_peer(peer)
  if peer == "lucidrains":
    return _wrap([_lucidrains_perceiver(encoder, input_channels, None, None)],
                 lambda m, x: m[0](x))
  from transformers import PerceiverModel  # pylint: disable=import-outside-toplevel
  return _wrap([PerceiverModel(_hf_config(encoder, input_channels))],
               lambda m, x: m[0](inputs=x).last_hidden_state)


def _fourier_settings(peer, bands, resolution, index_dims, concat_pos, sine_only):
  """Our Fourier feature settings, checked against what `peer` can compute."""
  resolution = tuple(index_dims if resolution is None else resolution)
  if peer == "lucidrains":
    if not concat_pos or sine_only:
      raise _cannot(peer, "Fourier features without the positions or without cosines",
                    "set concat_pos=True and sine_only=False")
    if len(set(resolution)) != 1:
      raise _cannot(peer, f"max_resolution={resolution} (one max_freq for every axis)",
                    "use one resolution for all axes")
  channels = len(index_dims) * (bands * (1 if sine_only else 2) + (1 if concat_pos else 0))
  return dict(bands=bands, max_freq=resolution[0], axes=len(index_dims), channels=channels,
              resolution=resolution, concat_pos=concat_pos, sine_only=sine_only)


def build_peer(peer: str, model_config):
  """The classifier `model_config` describes (a task config, e.g. config.model) as a torch
  module: images [batch, H, W, C] -> logits [batch, num_classes]."""
  _check_peer(peer)
  model = tasks.build(model_config)
  task = model_config.task
  if task == "perceiver_classification":
    shape = tuple(model_config.input_shape)
    fourier = _fourier_settings(peer, model.num_frequency_bands, model.max_resolution, shape[:-1],
                                model.concat_pos, model.sine_only)
    return _build_perceiver(peer, model, shape, fourier)
  if task == "image_classification":
    return _build_perceiver_io(peer, model, tuple(model_config.image_shape))
  raise ValueError(f"peers are built for the tasks 'perceiver_classification' and "
                   f"'image_classification', got config.model.task={task!r}.")


def _build_perceiver(peer, model, shape, fourier):
  """The original Perceiver (Fourier features, encoder, mean-pooled linear logits)."""
  classes, channels = model.decoder.num_classes, shape[-1]
  if peer == "lucidrains":
    return _wrap([_lucidrains_perceiver(model.encoder, channels, fourier, classes)],
                 lambda m, x: m[0](x))
  import torch  # pylint: disable=import-outside-toplevel
  from transformers.models.perceiver import modeling_perceiver as hf  # pylint: disable=C0415
  config = _hf_config(model.encoder, channels + fourier["channels"], classes)
  preprocessor = _hf_image_preprocessor(hf, config, channels, fourier)
  encoder = hf.PerceiverModel(config, input_preprocessor=preprocessor)
  head = torch.nn.Linear(config.d_latents, classes)  # PerceiverProjectionDecoder's layer.
  return _wrap([encoder, head],  # NHWC -> NCHW is a view; the preprocessor permutes back.
               lambda m, x: m[1](m[0](inputs=x.permute(0, 3, 1, 2)).last_hidden_state.mean(1)))


def _hf_image_preprocessor(hf, config, channels, fourier):
  return hf.PerceiverImagePreprocessor(
      config, prep_type="pixels", spatial_downsample=1, in_channels=channels,
      fourier_position_encoding_kwargs=dict(
          num_bands=fourier["bands"], max_resolution=fourier["resolution"],
          concat_pos=fourier["concat_pos"], sine_only=fourier["sine_only"]))


def _build_perceiver_io(peer, model, shape):
  """Perceiver IO image classification with pixels + Fourier inputs (transformers only)."""
  if peer == "lucidrains":
    raise _cannot(peer, "Perceiver IO image classification (perceiver_pytorch.Perceiver has no "
                  "query decoder)", "compare it with the 'transformers' peer")
  adapter, decoder = model.input_adapter, model.decoder
  if adapter.prep_type != "pixels" or adapter.position_encoding != "fourier" or (
      adapter.spatial_downsample not in (None, 1)) or adapter.concat_or_add != "concat":
    raise _cannot(peer, f"input adapter prep_type={adapter.prep_type!r}, position_encoding="
                  f"{adapter.position_encoding!r}", "benchmark the 'fourier' variant")
  if not decoder.use_mlp or decoder.dropout_rate > 0 or decoder.activation != (
      model.encoder.activation):
    raise _cannot(peer, "a decoder without MLP, with dropout or with its own activation",
                  "use the ImageNet decoder settings")
  fourier = _fourier_settings(peer, adapter.num_frequency_bands, adapter.max_resolution,
                              shape[:-1], adapter.concat_pos, adapter.sine_only)
  from transformers.models.perceiver import modeling_perceiver as hf  # pylint: disable=C0415
  config = _hf_config(model.encoder, shape[-1] + fourier["channels"], decoder.output_channels)
  queries = model.output_query.num_channels
  head = hf.PerceiverClassificationDecoder(
      config, num_channels=queries, use_query_residual=decoder.use_query_residual,
      num_heads=decoder.num_heads, widening_factor=decoder.widening_factor,
      qk_channels=decoder.qk_channels, v_channels=decoder.v_channels,
      trainable_position_encoding_kwargs=dict(num_channels=queries, index_dims=1))
  perceiver = hf.PerceiverModel(config, decoder=head,
                                input_preprocessor=_hf_image_preprocessor(hf, config, shape[-1],
                                                                          fourier))
  return _wrap([perceiver], lambda m, x: m[0](inputs=x.permute(0, 3, 1, 2)).logits)


def _wrap(modules, call):
  """A torch module holding `modules` (a ModuleList) whose forward(x) is call(modules, x)."""
  import torch  # pylint: disable=import-outside-toplevel

  class Peer(torch.nn.Module):
    def __init__(self):
      super().__init__()
      self.modules_ = torch.nn.ModuleList(modules)

    def forward(self, x):
      return call(self.modules_, x)

  return Peer()


def count_params(module) -> int:
  """Parameters of a torch module (shared ones once)."""
  return int(sum(p.numel() for p in module.parameters()))


def our_param_count(model_config) -> int:
  """Our model's parameter count (model_stats, analytic)."""
  shape = tasks.example_inputs(model_config, 1).shape[1:]
  return param_count(tasks.build(model_config), shape)


def is_oom(error: RuntimeError) -> bool:
  """Whether a torch error is an allocation failure: the CPU allocator's "can't allocate
  memory" or torch.cuda.OutOfMemoryError ("CUDA out of memory. Tried to allocate ...")."""
  return "allocat" in str(error) or "out of memory" in str(error).lower()


def peak_step_bytes(step, *args, device: str = "cpu") -> int:
  """Peak bytes torch's allocator on `device` holds during step(*args) beyond what it held
  before."""
  import torch  # pylint: disable=import-outside-toplevel
  if device == "cuda":
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    step(*args)
    torch.cuda.synchronize()
    return int(torch.cuda.max_memory_allocated() - before)
  from torch.profiler import ProfilerActivity, profile  # pylint: disable=import-outside-toplevel
  from torch._C._profiler import _EventType  # pylint: disable=import-outside-toplevel
  with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
    step(*args)
  stack, totals = list(prof.profiler.kineto_results.experimental_event_tree()), [0]
  while stack:
    node = stack.pop()
    stack.extend(node.children)
    if node.tag == _EventType.Allocation:
      totals.append(node.extra_fields.total_allocated)
  return int(max(totals))


def _train_step(module, optimizer, loss_fn, autocast):
  """zero_grad -> forward (under `autocast`, a context factory) -> loss -> backward -> update."""
  def step(x, y):
    optimizer.zero_grad(set_to_none=True)
    with autocast():
      loss = loss_fn(module(x), y)
    loss.backward()
    optimizer.step()
    return loss.detach()
  return step


def _autocast(dtype: str, device: str):
  """torch.autocast on `device` for 'bfloat16' (float32 parameters, bfloat16 compute, as
  ours)."""
  import contextlib  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  if dtype == "bfloat16":
    return lambda: torch.autocast(device, dtype=torch.bfloat16)
  return contextlib.nullcontext


def benchmark_peer(peer: str, config, batch_size: Optional[int] = None, mode: str = "train",
                   iters: int = 10, warmup: int = 2, seed: int = 0,
                   device: str = "cpu") -> dict:
  """Times `peer`'s train step (cross-entropy, backward, AdamW with config.optimizer's
  learning_rate and weight_decay) or no-grad forward at `batch_size` on torch device `device`
  ('cpu' or 'cuda', e.g. from `peer_device`), on the random batch `benchmarking.random_batch`
  gives our step; returns a flat record (step_s, params, device, ...)."""
  import torch  # pylint: disable=import-outside-toplevel
  if mode not in benchmarking.MODES:
    raise ValueError(f"mode must be one of {benchmarking.MODES}, got {mode!r}.")
  batch_size = config.batch_size if batch_size is None else batch_size
  if not isinstance(batch_size, int) or batch_size < 1:
    raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}.")
  _check_device(device)
  _prepare(device, seed)
  module = build_peer(peer, config.model).to(device)
  autocast = _autocast(config.model.dtype, device)
  batch = benchmarking.random_batch(config, batch_size, seed)
  images = torch.from_numpy(batch["image"]).to(device)
  labels = torch.from_numpy(batch["label"]).long().to(device)
  if mode == "train":
    module.train()
    optimizer = torch.optim.AdamW(module.parameters(), lr=config.optimizer.learning_rate,
                                  weight_decay=config.optimizer.weight_decay)
    step = _train_step(module, optimizer, torch.nn.functional.cross_entropy, autocast)
  else:
    module.eval()

    def step(x, _):
      with torch.inference_mode(), autocast():
        return module(x)
  step = _synchronized(step, device)
  timing = benchmarking.time_fn(step, images, labels, warmup=warmup, iters=iters)
  return {"peer": peer, "mode": mode, "batch_size": batch_size, "step_s": timing["median_s"],
          "step_p10_s": timing["p10_s"], "step_p90_s": timing["p90_s"],
          "first_step_s": timing["compile_s"], "examples_per_s": batch_size / timing["median_s"],
          "params": count_params(module), "torch": torch.__version__, "device": device,
          "threads": usable_cpu_cores(),
          "peak_step_bytes": peak_step_bytes(step, images, labels, device=device)}


def encoder_sweep(peer: str, lengths: Sequence[int], encoder: PerceiverEncoder,
                  batch_size: int = 1, input_channels: int = 64, iters: int = 3,
                  warmup: int = 1, memory_limit_bytes: Optional[int] = None,
                  learning_rate: float = 1e-3, device: str = "cpu") -> list:
  """`benchmarking.scaling_sweep` for a peer: an SGD step on mean(latents ** 2) of
  `encoder`'s shape (e.g. `benchmarking.sweep_encoder()`) as `peer` on torch device `device`,
  inputs [batch_size, N, input_channels], for each N in `lengths`. Rows: length, step_s,
  peak_step_bytes (of a first, measured step), oom (an allocation failure, or the first
  step's peak over `memory_limit_bytes`); the sweep stops at the first OOM row."""
  import torch  # pylint: disable=import-outside-toplevel
  _check_device(device)
  _prepare(device, 0)
  module = build_encoder_peer(peer, encoder, input_channels).to(device)
  optimizer = torch.optim.SGD(module.parameters(), lr=learning_rate)
  step = _synchronized(_train_step(module, optimizer,
                                   lambda out, _: torch.mean(torch.square(out)),
                                   _autocast("float32", device)), device)
  rows = []
  for length in lengths:
    row = {"peer": peer, "length": length, "batch_size": batch_size, "oom": False}
    try:
      inputs = torch.from_numpy(np.random.default_rng(length).standard_normal(
          (batch_size, length, input_channels), np.float32)).to(device)
      row["peak_step_bytes"] = peak_step_bytes(step, inputs, None, device=device)
      if memory_limit_bytes is not None and row["peak_step_bytes"] > memory_limit_bytes:
        row["oom"] = True
      else:
        timing = benchmarking.time_fn(step, inputs, None, warmup=warmup, iters=iters)
        row["step_s"] = timing["median_s"]
    except MemoryError:
      row["oom"] = True
    except RuntimeError as error:
      if not is_oom(error):
        raise
      row["oom"] = True
    rows.append(row)
    if row["oom"]:
      break
  if device == "cuda":
    torch.cuda.empty_cache()  # Hands the sweep's blocks back before the next peer or step.
  return rows
