"""Multi-head attention with separate query/key, value and output widths (official defaults).

inputs_q [batch, q_len, q_channels], inputs_kv [batch, kv_len, kv_channels]
  -> [batch, q_len, output_channels]

qk_channels defaults to kv_channels (for self-attention that is the latent width),
v_channels to qk_channels and output_channels to q_channels. Both must divide by num_heads.
"""

from typing import Optional

import flax.linen as nn
import jax.numpy as jnp

from perceiver_jax import attention
from perceiver_jax.position_encoding import RotaryPositionEmbedding
from perceiver_jax.typing import DType


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
               q_positions=None, kv_positions=None):
    qk_channels = self.qk_channels or inputs_kv.shape[-1]
    v_channels = self.v_channels or qk_channels
    output_channels = self.output_channels or inputs_q.shape[-1]
    check_divisible(qk_channels, self.num_heads, "qk_channels", "num_heads")
    check_divisible(v_channels, self.num_heads, "v_channels", "num_heads")

    def project(x, channels, name):
      return nn.DenseGeneral((self.num_heads, channels // self.num_heads), dtype=self.dtype,
                             param_dtype=self.param_dtype, name=name)(x)

    query = project(inputs_q, qk_channels, "query")
    key = project(inputs_kv, qk_channels, "key")
    value = project(inputs_kv, v_channels, "value")
    if self.rotary_fraction > 0:
      if q_positions is None or kv_positions is None:
        raise ValueError("rotary_fraction > 0 needs q_positions and kv_positions.")
      rotary = RotaryPositionEmbedding(self.rotary_fraction)
      query, key = rotary(query, q_positions), rotary(key, kv_positions)
    dropout_rng = None
    if self.dropout_rate > 0 and not deterministic:
      dropout_rng = self.make_rng("dropout")
    out = attention.dot_product_attention(
        query, key, value, mask, causal=self.causal, implementation=self.implementation,
        dropout_rate=self.dropout_rate, dropout_rng=dropout_rng, deterministic=deterministic,
        chunk_size=self.chunk_size)
    return nn.DenseGeneral(output_channels, axis=(-2, -1), dtype=self.dtype,
                           param_dtype=self.param_dtype, name="out")(out)
