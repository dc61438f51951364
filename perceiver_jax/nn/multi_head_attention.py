"""Multi-head attention with separate query/key, value and output widths (official defaults).

inputs_q [batch, q_len, q_channels], inputs_kv [batch, kv_len, kv_channels]
  -> [batch, q_len, output_channels]

qk_channels defaults to kv_channels (for self-attention that is the latent width),
v_channels to qk_channels and output_channels to q_channels. Both must divide by num_heads.
`attention` (an AttentionConfig) sets the backend, chunk size and attention dropout, and
whether the softmax weights [batch, heads, q_len, kv_len] are sown into the 'intermediates'
collection as 'attention_weights'.

Folded key/value projections: with one head, a softmax over keys K = X Wk + bk and values
V = X Wv + bv of the kv inputs X [b, s, c] equals attending with queries q Wk^T [b, t, c] to X
itself (q . bk is the same for every key: softmax ignores it), then (P X) Wv + bv for the
rows that have a key. When t << s (a Perceiver cross-attention: latents or decoder queries
reading many inputs) this skips both [s, c] x [c, d] projections, forward and backward,
with the same parameters and the same result up to float rounding (the key bias, which a
softmax ignores, then gets an exactly zero gradient). `fold_kv_projections` (on by default)
folds where it saves FLOPs: one head, the 'xla' or 'chunked' backend (cudnn's head dims are
capped), no rotary, not causal, no active dropout. `MultiHeadAttention.folds_kv_projections`
is that decision, which `model_stats` asks to count the folded FLOPs. A folded attention sows
the same weights (`AttentionConfig.sow_weights`): softmax ignores the key bias.

A LayerNorm's affine map on the kv inputs (`kv_scale`, `kv_bias` [kv_channels]: the attention
reads X * kv_scale + kv_bias) folds as well: the scale into both kernels, the bias into the
value bias (bias @ Wv). Attention then reads the normalised inputs themselves, so when those
depend on no parameter (pixels and Fourier features) the backward pass never forms their
[b, s, c] gradient.
"""

from typing import Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from perceiver_jax.nn import attention as attention_lib
from perceiver_jax.nn.attention import AttentionConfig
from perceiver_jax.nn.position_encoding import RotaryPositionEmbedding
from perceiver_jax.nn.typing import DType


def check_divisible(channels: int, num_heads: int, field: str, heads_field: str):
  if channels % num_heads:
    raise ValueError(
        f"{field}={channels} is not divisible by {heads_field}={num_heads}; "
        f"set {field} to a multiple of {num_heads}.")


class _Projection(nn.Module):
  """nn.DenseGeneral whose output features are given at call time (they may follow the input
  widths); its kernel and bias (when use_bias) sit directly under this module's name."""
  axis: Union[int, Tuple[int, ...]] = -1
  use_bias: bool = True
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32

  @nn.compact
  def __call__(self, x, features: Union[int, Sequence[int]]):
    dense = nn.DenseGeneral(features, axis=self.axis, use_bias=self.use_bias, dtype=self.dtype,
                            param_dtype=self.param_dtype)
    nn.share_scope(self, dense)
    return dense(x)


class MultiHeadAttention(nn.Module):
  """Projects q, k, v per head, attends with `attention.dot_product_attention`, projects out.

  With rotary_fraction > 0, queries and keys are rotated by `RotaryPositionEmbedding` at
  `q_positions` / `kv_positions` (Perceiver AR). `qkv_bias` / `out_bias` give the query, key
  and value projections / the output projection a bias (krasserm's Perceiver AR drops some).
  The two steps are methods too, so a key/value
  cache (Perceiver AR's generation) runs the same code: `keys_values(inputs_kv, kv_positions)`
  -> (keys, values), then `attend(inputs_q, keys, values, mask, q_positions=...)`.
  """
  num_heads: int
  qk_channels: Optional[int] = None
  v_channels: Optional[int] = None
  output_channels: Optional[int] = None
  causal: bool = False
  rotary_fraction: float = 0.0
  attention: AttentionConfig = AttentionConfig()
  fold_kv_projections: bool = True
  qkv_bias: bool = True
  out_bias: bool = True
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32

  def __post_init__(self):
    if self.num_heads < 1:
      raise ValueError(f"num_heads must be >= 1, got {self.num_heads}.")
    for name in ("qk_channels", "v_channels", "output_channels"):
      value = getattr(self, name)
      if value is not None and value < 1:
        raise ValueError(f"{name} must be >= 1 or None, got {value}.")
    if not 0.0 <= self.rotary_fraction <= 1.0:
      raise ValueError(f"rotary_fraction must be in [0, 1], got {self.rotary_fraction}.")
    self.attention.check_dtype(self.dtype)
    super().__post_init__()

  def setup(self):
    project = lambda name, bias, axis=-1: _Projection(axis, bias, self.dtype, self.param_dtype,
                                                      name=name)
    self.query, self.key, self.value = (project(name, self.qkv_bias)
                                        for name in ("query", "key", "value"))
    self.out = project("out", self.out_bias, axis=(-2, -1))
    self.rotary = (RotaryPositionEmbedding(self.rotary_fraction) if self.rotary_fraction > 0
                   else None)

  @nn.nowrap
  def channels(self, kv_channels: int) -> Tuple[int, int]:
    """(qk_channels, v_channels) for key/value inputs of `kv_channels` (the defaults)."""
    qk_channels = self.qk_channels or kv_channels
    v_channels = self.v_channels or qk_channels
    check_divisible(qk_channels, self.num_heads, "qk_channels", "num_heads")
    check_divisible(v_channels, self.num_heads, "v_channels", "num_heads")
    return qk_channels, v_channels

  @nn.nowrap
  def folds_kv_projections(self, q_len: int, kv_len: int, kv_channels: int,
                           deterministic: bool = True) -> bool:
    """Whether attending q_len queries to kv_len inputs of kv_channels folds the key/value
    projections (module docstring): folding on, one head, the 'xla' or 'chunked' backend, no
    rotary, not causal, no active dropout, and fewer multiply-adds folded than literal."""
    dropout = not deterministic and self.attention.dropout_rate > 0
    if (not self.fold_kv_projections or self.num_heads != 1 or self.rotary_fraction > 0
        or self.causal or dropout or self.attention.implementation not in ("xla", "chunked")):
      return False
    qk, v = self.channels(kv_channels)
    unfolded = (kv_len * kv_channels + q_len * kv_len) * (qk + v)
    folded = q_len * kv_channels * (qk + v) + 2 * q_len * kv_len * kv_channels
    return folded < unfolded

  def __call__(self, inputs_q, inputs_kv, mask=None, *, deterministic: bool = True,
               q_positions=None, kv_positions=None, kv_scale=None, kv_bias=None):
    """inputs_q [b, t, q_channels] attend to inputs_kv [b, s, kv_channels] read as
    inputs_kv * kv_scale + kv_bias when given -> [b, t, output_channels]."""
    if (kv_scale is None) != (kv_bias is None):
      raise ValueError("kv_scale and kv_bias go together (a LayerNorm's affine map); pass both "
                       "or neither.")
    if kv_scale is not None and not kv_scale.shape == kv_bias.shape == inputs_kv.shape[-1:]:
      raise ValueError(f"kv_scale {kv_scale.shape} and kv_bias {kv_bias.shape} must both have "
                       f"shape [kv_channels] = {inputs_kv.shape[-1:]}.")
    if self.folds_kv_projections(inputs_q.shape[1], inputs_kv.shape[1], inputs_kv.shape[-1],
                                 deterministic):
      out = self._folded_attention(inputs_q, inputs_kv, mask, kv_scale, kv_bias)
      return self.out(out, self.output_channels or inputs_q.shape[-1])
    if kv_scale is not None:
      inputs_kv = (inputs_kv * kv_scale + kv_bias).astype(self.dtype)
    key, value = self.keys_values(inputs_kv, kv_positions)
    return self.attend(inputs_q, key, value, mask, deterministic=deterministic,
                       q_positions=q_positions)

  def keys_values(self, inputs_kv, kv_positions=None):
    """inputs_kv [b, s, kv_channels] (at kv_positions [b, s] with rotary) -> keys
    [b, s, heads, qk_channels / heads], values [b, s, heads, v_channels / heads]."""
    qk_channels, v_channels = self.channels(inputs_kv.shape[-1])
    key = self._rotate(self.key(inputs_kv, self._heads(qk_channels)), kv_positions)
    return key, self.value(inputs_kv, self._heads(v_channels))

  def attend(self, inputs_q, key, value, mask=None, *, deterministic: bool = True,
             q_positions=None):
    """Queries of inputs_q [b, t, q_channels] (at q_positions [b, t] with rotary) attend to
    projected keys and values from `keys_values` -> [b, t, output_channels]."""
    query = self.query(inputs_q, key.shape[-2:])
    query = self._rotate(query, q_positions)
    out = self._attend_heads(query, key, value, mask, deterministic, self.causal)
    return self.out(out, self.output_channels or inputs_q.shape[-1])

  def _heads(self, channels):
    return self.num_heads, channels // self.num_heads

  def _rotate(self, x, positions):
    if self.rotary is None:
      return x
    if positions is None:
      raise ValueError("rotary_fraction > 0 needs q_positions and kv_positions.")
    return self.rotary(x, positions)

  def _attend_heads(self, query, key, value, mask, deterministic, causal, scale=None):
    """dot_product_attention with this module's config and dropout rng; sows the weights
    when the config asks."""
    if self.attention.sow_weights:
      self.sow("intermediates", "attention_weights",
               attention_lib.attention_weights(query, key, mask, causal=causal, scale=scale))
    dropout_rng = None
    if self.attention.dropout_rate > 0 and not deterministic:
      dropout_rng = self.make_rng("dropout")
    return attention_lib.dot_product_attention(
        query, key, value, mask, causal=causal, config=self.attention, dropout_rng=dropout_rng,
        deterministic=deterministic, scale=scale)

  def _folded_attention(self, inputs_q, inputs_kv, mask, kv_scale, kv_bias):
    """One-head attention with folded key/value projections and kv affine map (module
    docstring): inputs_q [b, t, q_channels] and inputs [b, s, c] -> [b, t, 1, v]."""
    qk_channels, v_channels = self.channels(inputs_kv.shape[-1])
    query = self.query(inputs_q, self._heads(qk_channels))
    empty = inputs_kv[:, :0]  # Zero rows: creates / binds the projections' params, no FLOPs.
    self.key(empty, self._heads(qk_channels))
    self.value(empty, self._heads(v_channels))
    key_kernel = self.key.variables["params"]["kernel"]  # [c, 1, qk]
    value_params = self.value.variables["params"]
    value_kernel = value_params["kernel"]  # [c, 1, v]
    value_bias = value_params["bias"] if self.qkv_bias else jnp.zeros(
        value_kernel.shape[1:], value_kernel.dtype)
    if kv_scale is not None:
      value_bias = value_bias + jnp.einsum("c,cnd->nd", kv_bias, value_kernel)
      key_kernel = key_kernel * kv_scale[:, None, None]
      value_kernel = value_kernel * kv_scale[:, None, None]
    inputs = inputs_kv.astype(self.dtype)[:, :, None]  # [b, s, 1, c]
    folded_query = jnp.einsum("btnd,cnd->btnc", query, key_kernel.astype(self.dtype))
    attended = self._attend_heads(folded_query, inputs, inputs, mask, True, False,
                                  scale=1.0 / np.sqrt(qk_channels))  # P X: [b, t, 1, c].
    out = jnp.einsum("btnc,cnd->btnd", attended, value_kernel.astype(self.dtype))
    bias = value_bias.astype(self.dtype)
    has_keys = attention_lib.rows_with_keys(mask, inputs_kv.shape[0], 1, query.shape[1],
                                            inputs_kv.shape[1])
    return out + (bias if has_keys is None else jnp.where(has_keys, bias, 0).astype(out.dtype))
