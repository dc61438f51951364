"""Decoders: Perceiver IO's query decoder and the two classification heads.

- `PerceiverDecoder`: output queries [b, o, q] cross-attend to latents [b, n, d]; optional
  query residual and MLP; optional final linear -> [b, o, output_channels or q].
- `TrainableQuery`: learned decoder queries [b, num_queries, num_channels].
- `ClassificationDecoder` (Perceiver IO): one trainable query -> PerceiverDecoder ->
  logits [b, num_classes].
- `ProjectionDecoder` (original Perceiver): mean over latents -> linear -> [b, num_classes].
"""

from typing import Optional

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from perceiver_jax.nn.attention import AttentionConfig
from perceiver_jax.nn.layers import ACTIVATIONS, MLP, layer_norm
from perceiver_jax.nn.model_stats import (Stats, attention_stats, dense_stats, layer_norm_stats,
                                          mlp_stats)
from perceiver_jax.nn.multi_head_attention import MultiHeadAttention
from perceiver_jax.nn.position_encoding import TrainablePositionEncoding
from perceiver_jax.nn.subsampling import subsample
from perceiver_jax.nn.typing import DType, hyperparameters
from perceiver_jax.nn.validation import check_choice, check_positive, check_rate


class PerceiverDecoder(nn.Module):
  """Cross-attention from output queries to latents: [b, o, q] x [b, n, d] -> [b, o, c].

  x = Attn(LN(queries), LN(latents)); x += queries if use_query_residual;
  x += MLP(LN(x)) if use_mlp; then Dense(output_channels) when output_channels is set.
  qk_channels defaults to the latent channels, as the official decoder. `attention` (an
  AttentionConfig) is how it attends.
  """
  num_heads: int = 1
  qk_channels: Optional[int] = None
  v_channels: Optional[int] = None
  widening_factor: int = 1
  use_query_residual: bool = False
  use_mlp: bool = True
  output_channels: Optional[int] = None
  dropout_rate: float = 0.0
  attention: AttentionConfig = AttentionConfig()
  activation: str = "gelu"  # The MLP's nonlinearity: a key of layers.ACTIVATIONS.
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32

  def __post_init__(self):
    check_positive(self, "num_heads", "widening_factor", "output_channels")
    check_choice(self, "activation", tuple(ACTIVATIONS))
    check_rate(self, "dropout_rate")
    super().__post_init__()

  @nn.compact
  def __call__(self, queries, latents, deterministic: bool = True):
    norm = lambda x, name: layer_norm(self.param_dtype, name)(x).astype(self.dtype)
    queries = queries.astype(self.dtype)
    x = MultiHeadAttention(
        num_heads=self.num_heads, qk_channels=self.qk_channels, v_channels=self.v_channels,
        attention=self.attention, dtype=self.dtype, param_dtype=self.param_dtype,
        name="attention")(norm(queries, "query_norm"), norm(latents, "latent_norm"),
                          deterministic=deterministic)
    x = nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)
    if self.use_query_residual:
      x = x + queries
    if self.use_mlp:
      x = x + MLP(self.widening_factor, self.dropout_rate, self.dtype, self.param_dtype,
                  self.activation, name="mlp")(norm(x, "mlp_norm"), deterministic)
    if self.output_channels is not None:
      x = nn.Dense(self.output_channels, dtype=self.dtype, param_dtype=self.param_dtype,
                   name="output")(x)
    return x

  @nn.nowrap
  def stats(self, query_shape, latent_shape) -> Stats:
    """Parameters and FLOPs for queries [outputs, q] and latents [n, d] -> [outputs, c]."""
    query_shape = tuple(query_shape)
    attention = MultiHeadAttention(self.num_heads, self.qk_channels, self.v_channels,
                                   attention=self.attention, dtype=self.dtype)
    attn = attention_stats(query_shape, tuple(latent_shape), attention)
    total = layer_norm_stats(query_shape) + layer_norm_stats(latent_shape) + attn
    if self.use_mlp:
      total = total + layer_norm_stats(query_shape) + mlp_stats(query_shape, self.widening_factor)
    if self.output_channels is not None:
      total = total + dense_stats(query_shape[-1], self.output_channels, query_shape[0])
    return total


class TrainableQuery(nn.Module):
  """Learned output queries [batch, num_queries, num_channels]; batch taken from `inputs`.

  With `subsampled_points` (int [k] or [batch, k]) only those queries, [batch, k, channels].
  """
  num_queries: int
  num_channels: int
  init_scale: float = 0.02
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32

  @nn.compact
  def __call__(self, inputs, subsampled_points=None):
    queries = TrainablePositionEncoding((self.num_queries,), self.num_channels, self.init_scale,
                                        self.dtype, self.param_dtype,
                                        name="queries")(inputs.shape[0])
    return subsample(queries, subsampled_points)

  @nn.nowrap
  def stats(self, input_shape) -> Stats:
    """The learned queries [num_queries, num_channels]; they depend on no input."""
    del input_shape  # Queries depend only on the batch size.
    shape = (self.num_queries, self.num_channels)
    return Stats(int(np.prod(shape)), 0, shape)


class ClassificationDecoder(PerceiverDecoder):
  """Perceiver IO head: one learned query attends to the latents -> logits [b, num_classes].

  Takes every PerceiverDecoder setting; its output layer has num_classes channels.
  """
  num_classes: int = 1000
  num_query_channels: Optional[int] = None  # Defaults to the latent channels.

  def __post_init__(self):
    if self.output_channels is not None:
      raise ValueError("ClassificationDecoder.output_channels must stay None: "
                       "the output layer has num_classes channels.")
    check_positive(self, "num_classes", "num_query_channels")
    super().__post_init__()

  @nn.compact
  def __call__(self, latents, deterministic: bool = True):
    channels = self.num_query_channels or latents.shape[-1]
    queries = TrainableQuery(1, channels, dtype=self.dtype, param_dtype=self.param_dtype,
                             name="query")(latents)
    settings = dict(hyperparameters(self, PerceiverDecoder), output_channels=self.num_classes)
    return PerceiverDecoder(**settings, name="decoder")(queries, latents, deterministic)[:, 0]

  @nn.nowrap
  def stats(self, latent_shape) -> Stats:
    """Parameters and FLOPs for latents [n, d] -> logits [num_classes]."""
    query = (1, self.num_query_channels or latent_shape[-1])
    decoder = PerceiverDecoder(**dict(hyperparameters(self, PerceiverDecoder),
                                      output_channels=self.num_classes))
    total = Stats(int(np.prod(query)), 0, query) + decoder.stats(query, latent_shape)
    return Stats(total.params, total.flops, (self.num_classes,))


class ProjectionDecoder(nn.Module):
  """Original Perceiver head: mean over latents [b, n, d] -> zero-initialised linear."""
  num_classes: int
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32

  def __post_init__(self):
    check_positive(self, "num_classes")
    super().__post_init__()

  @nn.compact
  def __call__(self, latents, deterministic: bool = True):
    del deterministic  # No dropout in this head.
    pooled = jnp.mean(latents.astype(jnp.float32), axis=1).astype(self.dtype)
    return nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros, dtype=self.dtype,
                    param_dtype=self.param_dtype, name="logits")(pooled)

  @nn.nowrap
  def stats(self, latent_shape) -> Stats:
    """Parameters and FLOPs for latents [n, d] -> logits [num_classes]."""
    dense = dense_stats(latent_shape[-1], self.num_classes, 1)
    return Stats(dense.params, dense.flops, (self.num_classes,))
