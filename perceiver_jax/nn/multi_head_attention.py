"""Multi-head attention with separate query/key, value and output widths (official defaults).

inputs_q [batch, q_len, q_channels], inputs_kv [batch, kv_len, kv_channels]
  -> [batch, q_len, output_channels]

qk_channels defaults to kv_channels (for self-attention that is the latent width),
v_channels to qk_channels and output_channels to q_channels. Both must divide by num_heads.

Folded key/value projections: with one head, a softmax over keys K = X Wk + bk and values
V = X Wv + bv of the kv inputs X [b, s, c] equals attending with queries q Wk^T [b, t, c] to X
itself (q . bk is the same for every key: softmax ignores it), then (P X) Wv + bv for the
rows that have a key. When t << s (a Perceiver cross-attention: latents or decoder queries
reading many inputs) this skips both [s, c] x [c, d] projections, forward and backward,
with the same parameters and the same result up to float rounding (the key bias, which a
softmax ignores, then gets an exactly zero gradient). `fold_kv_projections` (on by default)
folds where it saves FLOPs (`folds_kv_projections`): one head, the 'xla' or 'chunked' backend
(cudnn's head dims are capped), no rotary, not causal, no active dropout; `model_stats` counts
the folded FLOPs.

A LayerNorm's affine map on the kv inputs (`kv_scale`, `kv_bias` [kv_channels]: the attention
reads X * kv_scale + kv_bias) folds as well: the scale into both kernels, the bias into the
value bias (bias @ Wv). Attention then reads the normalised inputs themselves, so when those
depend on no parameter (pixels and Fourier features) the backward pass never forms their
[b, s, c] gradient.
"""

from typing import Optional

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from perceiver_jax.nn import attention
from perceiver_jax.nn.position_encoding import RotaryPositionEmbedding
from perceiver_jax.nn.typing import DType


def folds_kv_projections(num_heads: int, implementation: str, q_len: int, kv_len: int,
                         kv_channels: int, qk_channels: int, v_channels: int) -> bool:
  """Whether an attention of these sizes folds its key/value projections (module docstring):
  one head, the 'xla' or 'chunked' backend, and fewer multiply-adds folded than literal."""
  if num_heads != 1 or implementation not in ("xla", "chunked"):
    return False
  unfolded = (kv_len * kv_channels + q_len * kv_len) * (qk_channels + v_channels)
  folded = q_len * kv_channels * (qk_channels + v_channels) + 2 * q_len * kv_len * kv_channels
  return folded < unfolded


def check_divisible(channels: int, num_heads: int, field: str, heads_field: str):
  if channels % num_heads:
    raise ValueError(
        f"{field}={channels} is not divisible by {heads_field}={num_heads}; "
        f"set {field} to a multiple of {num_heads}.")


class MultiHeadAttention(nn.Module):
  """Projects q, k, v per head, attends with `attention.dot_product_attention`, projects out.

  With rotary_fraction > 0, queries and keys are rotated by `RotaryPositionEmbedding` at
  `q_positions` / `kv_positions` (Perceiver AR).
  """
  num_heads: int
  qk_channels: Optional[int] = None
  v_channels: Optional[int] = None
  output_channels: Optional[int] = None
  dropout_rate: float = 0.0
  causal: bool = False
  rotary_fraction: float = 0.0
  implementation: str = "xla"
  chunk_size: int = 1024
  fold_kv_projections: bool = True
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32

  def __post_init__(self):
    if self.num_heads < 1:
      raise ValueError(f"num_heads must be >= 1, got {self.num_heads}.")
    for name in ("qk_channels", "v_channels", "output_channels"):
      value = getattr(self, name)
      if value is not None and value < 1:
        raise ValueError(f"{name} must be >= 1 or None, got {value}.")
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ValueError(f"dropout_rate must be in [0, 1), got {self.dropout_rate}.")
    if not 0.0 <= self.rotary_fraction <= 1.0:
      raise ValueError(f"rotary_fraction must be in [0, 1], got {self.rotary_fraction}.")
    attention.validate_implementation(self.implementation, self.dtype, self.dropout_rate)
    super().__post_init__()

  @nn.compact
  def __call__(self, inputs_q, inputs_kv, mask=None, *, deterministic: bool = True,
               q_positions=None, kv_positions=None, kv_scale=None, kv_bias=None):
    qk_channels = self.qk_channels or inputs_kv.shape[-1]
    v_channels = self.v_channels or qk_channels
    output_channels = self.output_channels or inputs_q.shape[-1]
    check_divisible(qk_channels, self.num_heads, "qk_channels", "num_heads")
    check_divisible(v_channels, self.num_heads, "v_channels", "num_heads")

    def project(x, channels, name):
      return nn.DenseGeneral((self.num_heads, channels // self.num_heads), dtype=self.dtype,
                             param_dtype=self.param_dtype, name=name)(x)

    query = project(inputs_q, qk_channels, "query")
    dropout_rng = None
    if self.dropout_rate > 0 and not deterministic:
      dropout_rng = self.make_rng("dropout")
    fold = (self.fold_kv_projections and self.rotary_fraction == 0 and not self.causal
            and dropout_rng is None
            and folds_kv_projections(self.num_heads, self.implementation, inputs_q.shape[1],
                                     inputs_kv.shape[1], inputs_kv.shape[-1], qk_channels,
                                     v_channels))
    if (kv_scale is None) != (kv_bias is None):
      raise ValueError("kv_scale and kv_bias go together (a LayerNorm's affine map); pass both "
                       "or neither.")
    if kv_scale is not None and not kv_scale.shape == kv_bias.shape == inputs_kv.shape[-1:]:
      raise ValueError(f"kv_scale {kv_scale.shape} and kv_bias {kv_bias.shape} must both have "
                       f"shape [kv_channels] = {inputs_kv.shape[-1:]}.")
    if fold:
      out = self._folded_attention(query, inputs_kv, mask, project, qk_channels, v_channels,
                                   kv_scale, kv_bias)
    else:
      if kv_scale is not None:
        inputs_kv = (inputs_kv * kv_scale + kv_bias).astype(self.dtype)
      key = project(inputs_kv, qk_channels, "key")
      value = project(inputs_kv, v_channels, "value")
      if self.rotary_fraction > 0:
        if q_positions is None or kv_positions is None:
          raise ValueError("rotary_fraction > 0 needs q_positions and kv_positions.")
        rotary = RotaryPositionEmbedding(self.rotary_fraction)
        query, key = rotary(query, q_positions), rotary(key, kv_positions)
      out = attention.dot_product_attention(
          query, key, value, mask, causal=self.causal, implementation=self.implementation,
          dropout_rate=self.dropout_rate, dropout_rng=dropout_rng, deterministic=deterministic,
          chunk_size=self.chunk_size)
    return nn.DenseGeneral(output_channels, axis=(-2, -1), dtype=self.dtype,
                           param_dtype=self.param_dtype, name="out")(out)

  def _folded_attention(self, query, inputs_kv, mask, project, qk_channels, v_channels,
                        kv_scale, kv_bias):
    """One-head attention with folded key/value projections and kv affine map (module
    docstring): query [b, t, 1, qk] and inputs [b, s, c] -> [b, t, 1, v]."""
    empty = inputs_kv[:, :0]  # Zero rows: creates / binds the projections' params, no FLOPs.
    project(empty, qk_channels, "key")
    project(empty, v_channels, "value")
    params = self.variables["params"]
    key_kernel = params["key"]["kernel"]  # [c, 1, qk]
    value_kernel, value_bias = params["value"]["kernel"], params["value"]["bias"]  # [c, 1, v]
    if kv_scale is not None:
      value_bias = value_bias + jnp.einsum("c,cnd->nd", kv_bias, value_kernel)
      key_kernel = key_kernel * kv_scale[:, None, None]
      value_kernel = value_kernel * kv_scale[:, None, None]
    inputs = inputs_kv.astype(self.dtype)[:, :, None]  # [b, s, 1, c]
    folded_query = jnp.einsum("btnd,cnd->btnc", query, key_kernel.astype(self.dtype))
    attended = attention.dot_product_attention(
        folded_query, inputs, inputs, mask, implementation=self.implementation,
        chunk_size=self.chunk_size, scale=1.0 / np.sqrt(qk_channels))  # P X: [b, t, 1, c].
    out = jnp.einsum("btnc,cnd->btnd", attended, value_kernel.astype(self.dtype))
    bias = value_bias.astype(self.dtype)
    has_keys = attention.rows_with_keys(mask, inputs_kv.shape[0], 1, query.shape[1],
                                        inputs_kv.shape[1])
    return out + (bias if has_keys is None else jnp.where(has_keys, bias, 0).astype(out.dtype))
