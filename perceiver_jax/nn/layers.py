"""Pre-LayerNorm Perceiver layers: MLP, cross-attention, self-attention and a self-attention block.

  CrossAttentionLayer:  a = Attn(LN(q), LN(kv)); x = q + a (use_query_residual) or a;
                        x += MLP(LN(x)).       q [b, n, d], kv [b, m, c] -> [b, n, d]
  SelfAttentionLayer:   x += Attn(LN(x)); x += MLP(LN(x)).   [b, n, d] -> [b, n, d]
  SelfAttentionBlock:   num_layers distinct SelfAttentionLayers in sequence.

LayerNorms run in float32; dropout follows the attention output and the MLP output.
`attention` (an AttentionConfig) is how the layers attend: backend, chunk size, attention
dropout and whether to sow the attention weights.
"""

from typing import Optional

import flax.linen as nn
import jax.numpy as jnp

from perceiver_jax.nn.attention import AttentionConfig
from perceiver_jax.nn.multi_head_attention import MultiHeadAttention
from perceiver_jax.nn.typing import DType, hyperparameters
from perceiver_jax.nn.validation import check_choice, check_positive, check_rate

LAYER_NORM_EPSILON = 1e-5  # As Haiku's and PyTorch's LayerNorm in the reference models.


def layer_norm(param_dtype: DType, name: Optional[str] = None) -> nn.LayerNorm:
  """A float32 LayerNorm; its output is cast back to the compute dtype by the caller."""
  return nn.LayerNorm(epsilon=LAYER_NORM_EPSILON, dtype=jnp.float32, param_dtype=param_dtype,
                      name=name)


class LayerNormParts(nn.Module):
  """nn.LayerNorm with its affine map left unapplied: x [..., c] -> (float32 normalised x
  [..., c], scale [c], bias [c]); the same parameters as `layer_norm`. The cross-attention
  hands scale and bias to MultiHeadAttention, which folds them into its projections."""
  param_dtype: DType = jnp.float32

  @nn.compact
  def __call__(self, x):
    channels = x.shape[-1:]
    scale = self.param("scale", nn.initializers.ones, channels, self.param_dtype)
    bias = self.param("bias", nn.initializers.zeros, channels, self.param_dtype)
    normed = nn.LayerNorm(epsilon=LAYER_NORM_EPSILON, use_bias=False, use_scale=False,
                          dtype=jnp.float32, name="normalize")(x)
    return normed, scale, bias


ACTIVATIONS = {
    "gelu": lambda x: nn.gelu(x, approximate=True),  # The official Perceiver (Haiku) MLP.
    "gelu_exact": lambda x: nn.gelu(x, approximate=False),  # PyTorch / transformers.
    "relu": nn.relu,
    "squared_relu": lambda x: jnp.square(nn.relu(x)),  # Perceiver AR.
}


class MLP(nn.Module):
  """Dense(widening_factor * C) -> activation -> Dense(C) -> dropout; [..., C] -> [..., C].

  activation: 'gelu' (tanh approximation, the default), 'gelu_exact', 'relu', 'squared_relu'.
  use_bias: whether both Dense layers have a bias (krasserm's Perceiver AR MLPs have none).
  """
  widening_factor: int = 4
  dropout_rate: float = 0.0
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32
  activation: str = "gelu"
  use_bias: bool = True

  def __post_init__(self):
    check_positive(self, "widening_factor")
    check_rate(self, "dropout_rate")
    check_choice(self, "activation", tuple(ACTIVATIONS))
    super().__post_init__()

  @nn.compact
  def __call__(self, x, deterministic: bool = True):
    channels = x.shape[-1]
    dense = lambda features: nn.Dense(features, use_bias=self.use_bias, dtype=self.dtype,
                                      param_dtype=self.param_dtype)
    x = ACTIVATIONS[self.activation](dense(self.widening_factor * channels)(x))
    x = dense(channels)(x)
    return nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)


class _AttentionLayer(nn.Module):
  """Fields and sub-steps shared by the cross- and self-attention layers."""
  num_heads: int = 8
  qk_channels: Optional[int] = None
  v_channels: Optional[int] = None
  widening_factor: int = 1
  dropout_rate: float = 0.0
  causal: bool = False
  attention: AttentionConfig = AttentionConfig()
  activation: str = "gelu"
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32

  def __post_init__(self):
    check_positive(self, "num_heads", "widening_factor")
    check_rate(self, "dropout_rate")
    check_choice(self, "activation", tuple(ACTIVATIONS))
    super().__post_init__()

  def _norm(self, x, name):
    return layer_norm(self.param_dtype, name)(x).astype(self.dtype)

  @nn.nowrap
  def multi_head_attention(self, name=None) -> MultiHeadAttention:
    """The layer's attention module (also what its analytic stats ask about folding)."""
    return MultiHeadAttention(
        num_heads=self.num_heads, qk_channels=self.qk_channels, v_channels=self.v_channels,
        causal=self.causal, attention=self.attention, dtype=self.dtype,
        param_dtype=self.param_dtype, name=name)

  def _attend(self, q, kv, mask, deterministic, kv_scale=None, kv_bias=None):
    attended = self.multi_head_attention("attention")(
        q, kv, mask, deterministic=deterministic, kv_scale=kv_scale, kv_bias=kv_bias)
    return nn.Dropout(self.dropout_rate)(attended, deterministic=deterministic)

  def _mlp_residual(self, x, deterministic):
    return x + MLP(self.widening_factor, self.dropout_rate, self.dtype, self.param_dtype,
                   self.activation, name="mlp")(self._norm(x, "mlp_norm"), deterministic)


class CrossAttentionLayer(_AttentionLayer):
  """Queries [b, n, d] attend to inputs [b, m, c] (mask [b, m] or [b, 1, n, m]) -> [b, n, d]."""
  num_heads: int = 1
  use_query_residual: bool = True

  @nn.compact
  def __call__(self, x, inputs, mask=None, deterministic: bool = True):
    x = x.astype(self.dtype)
    normed_inputs, scale, bias = LayerNormParts(self.param_dtype, name="input_norm")(inputs)
    attended = self._attend(self._norm(x, "query_norm"), normed_inputs, mask, deterministic,
                            scale, bias)
    x = x + attended if self.use_query_residual else attended
    return self._mlp_residual(x, deterministic)


class SelfAttentionLayer(_AttentionLayer):
  """Latents [b, n, d] attend to themselves (optionally causally) -> [b, n, d]."""

  @nn.compact
  def __call__(self, x, mask=None, deterministic: bool = True):
    x = x.astype(self.dtype)
    normed = self._norm(x, "attention_norm")
    x = x + self._attend(normed, normed, mask, deterministic)
    return self._mlp_residual(x, deterministic)


class SelfAttentionBlock(_AttentionLayer):
  """`num_layers` distinct SelfAttentionLayers with these settings; [b, n, d] -> [b, n, d]."""
  num_layers: int = 1
  remat: bool = False

  def __post_init__(self):
    check_positive(self, "num_layers")
    super().__post_init__()

  @nn.compact
  def __call__(self, x, mask=None, deterministic: bool = True):
    layer_cls = nn.remat(SelfAttentionLayer, static_argnums=(3,)) if self.remat else SelfAttentionLayer
    settings = hyperparameters(self, _AttentionLayer)
    for i in range(self.num_layers):
      x = layer_cls(**settings, name=f"layer_{i}")(x, mask, deterministic)
    return x
