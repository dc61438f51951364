"""Perceiver AR (Hawthorne et al., ICML 2022): the autoregressive Perceiver.

ids [batch, n] (n <= max_context) -> token embeddings x [b, n, d] (+ learned absolute
positions when `absolute_positions`) -> the last L = min(num_latents, n) positions are the
latents: each latent's query LN(x_i) cross-attends to LN(x_j) at every position j <= i
(causal; padding excluded), the latent keeps x_i as residual, += MLP -> num_layers pre-LN
causal self-attention layers over the latents -> final LN -> zero-initialised Dense ->
logits [b, L, vocab_size] at positions n-L .. n-1 (each predicts the next token).
Queries and keys get rotary embeddings (interleaved pairs) on `rotary_fraction` of each head's
dims, by absolute position; MLPs use `activation` (squared ReLU by default).

`model_stats.param_count(model, (n,))` / `flops` count it analytically (`PerceiverAR.stats`).
The pieces are methods, so cached generation (generation.py) runs the same code:
  embed(ids, positions) -> x;  cross_keys_values(x, positions) -> (k, v)
  latents_forward(x_latents, latent_positions, latent_valid, k, v, kv_positions, kv_valid)
    = head(self-attention layers(cross_attend(...)));  latents_extend(..., cache, ...) runs
    new latents against per-layer self-attention key/value caches (generation's cache='latents').
Every attention is a MultiHeadAttention (its `keys_values` and `attend` steps for the
cross-attention's cache) with `attention` (an AttentionConfig) as its settings.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from perceiver_jax.nn.attention import AttentionConfig
from perceiver_jax.nn.layers import ACTIVATIONS, MLP, layer_norm
from perceiver_jax.nn.model_stats import Stats
from perceiver_jax.nn.multi_head_attention import MultiHeadAttention
from perceiver_jax.nn.position_encoding import rotary_dims
from perceiver_jax.nn.typing import DType
from perceiver_jax.nn.validation import (check_batch, check_choice, check_positive,
                                         check_rate)


def _attention(module, name: str) -> MultiHeadAttention:
  """A Perceiver AR attention: num_heads over num_channels, rotary, module.attention."""
  return MultiHeadAttention(
      module.num_heads, module.num_channels, module.num_channels, module.num_channels,
      rotary_fraction=module.rotary_fraction, attention=module.attention, dtype=module.dtype,
      param_dtype=module.param_dtype, name=name)


def _causal_mask(q_positions, kv_positions, kv_valid):
  """[b, 1, t, s]: query i sees key j when kv_positions[j] <= q_positions[i] and kv_valid[j]."""
  causal = kv_positions[:, None, :] <= q_positions[:, :, None]
  return (causal & kv_valid[:, None, :])[:, None]


class _SelfAttentionLayer(nn.Module):
  """x += Attn(LN(x)) (causal over the latents); x += MLP(LN(x)); [b, L, d] -> [b, L, d]."""
  num_channels: int
  num_heads: int
  widening_factor: int
  activation: str
  rotary_fraction: float
  dropout_rate: float
  attention: AttentionConfig
  dtype: DType
  param_dtype: DType

  @nn.compact
  def __call__(self, x, positions, mask, deterministic: bool, cache=None):
    """With cache = (keys, values [b, M, heads, head_dim], start) (generation's latent cache),
    x's keys and values are written at slots start.. and x attends to the whole cache (mask
    [b, 1, t, M]); returns (x, (keys, values)) then."""
    norm = lambda name: (lambda y: layer_norm(self.param_dtype, name)(y).astype(self.dtype))
    y = norm("attention_norm")(x)
    attention = _attention(self, "attention")
    if cache is None:
      y = attention(y, y, mask, deterministic=deterministic, q_positions=positions,
                    kv_positions=positions)
    else:
      keys, values, start = cache
      k, v = attention.keys_values(y, positions)
      keys = jax.lax.dynamic_update_slice_in_dim(keys, k.astype(keys.dtype), start, axis=1)
      values = jax.lax.dynamic_update_slice_in_dim(values, v.astype(values.dtype), start, axis=1)
      y = attention.attend(y, keys, values, mask, deterministic=deterministic,
                           q_positions=positions)
    x = x + nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)
    y = MLP(self.widening_factor, self.dropout_rate, self.dtype, self.param_dtype,
            self.activation, name="mlp")(norm("mlp_norm")(x), deterministic)
    return x + y if cache is None else (x + y, (keys, values))


class PerceiverAR(nn.Module):
  """See the module docstring. Call: (ids [b, n], pad_mask [b, n] = None) -> [b, L, vocab]."""
  vocab_size: int = 262  # The bytes tokenizer's (data/tokenizer.py), checked by a test.
  max_context: int = 8192
  num_latents: int = 1024
  num_channels: int = 1024
  num_heads: int = 16
  num_layers: int = 12
  widening_factor: int = 4
  activation: str = "squared_relu"
  rotary_fraction: float = 0.5
  absolute_positions: bool = False
  dropout_rate: float = 0.0
  attention: AttentionConfig = AttentionConfig()
  remat: bool = False
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32

  def __post_init__(self):
    check_positive(self, "vocab_size", "max_context", "num_latents", "num_channels", "num_heads",
                   "num_layers", "widening_factor")
    check_rate(self, "dropout_rate")
    check_choice(self, "activation", tuple(ACTIVATIONS))
    if self.num_latents > self.max_context:
      raise ValueError(f"PerceiverAR.num_latents={self.num_latents} must be <= "
                       f"PerceiverAR.max_context={self.max_context}.")
    if self.num_channels % self.num_heads:
      raise ValueError(f"PerceiverAR.num_channels={self.num_channels} must be divisible by "
                       f"PerceiverAR.num_heads={self.num_heads}.")
    if not 0.0 <= self.rotary_fraction <= 1.0 or (
        self.rotary_fraction > 0 and
        rotary_dims(self.num_channels // self.num_heads, self.rotary_fraction) == 0):
      raise ValueError(f"PerceiverAR.rotary_fraction={self.rotary_fraction} must be in [0, 1] "
                       "and rotate at least one pair of each head's dims (0 turns rotary off).")
    super().__post_init__()

  def setup(self):
    init = nn.initializers.truncated_normal(0.02)
    self.embedding = nn.Embed(self.vocab_size, self.num_channels, embedding_init=init,
                              dtype=self.dtype, param_dtype=self.param_dtype)
    if self.absolute_positions:
      self.position_embeddings = self.param("position_embeddings", init,
                                            (self.max_context, self.num_channels),
                                            self.param_dtype)
    self.query_norm = layer_norm(self.param_dtype, "cross_attention_query_norm")
    self.kv_norm = layer_norm(self.param_dtype, "cross_attention_kv_norm")
    self.cross_attention = _attention(self, "cross_attention")
    self.cross_dropout = nn.Dropout(self.dropout_rate)
    self.cross_mlp_norm = layer_norm(self.param_dtype, "cross_attention_mlp_norm")
    self.cross_mlp = MLP(self.widening_factor, self.dropout_rate, self.dtype, self.param_dtype,
                         self.activation, name="cross_attention_mlp")
    layer = nn.remat(_SelfAttentionLayer, static_argnums=(4,)) if self.remat else (
        _SelfAttentionLayer)
    settings = dict(num_channels=self.num_channels, num_heads=self.num_heads,
                    widening_factor=self.widening_factor, activation=self.activation,
                    rotary_fraction=self.rotary_fraction, dropout_rate=self.dropout_rate,
                    attention=self.attention, dtype=self.dtype, param_dtype=self.param_dtype)
    self.layers = [layer(**settings, name=f"self_attention_{i}") for i in range(self.num_layers)]
    self.final_norm = layer_norm(self.param_dtype, "final_norm")
    self.logits = nn.Dense(self.vocab_size, kernel_init=nn.initializers.zeros, dtype=self.dtype,
                           param_dtype=self.param_dtype)

  def embed(self, ids, positions):
    """ids [b, n] at positions [b, n] -> x [b, n, d]."""
    x = self.embedding(ids)
    if self.absolute_positions:
      x = x + jnp.take(self.position_embeddings, positions, axis=0).astype(self.dtype)
    return x

  def cross_keys_values(self, x, positions):
    """The cross-attention keys and values of inputs x [b, s, d] at positions [b, s]."""
    return self.cross_attention.keys_values(self.kv_norm(x).astype(self.dtype), positions)

  def latents_forward(self, x_latents, latent_positions, latent_valid, k, v, kv_positions,
                      kv_valid, deterministic: bool = True):
    """Latents [b, L, d] cross-attend to k, v of the inputs at kv_positions [b, s] (each only
    to positions <= its own and kv_valid), then the self-attention stack -> logits [b, L, V]."""
    x = self.cross_attend(x_latents, latent_positions, k, v, kv_positions, kv_valid,
                          deterministic)
    mask = _causal_mask(latent_positions, latent_positions, latent_valid)
    for layer in self.layers:
      x = layer(x, latent_positions, mask, deterministic)
    return self.head(x)

  def cross_attend(self, x_latents, latent_positions, k, v, kv_positions, kv_valid,
                   deterministic: bool = True):
    """The cross-attention block (latents_forward's first part): [b, t, d] -> [b, t, d]."""
    mask = _causal_mask(latent_positions, kv_positions, kv_valid)
    y = self.query_norm(x_latents).astype(self.dtype)
    y = self.cross_attention.attend(y, k, v, mask, deterministic=deterministic,
                                    q_positions=latent_positions)
    x = x_latents + self.cross_dropout(y, deterministic=deterministic)
    return x + self.cross_mlp(self.cross_mlp_norm(x).astype(self.dtype), deterministic)

  def head(self, x):
    """Final norm and logits: latents [b, t, d] -> [b, t, vocab_size]."""
    return self.logits(self.final_norm(x).astype(self.dtype))

  def latents_extend(self, x_latents, latent_positions, k, v, kv_positions, kv_valid, cache,
                     cache_positions, cache_valid, start):
    """Generation's latent cache (generation.py, cache='latents'): new latents x_latents
    [b, t, d] cross-attend as in latents_forward; in each self-attention layer their keys and
    values join that layer's cache (keys, values) [b, M, heads, head_dim] at slots start..
    start+t-1 and they attend to every cached latent at a position <= theirs (cache_positions,
    cache_valid [b, M], already holding theirs). -> (logits [b, t, V], the updated caches)."""
    x = self.cross_attend(x_latents, latent_positions, k, v, kv_positions, kv_valid)
    mask = _causal_mask(latent_positions, cache_positions, cache_valid)
    caches = []
    for layer, (keys, values) in zip(self.layers, cache):
      x, layer_cache = layer(x, latent_positions, mask, True, (keys, values, start))
      caches.append(layer_cache)
    return self.head(x), caches

  def __call__(self, ids, pad_mask=None, deterministic: bool = True):
    if ids.ndim != 2:
      raise ValueError(f"PerceiverAR expects ids [batch, length], got shape {ids.shape}.")
    check_batch("PerceiverAR", ids)
    batch, length = ids.shape
    if length > self.max_context:
      raise ValueError(f"PerceiverAR got {length} tokens but PerceiverAR.max_context="
                       f"{self.max_context}; keep the last max_context tokens.")
    if pad_mask is None:
      pad_mask = jnp.ones((batch, length), bool)
    elif pad_mask.shape != ids.shape:
      raise ValueError(f"pad_mask must have the ids' shape {ids.shape}, got {pad_mask.shape}.")
    positions = jnp.broadcast_to(jnp.arange(length), (batch, length))
    x = self.embed(ids, positions)
    k, v = self.cross_keys_values(x, positions)
    latents = min(self.num_latents, length)
    return self.latents_forward(x[:, -latents:], positions[:, -latents:],
                                pad_mask[:, -latents:], k, v, positions, pad_mask, deterministic)

  @nn.nowrap
  def stats(self, input_shape) -> Stats:
    """Parameters and forward FLOPs for ids of `input_shape` = (length,) -> [L, vocab_size]."""
    (length,) = input_shape
    d, w, vocab = self.num_channels, self.widening_factor, self.vocab_size
    latents = min(self.num_latents, length)
    projection, mlp = d * d + d, 2 * w * d * d + w * d + d
    params = vocab * d + (self.max_context * d if self.absolute_positions else 0)
    params += 3 * 2 * d + 4 * projection + mlp  # Cross-attention: 3 norms, q/k/v/out, MLP.
    params += self.num_layers * (2 * 2 * d + 4 * projection + mlp)
    params += 2 * d + d * vocab + vocab  # Final norm and logits.
    cross = 2 * length * 2 * d * d + 2 * latents * 2 * d * d + 4 * latents * length * d
    layer = 8 * latents * d * d + 4 * latents * latents * d + 4 * latents * w * d * d
    flops = (cross + 4 * latents * w * d * d + self.num_layers * layer
             + 2 * latents * d * vocab)
    return Stats(params, flops, (latents, vocab))
