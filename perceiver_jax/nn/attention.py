"""The one attention function of perceiver_jax, with selectable backends, and its settings.

`dot_product_attention` computes softmax(q·k / sqrt(d_qk) + mask) · v per head:

  query [batch, q_len, heads, qk_dim]
  key   [batch, kv_len, heads, qk_dim]
  value [batch, kv_len, heads, v_dim]   ->   [batch, q_len, heads, v_dim]

`AttentionConfig` holds how every module attends (one field, `attention`, on each module
that attends), checked once when it is made:
  implementation  the backend:
    'xla'      plain XLA ops (einsums, float32 softmax normalised after the value dot), with
               attention dropout and v_dim != qk_dim. Not jax.nn.dot_product_attention's 'xla'
               path: ours took 0.63-0.73x its forward + backward time on CPU (BENCHMARKS.md).
    'cudnn'    jax.nn.dot_product_attention(implementation='cudnn'): fused flash attention on
               NVIDIA GPUs, bfloat16/float16 only. Head dims are zero-padded to a multiple of 8.
    'chunked'  online softmax over key chunks with a flash-attention backward pass
               (`chunked_attention.py`): memory O(q_len * chunk_size) instead of
               O(q_len * kv_len), forward and backward. For very long inputs.
  chunk_size      keys per chunk of the 'chunked' backend.
  dropout_rate    dropout of the attention probabilities (training only).
  sow_weights     MultiHeadAttention sows its attention weights (`attention_weights`: the
                  softmax probabilities [batch, heads, q_len, kv_len], before dropout) into the
                  'intermediates' collection; off by default, and costs nothing when off.
                  Only 'xla' forms the weights; the other backends never hold them.

Masks are boolean, True = attend: a key padding mask [batch, kv_len] or a full mask
broadcastable to [batch, heads, q_len, kv_len]. `causal=True` lets query i, which sits at
absolute position kv_len - q_len + i, attend keys at positions <= its own (Perceiver AR's
alignment; for self-attention this is the usual causal mask). A query whose keys are all
masked outputs zeros (and has all-zero weights). Logits and softmax are always float32.
"""

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from perceiver_jax.nn import chunked_attention
from perceiver_jax.nn.validation import check_choice, check_positive, check_rate

IMPLEMENTATIONS = ("xla", "cudnn", "chunked")
MASK_VALUE = -1e30  # Added to masked logits (float32), as the official Perceiver code.
_CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)
_CUDNN_MAX_HEAD_DIM = 256


@dataclasses.dataclass(frozen=True)
class AttentionConfig:
  """How a module attends; see the module docstring. Bad values raise ValueError here."""
  implementation: str = "xla"
  chunk_size: int = 1024
  dropout_rate: float = 0.0
  sow_weights: bool = False

  def __post_init__(self):
    check_choice(self, "implementation", IMPLEMENTATIONS)
    check_positive(self, "chunk_size")
    check_rate(self, "dropout_rate")
    if self.implementation == "cudnn" and self.dropout_rate > 0:
      raise ValueError(
          "AttentionConfig(implementation='cudnn') has no attention-probability dropout in "
          "jax.nn.dot_product_attention; set dropout_rate=0 or implementation='xla' or "
          "'chunked'.")
    if self.sow_weights and self.implementation != "xla":
      raise ValueError(
          f"AttentionConfig(sow_weights=True) needs implementation='xla': the "
          f"{self.implementation!r} backend keeps no attention weights; set "
          "implementation='xla' to sow them.")

  def check_dtype(self, dtype):
    """Raises ValueError when the backend cannot compute in `dtype` (cudnn: 16-bit only)."""
    if self.implementation == "cudnn" and jnp.dtype(dtype) not in [
        jnp.dtype(d) for d in _CUDNN_DTYPES]:
      raise ValueError(
          "AttentionConfig(implementation='cudnn') needs dtype bfloat16 or float16, got "
          f"{jnp.dtype(dtype).name}; set dtype=jnp.bfloat16 or implementation='xla'.")


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


def _masked_logits(query, key, mask):
  """Float32 logits [b, heads, q, kv] of pre-scaled queries, MASK_VALUE where masked."""
  logits = jnp.einsum("btnh,bsnh->bnts", query, key, preferred_element_type=jnp.float32)
  return logits if mask is None else jnp.where(mask, logits, MASK_VALUE)


def _einsum_attention(query, key, value, mask, dropout_rate, dropout_rng):
  """Softmax attention of pre-scaled queries with float32 logits and softmax, normalised
  after the probability-value dot: exp(logits - max) @ value / sum(exp(logits - max)) equals
  softmax(logits) @ value but skips a pass over the [b, heads, q, kv] matrix forward and
  backward. Dropout scales the unnormalised weights, which is the same as scaling the
  probabilities. Fully masked rows are left to `_zero_rows_without_keys`."""
  logits = _masked_logits(query, key, mask)
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


def _full_mask(mask, causal, batch, heads, q_len, kv_len):
  """(mask with the causal one applied, the mask that can leave a query no key or None)."""
  _check_causal(causal, q_len, kv_len)
  mask = _normalize_mask(mask, batch, heads, q_len, kv_len)
  if not causal:
    return mask, mask
  # A causal mask alone leaves every query a key (q_len <= kv_len): only a given mask, alone
  # or with the causal one, can leave a query none.
  cmask = causal_mask(q_len, kv_len)
  if mask is None:
    return cmask, None
  mask = jnp.logical_and(mask, cmask)
  return mask, mask


def _check_causal(causal, q_len, kv_len):
  if causal and q_len > kv_len:
    raise ValueError(f"causal attention needs q_len <= kv_len, got {q_len} > {kv_len}.")


def dot_product_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    mask: Optional[jax.Array] = None,
    *,
    causal: bool = False,
    config: AttentionConfig = AttentionConfig(),
    dropout_rng: Optional[jax.Array] = None,
    deterministic: bool = True,
    scale: Optional[float] = None,
) -> jax.Array:
  """Multi-head scaled dot-product attention with `config`'s backend, chunk size and dropout;
  see the module docstring for shapes. `scale` multiplies the logits (default
  1 / sqrt(qk_dim))."""
  _check_shapes(query, key, value)
  config.check_dtype(query.dtype)
  batch, q_len, heads, qk_dim = query.shape
  kv_len = key.shape[1]
  active_dropout = config.dropout_rate if not deterministic else 0.0
  if active_dropout > 0 and dropout_rng is None:
    raise ValueError("attention dropout is active (deterministic=False) but no dropout_rng was given.")
  scale = 1.0 / np.sqrt(qk_dim) if scale is None else scale

  if config.implementation == "chunked":
    _check_causal(causal, q_len, kv_len)
    return chunked_attention.chunked_attention(
        query, key, value, _normalize_mask(mask, batch, heads, q_len, kv_len), causal=causal,
        scale=scale, dropout_rate=active_dropout, dropout_rng=dropout_rng,
        chunk_size=config.chunk_size)
  mask, row_mask = _full_mask(mask, causal, batch, heads, q_len, kv_len)
  if config.implementation == "cudnn":
    out = _cudnn_attention(query, key, value, mask, scale)
    return _zero_rows_without_keys(out, row_mask)
  # Scaling the queries [b, t, n, d] rather than the logits [b, n, t, s]: XLA on CPU would
  # otherwise materialise the scale broadcast to the logits' shape, forward and backward.
  query = (query * scale).astype(query.dtype)
  out = _einsum_attention(query, key, value, mask, active_dropout, dropout_rng)
  return _zero_rows_without_keys(out, row_mask)


def attention_weights(query: jax.Array, key: jax.Array, mask: Optional[jax.Array] = None, *,
                      causal: bool = False, scale: Optional[float] = None) -> jax.Array:
  """The softmax probabilities [batch, heads, q_len, kv_len] (float32) that
  `dot_product_attention` weights the values with (before dropout); all zeros for a query
  without keys. Formed from the same logits as the 'xla' backend, so XLA computes them once."""
  _check_shapes(query, key, key)
  batch, q_len, heads, qk_dim = query.shape
  mask, row_mask = _full_mask(mask, causal, batch, heads, q_len, key.shape[1])
  scale = 1.0 / np.sqrt(qk_dim) if scale is None else scale
  weights = jax.nn.softmax(_masked_logits((query * scale).astype(query.dtype), key, mask))
  if row_mask is None:
    return weights
  return jnp.where(jnp.any(row_mask, axis=-1, keepdims=True), weights, 0.0)


def _zero_rows_without_keys(out, mask):
  """Outputs zeros for a query whose keys are all masked (its weights would be uniform)."""
  if mask is None:
    return out
  return jnp.where(_any_valid(mask), out, 0).astype(out.dtype)
