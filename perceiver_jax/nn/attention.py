"""The one attention function of perceiver_jax, with selectable backends.

`dot_product_attention` computes softmax(q·k / sqrt(d_qk) + mask) · v per head:

  query [batch, q_len, heads, qk_dim]
  key   [batch, kv_len, heads, qk_dim]
  value [batch, kv_len, heads, v_dim]   ->   [batch, q_len, heads, v_dim]

Backends (`implementation`):
  'xla'      plain XLA ops (einsums, float32 softmax normalised after the value dot), with
             attention dropout and v_dim != qk_dim. Not jax.nn.dot_product_attention's 'xla'
             path: ours took 0.63-0.73x its forward + backward time on CPU (BENCHMARKS.md).
  'cudnn'    jax.nn.dot_product_attention(implementation='cudnn'): fused flash attention on
             NVIDIA GPUs, bfloat16/float16 only. Head dims are zero-padded to a multiple of 8.
  'chunked'  online softmax over key chunks with a flash-attention backward pass
             (`chunked_attention.py`): memory O(q_len * chunk_size) instead of
             O(q_len * kv_len), forward and backward. For very long inputs.

Masks are boolean, True = attend: a key padding mask [batch, kv_len] or a full mask
broadcastable to [batch, heads, q_len, kv_len]. `causal=True` lets query i, which sits at
absolute position kv_len - q_len + i, attend keys at positions <= its own (Perceiver AR's
alignment; for self-attention this is the usual causal mask). A query whose keys are all
masked outputs zeros. Logits and softmax are always float32.
"""

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from perceiver_jax.nn import chunked_attention

IMPLEMENTATIONS = ("xla", "cudnn", "chunked")
MASK_VALUE = -1e30  # Added to masked logits (float32), as the official Perceiver code.
_CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)
_CUDNN_MAX_HEAD_DIM = 256


def validate_implementation(implementation: str, dtype, dropout_rate: float, field: str = "implementation"):
  """Raises ValueError for a backend that cannot run with these settings."""
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"{field}={implementation!r} is not one of {IMPLEMENTATIONS}.")
  if implementation == "cudnn":
    if jnp.dtype(dtype) not in [jnp.dtype(d) for d in _CUDNN_DTYPES]:
      raise ValueError(
          f"{field}='cudnn' needs dtype bfloat16 or float16, got {jnp.dtype(dtype).name}; "
          "set dtype=jnp.bfloat16 or use implementation='xla'.")
    if dropout_rate > 0:
      raise ValueError(
          f"{field}='cudnn' has no attention-probability dropout in jax.nn.dot_product_attention; "
          "set the attention dropout rate to 0 or use implementation='xla' or 'chunked'.")


def causal_mask(q_len: int, kv_len: int) -> jax.Array:
  """[1, 1, q_len, kv_len] bool: query i (at position kv_len - q_len + i) sees keys <= it.
  Computed from iotas, not a constant: XLA would constant-fold a reduction over a constant
  mask of this size at every compile (13 s for Perceiver AR's 1,024 x 8,192 on CPU)."""
  shape = (1, 1, q_len, kv_len)
  q_pos = jax.lax.broadcasted_iota(jnp.int32, shape, 2) + (kv_len - q_len)
  return jax.lax.broadcasted_iota(jnp.int32, shape, 3) <= q_pos


def _normalize_mask(mask, batch, heads, q_len, kv_len):
  """Returns a 4-D bool mask broadcastable to [batch, heads, q_len, kv_len], or None."""
  if mask is None:
    return None
  mask = jnp.asarray(mask)
  if mask.dtype != jnp.bool_:
    raise ValueError(f"mask must be boolean (True = attend), got dtype {mask.dtype}.")
  if mask.ndim == 2:
    if mask.shape != (batch, kv_len):
      raise ValueError(
          f"key padding mask must have shape [batch, kv_len]=({batch}, {kv_len}), got {mask.shape}.")
    return mask[:, None, None, :]
  if mask.ndim != 4:
    raise ValueError(
        "mask must be [batch, kv_len] or [batch, heads|1, q_len|1, kv_len], "
        f"got shape {mask.shape}.")
  for size, full, name in zip(mask.shape, (batch, heads, q_len, kv_len),
                              ("batch", "heads", "q_len", "kv_len")):
    if size not in (1, full):
      raise ValueError(
          f"mask shape {mask.shape} does not broadcast to [batch, heads, q_len, kv_len]="
          f"({batch}, {heads}, {q_len}, {kv_len}): its {name} dim is {size}.")
  return mask


def _check_shapes(query, key, value):
  if query.ndim != 4 or key.ndim != 4 or value.ndim != 4:
    raise ValueError(
        "query, key and value must be [batch, length, heads, head_dim]; got shapes "
        f"{query.shape}, {key.shape}, {value.shape}.")
  if key.shape[:3] != value.shape[:3]:
    raise ValueError(f"key {key.shape} and value {value.shape} differ in batch, length or heads.")
  if query.shape[0] != key.shape[0] or query.shape[2] != key.shape[2] or query.shape[3] != key.shape[3]:
    raise ValueError(
        f"query {query.shape} and key {key.shape} must agree in batch, heads and head_dim.")


def _any_valid(mask):
  """[batch|1, q_len|1, heads|1, 1]: whether a query row has at least one key to attend."""
  return jnp.any(mask, axis=-1).transpose(0, 2, 1)[..., None]


def rows_with_keys(mask, batch: int, heads: int, q_len: int, kv_len: int):
  """None without a mask, else bool [batch|1, q_len|1, heads|1, 1]: whether a query has a key
  to attend (masks as `dot_product_attention` takes them)."""
  mask = _normalize_mask(mask, batch, heads, q_len, kv_len)
  return None if mask is None else _any_valid(mask)


def _einsum_attention(query, key, value, mask, dropout_rate, dropout_rng):
  """Softmax attention of pre-scaled queries with float32 logits and softmax, normalised
  after the probability-value dot: exp(logits - max) @ value / sum(exp(logits - max)) equals
  softmax(logits) @ value but skips a pass over the [b, heads, q, kv] matrix forward and
  backward. Dropout scales the unnormalised weights, which is the same as scaling the
  probabilities. Fully masked rows are left to `_zero_rows_without_keys`."""
  logits = jnp.einsum("btnh,bsnh->bnts", query, key, preferred_element_type=jnp.float32)
  if mask is not None:
    logits = jnp.where(mask, logits, MASK_VALUE)
  # Any per-row shift gives the same softmax: the max is only for range, not differentiated.
  weights = jnp.exp(logits - jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True)))
  total = jnp.sum(weights, axis=-1, keepdims=True)  # [b, n, t, 1], >= 1.
  if dropout_rate > 0:
    keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, weights.shape)
    weights = jnp.where(keep, weights / (1.0 - dropout_rate), 0.0)
  out = jnp.einsum("bnts,bsnh->bnth", weights.astype(value.dtype), value,
                   preferred_element_type=jnp.float32) / total
  return out.transpose(0, 2, 1, 3).astype(query.dtype)


def _cudnn_attention(query, key, value, mask, scale):
  """cuDNN flash attention with head dims zero-padded to a common multiple of 8."""
  if jax.default_backend() != "gpu":
    raise ValueError(
        "implementation='cudnn' needs an NVIDIA GPU, but JAX runs on "
        f"{jax.default_backend()!r}; use implementation='xla' or 'chunked'.")
  if query.dtype not in _CUDNN_DTYPES:
    raise ValueError(f"implementation='cudnn' needs bfloat16 or float16 inputs, got {query.dtype}.")
  v_dim = value.shape[-1]
  head_dim = -(-max(query.shape[-1], v_dim) // 8) * 8
  if head_dim > _CUDNN_MAX_HEAD_DIM:
    raise ValueError(
        f"implementation='cudnn' supports head dims up to {_CUDNN_MAX_HEAD_DIM}, got {head_dim}; "
        "use more heads or implementation='xla'.")
  pad = lambda x: jnp.pad(x, [(0, 0)] * 3 + [(0, head_dim - x.shape[-1])])
  out = jax.nn.dot_product_attention(
      pad(query), pad(key), pad(value), mask=mask, scale=scale, implementation="cudnn")
  return out[..., :v_dim]


def dot_product_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    mask: Optional[jax.Array] = None,
    *,
    causal: bool = False,
    implementation: str = "xla",
    dropout_rate: float = 0.0,
    dropout_rng: Optional[jax.Array] = None,
    deterministic: bool = True,
    chunk_size: int = 1024,
    scale: Optional[float] = None,
) -> jax.Array:
  """Multi-head scaled dot-product attention; see the module docstring for shapes. `scale`
  multiplies the logits (default 1 / sqrt(qk_dim))."""
  _check_shapes(query, key, value)
  validate_implementation(implementation, query.dtype, 0.0 if deterministic else dropout_rate)
  batch, q_len, heads, qk_dim = query.shape
  kv_len = key.shape[1]
  if causal and q_len > kv_len:
    raise ValueError(f"causal attention needs q_len <= kv_len, got {q_len} > {kv_len}.")
  mask = _normalize_mask(mask, batch, heads, q_len, kv_len)
  active_dropout = dropout_rate if not deterministic else 0.0
  if active_dropout > 0 and dropout_rng is None:
    raise ValueError("attention dropout is active (deterministic=False) but no dropout_rng was given.")
  scale = 1.0 / np.sqrt(qk_dim) if scale is None else scale

  if implementation == "chunked":
    return chunked_attention.chunked_attention(
        query, key, value, mask, causal=causal, scale=scale, dropout_rate=active_dropout,
        dropout_rng=dropout_rng, chunk_size=chunk_size)

  # A causal mask alone leaves every query a key (q_len <= kv_len): only a given mask, alone
  # or with the causal one, can leave a query none.
  row_mask = mask
  if causal:
    cmask = causal_mask(q_len, kv_len)
    mask = cmask if mask is None else jnp.logical_and(mask, cmask)
    row_mask = None if row_mask is None else mask
  if implementation == "cudnn":
    out = _cudnn_attention(query, key, value, mask, scale)
    return _zero_rows_without_keys(out, row_mask)
  # Scaling the queries [b, t, n, d] rather than the logits [b, n, t, s]: XLA on CPU would
  # otherwise materialise the scale broadcast to the logits' shape, forward and backward.
  query = (query * scale).astype(query.dtype)
  out = _einsum_attention(query, key, value, mask, active_dropout, dropout_rng)
  return _zero_rows_without_keys(out, row_mask)


def _zero_rows_without_keys(out, mask):
  """Outputs zeros for a query whose keys are all masked (its weights would be uniform)."""
  if mask is None:
    return out
  return jnp.where(_any_valid(mask), out, 0).astype(out.dtype)
