"""PerceiverLayer: zeta's PerceiverLayer, `depth` blocks on (q, k, v), from our layers.

q [batch, q_len, dim], k [batch, k_len, dim], v [batch, v_len, dim] (+ mask) -> [batch, q_len, dim]

Each block (pre-LayerNorm, residual, distinct weights per block):
  x += Attn(LN(x))                          self-attention of the queries (MultiHeadAttention)
  x = CrossAttentionLayer(x, concat(k, v))  x += Attn(LN(x), LN(context)); x += MLP(LN(x))
As zeta's layer does, k and v are concatenated along the sequence into the context
[batch, k_len + v_len, dim] the queries attend to; `mask` is over that context
([batch, k_len + v_len] or [batch, 1, q_len, k_len + v_len], True = attend). Every attention
has `heads` heads of `dim_head` channels; the MLP is ff_mult x dim wide; `dropout` follows
every attention and MLP (active with deterministic=False and a 'dropout' rng).
"""

import flax.linen as nn
import jax.numpy as jnp

from perceiver_jax.nn.layers import CrossAttentionLayer, layer_norm
from perceiver_jax.nn.model_stats import (Stats, attention_stats, cross_layer_stats,
                                          layer_norm_stats)
from perceiver_jax.nn.multi_head_attention import MultiHeadAttention
from perceiver_jax.nn.typing import DType
from perceiver_jax.nn.validation import check_positive, check_rate


class _PerceiverBlock(nn.Module):
  """One block of PerceiverLayer: x [b, t, dim], context [b, s, dim] -> [b, t, dim]."""
  heads: int
  dim_head: int
  ff_mult: int
  dropout: float
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32

  @nn.nowrap
  def _self_attention(self, name=None) -> MultiHeadAttention:
    inner = self.heads * self.dim_head
    return MultiHeadAttention(num_heads=self.heads, qk_channels=inner, v_channels=inner,
                              dtype=self.dtype, param_dtype=self.param_dtype, name=name)

  @nn.nowrap
  def _cross_attention(self, name=None) -> CrossAttentionLayer:
    inner = self.heads * self.dim_head
    return CrossAttentionLayer(num_heads=self.heads, qk_channels=inner, v_channels=inner,
                               widening_factor=self.ff_mult, dropout_rate=self.dropout,
                               dtype=self.dtype, param_dtype=self.param_dtype, name=name)

  @nn.compact
  def __call__(self, x, context, mask=None, deterministic: bool = True):
    x = x.astype(self.dtype)
    normed = layer_norm(self.param_dtype, "attention_norm")(x).astype(self.dtype)
    attended = self._self_attention("self_attention")(normed, normed)
    x = x + nn.Dropout(self.dropout)(attended, deterministic=deterministic)
    return self._cross_attention("cross_attention")(x, context, mask, deterministic)

  @nn.nowrap
  def stats(self, x_shape, context_shape) -> Stats:
    """Parameters and FLOPs for x [t, dim] and context [s, dim] -> [t, dim]."""
    inner = self.heads * self.dim_head
    self_attention = attention_stats(x_shape, x_shape, self._self_attention())
    cross = cross_layer_stats(x_shape, context_shape,
                              self._cross_attention().multi_head_attention(), self.ff_mult)
    return layer_norm_stats(x_shape) + self_attention + cross


class PerceiverLayer(nn.Module):
  """`layer(q, k, v, mask=None)` -> [batch, q_len, dim]; see the module docstring.

  Constructed as zeta's: PerceiverLayer(dim, heads, depth, dim_head=64, dropout=0.1).
  """
  dim: int
  heads: int
  depth: int
  dim_head: int = 64
  dropout: float = 0.1
  ff_mult: int = 4
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32

  def __post_init__(self):
    check_positive(self, "dim", "heads", "depth", "dim_head", "ff_mult")
    check_rate(self, "dropout")
    super().__post_init__()

  @nn.nowrap
  def _block(self, name=None) -> _PerceiverBlock:
    return _PerceiverBlock(self.heads, self.dim_head, self.ff_mult, self.dropout, self.dtype,
                          self.param_dtype, name=name)

  @nn.nowrap
  def _check_shapes(self, q_shape, k_shape, v_shape):
    shapes = {"q": tuple(q_shape), "k": tuple(k_shape), "v": tuple(v_shape)}
    if (any(len(shape) != 3 or shape[-1] != self.dim for shape in shapes.values())
        or len({shape[0] for shape in shapes.values()}) != 1):
      raise ValueError(
          f"PerceiverLayer expects q, k and v [batch, length, dim={self.dim}] of one batch size, "
          f"got {', '.join(f'{n} {shape}' for n, shape in shapes.items())}; set "
          "PerceiverLayer.dim to their last dim.")

  @nn.compact
  def __call__(self, q, k, v, mask=None, deterministic: bool = True):
    self._check_shapes(q.shape, k.shape, v.shape)
    context = jnp.concatenate([k, v], axis=1)
    x = q
    for i in range(self.depth):
      x = self._block(f"block_{i}")(x, context, mask, deterministic)
    return x

  @nn.nowrap
  def stats(self, q_shape, k_shape, v_shape) -> Stats:
    """Parameters and FLOPs for q [q_len, dim], k [k_len, dim], v [v_len, dim] -> [q_len, dim]."""
    self._check_shapes((1,) + tuple(q_shape), (1,) + tuple(k_shape), (1,) + tuple(v_shape))
    context_shape = (k_shape[0] + v_shape[0], self.dim)
    block = self._block().stats(tuple(q_shape), context_shape)
    return Stats(self.depth * block.params, self.depth * block.flops, block.output_shape)
