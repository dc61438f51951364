"""PerceiverEncoder: a latent array cross-attends to the inputs, then self-attention blocks.

inputs [batch, index, channels] (+ pad_mask [batch, index], True = real input)
  -> latents [batch, num_latents, num_latent_channels]

Schedule: for block i in 1..L (L = num_self_attention_blocks), cross-attention layer i is
applied first when i <= P (P = num_cross_attention_layers), then self-attention block i
(num_self_attention_layers_per_block distinct layers). Cross-attention layers 2..P share one
set of weights, and so do blocks 2..L; the first layer / block shares them too when
first_cross_attention_layer_shared / first_self_attention_block_shared. Sharing reuses one
module, so a shared set of parameters exists once.

The defaults are Perceiver IO's ImageNet encoder (P=1, 8 blocks of 6 layers, all blocks
shared); the original Perceiver uses P=8, L=8 with the first cross-attention unshared.

`attention` (an AttentionConfig: backend, chunk size, attention dropout, sown weights) is how
every layer attends unless `cross_attention` gives the cross-attentions their own: a one-head
cross-attention over image inputs has head dims of 261 (pixels + Fourier features), beyond
cuDNN's 256, so on a GPU cudnn self-attention goes with an 'xla' or 'chunked' cross-attention.
"""

from typing import Optional

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from perceiver_jax.nn.attention import AttentionConfig
from perceiver_jax.nn.layers import ACTIVATIONS, CrossAttentionLayer, SelfAttentionBlock
from perceiver_jax.nn.model_stats import Stats, cross_layer_stats, self_layer_stats
from perceiver_jax.nn.multi_head_attention import MultiHeadAttention, check_divisible
from perceiver_jax.nn.typing import DType
from perceiver_jax.nn.validation import check_choice, check_positive, check_rate


class PerceiverEncoder(nn.Module):
  """Latent cross-attention and weight-shared self-attention tower; see module docstring."""
  num_latents: int = 512
  num_latent_channels: int = 1024
  num_cross_attention_layers: int = 1
  num_self_attention_blocks: int = 8
  num_self_attention_layers_per_block: int = 6
  first_cross_attention_layer_shared: bool = False
  first_self_attention_block_shared: bool = True
  num_cross_attention_heads: int = 1
  num_self_attention_heads: int = 8
  cross_attention_qk_channels: Optional[int] = None
  cross_attention_v_channels: Optional[int] = None
  self_attention_qk_channels: Optional[int] = None
  self_attention_v_channels: Optional[int] = None
  cross_attention_widening_factor: int = 1
  self_attention_widening_factor: int = 1
  use_query_residual: bool = True
  dropout_rate: float = 0.0
  latent_init_scale: float = 0.02
  attention: AttentionConfig = AttentionConfig()
  cross_attention: Optional[AttentionConfig] = None  # None: `attention`.
  remat: bool = False
  activation: str = "gelu"  # The MLPs' nonlinearity: a key of layers.ACTIVATIONS.
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32

  def __post_init__(self):
    check_positive(self, "num_latents", "num_latent_channels", "num_cross_attention_layers",
                   "num_self_attention_blocks", "num_self_attention_layers_per_block",
                   "num_cross_attention_heads", "num_self_attention_heads",
                   "cross_attention_widening_factor", "self_attention_widening_factor")
    check_rate(self, "dropout_rate")
    check_choice(self, "activation", tuple(ACTIVATIONS))
    if self.num_cross_attention_layers > self.num_self_attention_blocks:
      raise ValueError(
          f"num_cross_attention_layers={self.num_cross_attention_layers} exceeds "
          f"num_self_attention_blocks={self.num_self_attention_blocks}: cross-attention i runs "
          "before self-attention block i, so set num_cross_attention_layers <= "
          "num_self_attention_blocks.")
    for name in ("cross_attention_qk_channels", "cross_attention_v_channels"):
      if getattr(self, name) is not None:
        check_divisible(getattr(self, name), self.num_cross_attention_heads, name,
                        "num_cross_attention_heads")
    check_divisible(self.self_attention_qk_channels or self.num_latent_channels,
                    self.num_self_attention_heads, "self_attention_qk_channels",
                    "num_self_attention_heads")
    check_divisible(self.self_attention_v_channels or self.self_attention_qk_channels
                    or self.num_latent_channels, self.num_self_attention_heads,
                    "self_attention_v_channels", "num_self_attention_heads")
    super().__post_init__()

  @property
  def cross_attention_config(self) -> AttentionConfig:
    """How the cross-attentions attend."""
    return self.cross_attention or self.attention

  def _cross_attention(self, name):
    cls = nn.remat(CrossAttentionLayer, static_argnums=(4,)) if self.remat else CrossAttentionLayer
    return cls(
        num_heads=self.num_cross_attention_heads, qk_channels=self.cross_attention_qk_channels,
        v_channels=self.cross_attention_v_channels,
        widening_factor=self.cross_attention_widening_factor,
        use_query_residual=self.use_query_residual, dropout_rate=self.dropout_rate,
        attention=self.cross_attention_config, activation=self.activation, dtype=self.dtype,
        param_dtype=self.param_dtype, name=name)

  def _self_attention_block(self, name):
    return SelfAttentionBlock(
        num_layers=self.num_self_attention_layers_per_block,
        num_heads=self.num_self_attention_heads, qk_channels=self.self_attention_qk_channels,
        v_channels=self.self_attention_v_channels,
        widening_factor=self.self_attention_widening_factor, dropout_rate=self.dropout_rate,
        attention=self.attention, remat=self.remat, activation=self.activation, dtype=self.dtype,
        param_dtype=self.param_dtype, name=name)

  @nn.compact
  def __call__(self, inputs, pad_mask=None, deterministic: bool = True):
    if inputs.ndim != 3:
      raise ValueError(
          f"PerceiverEncoder expects inputs [batch, index, channels], got shape {inputs.shape}; "
          "flatten the index dims first.")
    if self.cross_attention_qk_channels is None:
      check_divisible(inputs.shape[-1], self.num_cross_attention_heads,
                      "cross_attention_qk_channels (defaults to the input channels)",
                      "num_cross_attention_heads")
    p, l = self.num_cross_attention_layers, self.num_self_attention_blocks
    cross_shared = block_shared = None
    if p > 1 or self.first_cross_attention_layer_shared:
      cross_shared = self._cross_attention("cross_attention_shared")
    if l > 1 or self.first_self_attention_block_shared:
      block_shared = self._self_attention_block("self_attention_block_shared")
    cross_first = (cross_shared if self.first_cross_attention_layer_shared
                   else self._cross_attention("cross_attention_first"))
    block_first = (block_shared if self.first_self_attention_block_shared
                   else self._self_attention_block("self_attention_block_first"))

    latents = self.param("latents", nn.initializers.truncated_normal(self.latent_init_scale),
                         (self.num_latents, self.num_latent_channels), self.param_dtype)
    x = jnp.broadcast_to(latents.astype(self.dtype), (inputs.shape[0],) + latents.shape)
    inputs = inputs.astype(self.dtype)
    for i in range(l):
      if i < p:
        x = (cross_first if i == 0 else cross_shared)(x, inputs, pad_mask, deterministic)
      x = (block_first if i == 0 else block_shared)(x, None, deterministic)
    return x

  @nn.nowrap
  def stats(self, input_shape) -> Stats:
    """Parameters and FLOPs for inputs [index, channels] -> [num_latents, num_latent_channels];
    a shared layer's parameters count once, its FLOPs once per application."""
    p, l = self.num_cross_attention_layers, self.num_self_attention_blocks
    latent_shape = (self.num_latents, self.num_latent_channels)
    cross_attention = MultiHeadAttention(
        self.num_cross_attention_heads, self.cross_attention_qk_channels,
        self.cross_attention_v_channels, attention=self.cross_attention_config, dtype=self.dtype)
    self_attention = MultiHeadAttention(
        self.num_self_attention_heads, self.self_attention_qk_channels,
        self.self_attention_v_channels, attention=self.attention, dtype=self.dtype)
    cross = cross_layer_stats(latent_shape, tuple(input_shape), cross_attention,
                              self.cross_attention_widening_factor)
    layer = self_layer_stats(latent_shape, self_attention, self.self_attention_widening_factor)
    per_block = self.num_self_attention_layers_per_block  # Distinct layers.
    block = Stats(per_block * layer.params, per_block * layer.flops, latent_shape)
    distinct_cross = (1 if p > 1 or self.first_cross_attention_layer_shared else 0) + (
        0 if self.first_cross_attention_layer_shared else 1)
    distinct_blocks = (1 if l > 1 or self.first_self_attention_block_shared else 0) + (
        0 if self.first_self_attention_block_shared else 1)
    latents = int(np.prod(latent_shape))
    return Stats(latents + distinct_cross * cross.params + distinct_blocks * block.params,
                 p * cross.flops + l * block.flops, latent_shape)
