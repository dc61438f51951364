"""Memory-lean attention: online softmax over key chunks with a flash-attention backward.

Neither pass materialises the [q_len, kv_len] attention matrix: the forward pass scans key
chunks of `chunk_size` keeping a running max, normaliser and weighted sum per query; the
backward pass (a `jax.custom_vjp`) rescans the chunks and recomputes probabilities from the
saved log-sum-exp. Peak memory is O(q_len * chunk_size) per head, plus the inputs and outputs.
Attention-probability dropout is supported: each chunk's dropout mask is drawn from
`fold_in(dropout_rng, chunk_index)` in both passes, so the backward sees the same mask.

Shapes: query [batch, q_len, heads, qk_dim], key [batch, kv_len, heads, qk_dim],
value [batch, kv_len, heads, v_dim], mask bool broadcastable to [batch, heads, q_len, kv_len]
(or None) -> [batch, q_len, heads, v_dim].
"""

import functools
from typing import Optional

import jax
import jax.numpy as jnp

_NEG = -1e30


def _chunked_inputs(key, value, mask, chunk_size):
  """Pads kv_len to a multiple of the chunk size; puts the chunk index first."""
  batch, kv_len, heads, _ = key.shape
  chunk = min(chunk_size, kv_len)
  num_chunks = -(-kv_len // chunk)
  pad = num_chunks * chunk - kv_len

  def split(x):
    x = jnp.pad(x, [(0, 0), (0, pad), (0, 0), (0, 0)])
    return x.reshape(batch, num_chunks, chunk, heads, x.shape[-1]).swapaxes(0, 1)

  if mask is None:
    mask = jnp.ones((1, 1, 1, kv_len), jnp.bool_)
  mask = jnp.pad(mask, [(0, 0)] * 3 + [(0, pad)])  # Padded keys are masked out.
  mask = jnp.moveaxis(mask.reshape(mask.shape[:3] + (num_chunks, chunk)), 3, 0)
  return split(key), split(value), mask, chunk, num_chunks


def _chunk_scores(query, k_chunk, m_chunk, index, chunk, kv_len, causal, scale):
  """Float32 logits [batch, heads, q_len, chunk] of one key chunk and their validity."""
  s = jnp.einsum("btnh,bsnh->bnts", query, k_chunk, preferred_element_type=jnp.float32) * scale
  valid = m_chunk
  if causal:
    q_len = query.shape[1]
    q_pos = jnp.arange(q_len)[:, None] + (kv_len - q_len)
    k_pos = index * chunk + jnp.arange(chunk)[None, :]
    valid = jnp.logical_and(valid, k_pos <= q_pos)
  return jnp.where(valid, s, _NEG), valid


def _dropout_scale(dropout_rate, dropout_rng, index, shape):
  """Per-chunk dropout multiplier (0 or 1/(1-rate)); None when dropout is off."""
  if dropout_rate == 0.0:
    return None
  keep = jax.random.bernoulli(jax.random.fold_in(dropout_rng, index), 1.0 - dropout_rate, shape)
  return jnp.where(keep, 1.0 / (1.0 - dropout_rate), 0.0)


def _forward(query, key, value, mask, dropout_rng, causal, scale, dropout_rate, chunk_size):
  batch, q_len, heads, _ = query.shape
  kv_len, v_dim = key.shape[1], value.shape[-1]
  k_chunks, v_chunks, m_chunks, chunk, num_chunks = _chunked_inputs(key, value, mask, chunk_size)

  def step(carry, xs):
    m_prev, l_prev, acc_prev = carry
    k_c, v_c, m_c, index = xs
    s, valid = _chunk_scores(query, k_c, m_c, index, chunk, kv_len, causal, scale)
    m_new = jnp.maximum(m_prev, s.max(axis=-1))
    p = jnp.where(valid, jnp.exp(s - m_new[..., None]), 0.0)
    correction = jnp.exp(m_prev - m_new)
    l_new = l_prev * correction + p.sum(axis=-1)
    drop = _dropout_scale(dropout_rate, dropout_rng, index, p.shape)
    p_v = p if drop is None else p * drop
    pv = jnp.einsum("bnts,bsnh->bnth", p_v.astype(value.dtype), v_c,
                    preferred_element_type=jnp.float32)
    return (m_new, l_new, acc_prev * correction[..., None] + pv), None

  init = (jnp.full((batch, heads, q_len), _NEG, jnp.float32),
          jnp.zeros((batch, heads, q_len), jnp.float32),
          jnp.zeros((batch, heads, q_len, v_dim), jnp.float32))
  (m, l, acc), _ = jax.lax.scan(step, init, (k_chunks, v_chunks, m_chunks, jnp.arange(num_chunks)))
  has_keys = l > 0  # A query whose keys are all masked outputs zeros.
  out = jnp.where(has_keys[..., None], acc / jnp.where(has_keys, l, 1.0)[..., None], 0.0)
  lse = jnp.where(has_keys, m + jnp.log(jnp.where(has_keys, l, 1.0)), 0.0)
  return out.transpose(0, 2, 1, 3).astype(query.dtype), lse


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7, 8))
def _attention(query, key, value, mask, dropout_rng, causal, scale, dropout_rate, chunk_size):
  return _forward(query, key, value, mask, dropout_rng, causal, scale, dropout_rate, chunk_size)[0]


def _attention_fwd(query, key, value, mask, dropout_rng, causal, scale, dropout_rate, chunk_size):
  out, lse = _forward(query, key, value, mask, dropout_rng, causal, scale, dropout_rate, chunk_size)
  return out, (query, key, value, mask, dropout_rng, out, lse)


def _attention_bwd(causal, scale, dropout_rate, chunk_size, residuals, d_out):
  query, key, value, mask, dropout_rng, out, lse = residuals
  kv_len = key.shape[1]
  k_chunks, v_chunks, m_chunks, chunk, num_chunks = _chunked_inputs(key, value, mask, chunk_size)
  d_out = d_out.astype(jnp.float32)
  # D_i = sum_j dP_ij P_ij = <dO_i, O_i>, also under dropout.
  delta = jnp.einsum("btnh,btnh->bnt", d_out, out.astype(jnp.float32))

  def step(d_query, xs):
    k_c, v_c, m_c, index = xs
    s, valid = _chunk_scores(query, k_c, m_c, index, chunk, kv_len, causal, scale)
    p = jnp.where(valid, jnp.exp(s - lse[..., None]), 0.0)
    drop = _dropout_scale(dropout_rate, dropout_rng, index, p.shape)
    p_v = p if drop is None else p * drop
    d_v = jnp.einsum("bnts,btnh->bsnh", p_v, d_out)
    d_p = jnp.einsum("btnh,bsnh->bnts", d_out, v_c.astype(jnp.float32))
    if drop is not None:
      d_p = d_p * drop
    d_s = p * (d_p - delta[..., None]) * scale
    d_query = d_query + jnp.einsum("bnts,bsnh->btnh", d_s, k_c.astype(jnp.float32))
    d_k = jnp.einsum("bnts,btnh->bsnh", d_s, query.astype(jnp.float32))
    return d_query, (d_k, d_v)

  d_query, (d_k, d_v) = jax.lax.scan(
      step, jnp.zeros(query.shape, jnp.float32),
      (k_chunks, v_chunks, m_chunks, jnp.arange(num_chunks)))

  def unchunk(x, like):
    x = x.swapaxes(0, 1).reshape((like.shape[0], num_chunks * chunk) + x.shape[3:])
    return x[:, :kv_len].astype(like.dtype)

  return (d_query.astype(query.dtype), unchunk(d_k, key), unchunk(d_v, value), None, None)


_attention.defvjp(_attention_fwd, _attention_bwd)


def chunked_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    mask: Optional[jax.Array],
    *,
    causal: bool,
    scale: float,
    dropout_rate: float,
    dropout_rng: Optional[jax.Array],
    chunk_size: int,
) -> jax.Array:
  """Attention that never holds more than one [q_len, chunk_size] block of probabilities."""
  if chunk_size < 1:
    raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")
  if dropout_rng is None:
    dropout_rng = jax.random.PRNGKey(0)  # Unused: dropout_rate is 0.
  return _attention(query, key, value, mask, dropout_rng, bool(causal), float(scale),
                    float(dropout_rate), int(chunk_size))
