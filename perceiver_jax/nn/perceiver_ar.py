"""Perceiver AR (Hawthorne et al., ICML 2022): the autoregressive Perceiver.

ids [batch, n] (n <= max_context) -> token embeddings x [b, n, d] (+ learned absolute
positions when `absolute_positions`) -> the last L = min(num_latents, n) positions are the
latents: each latent's query LN(x_i) cross-attends to LN(x_j) at every position j <= i
(causal; padding excluded), the latent keeps x_i as residual, += MLP -> num_layers pre-LN
causal self-attention layers over the latents -> final LN -> zero-initialised Dense ->
logits [b, L, vocab_size] at positions n-L .. n-1 (each predicts the next token).
Queries and keys get rotary embeddings (interleaved pairs) on `rotary_fraction` of each head's
dims, by position; MLPs use `activation` (squared ReLU by default).

Positions: rows are left-padded (pad_mask True = token), and each row's first token is
position 0, the pads before it clamped to 0 (`token_positions`, which also keeps a right-padded
row's tokens at 0, 1, ...); the absolute embeddings and rotary both use these, so a padded row
computes what the unpadded row does.

Options (defaults keep the model above):
- `cross_attention_dropout`: in training, each row keeps a random
  prefix_len - int(prefix_len * rate) of its n - L prefix positions (Perceiver AR's prefix
  dropout); they are gathered, so the cross-attention's keys really shrink, and keep their
  positions and padding. With `attention.sow_weights` their indices [b, kept] are sown as
  'intermediates' / 'cross_attention_kept_prefix' (the key axis of the sown weights is then
  kept prefix + latents).
- `num_self_attention_rotary_layers`: -1 = rotary in every self-attention layer, N = only in
  the first N (the cross-attention keeps rotary whenever rotary_fraction > 0).
- `tied_embeddings`: logits = x @ embedding^T (+ a 'logits_bias' when `output_bias`), no
  logits Dense; `output_bias` is the logits' bias either way; `final_norm` = False drops the
  final LN.
- `latent_kv_query_norm`: the latents' own cross-attention keys and values come from their
  query-normed inputs (the cross-attention query norm) instead of the kv norm, as in
  krasserm's Perceiver AR, whose prefix keys are kv-normed and latent keys query-normed.
- `qkv_bias`, `cross_attention_out_bias`, `self_attention_out_bias`, `mlp_bias`: the biases of
  the q/k/v projections (all attentions), of each kind's output projection and of the MLPs.

`model_stats.param_count(model, (n,))` / `flops` count it analytically (`PerceiverAR.stats`).
The pieces are methods, so cached generation (generation.py) runs the same code:
  embed(ids, positions) -> x;  cross_keys_values(x, positions) -> (k, v)
  latents_forward(x_latents, latent_positions, latent_valid, k, v, kv_positions, kv_valid)
    = head(self-attention layers(cross_attend(...)));  latents_extend(..., cache, ...) runs
    new latents against per-layer self-attention key/value caches (generation's cache='latents').
latents_forward ignores keys at positions >= its first valid latent's with
`latent_kv_query_norm` (it appends the latents' own), so a cache of every position's kv-normed
keys stays exact. Every attention is a MultiHeadAttention (its `keys_values` and `attend` steps
for the cross-attention's cache) with `attention` (an AttentionConfig) as its settings.
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


def token_positions(pad_mask):
  """Positions [b, n] for pad_mask [b, n] (True = token): each token's position is the number
  of tokens before it in its row, a pad's that of the token before it (0 at the start). For
  left-padded rows that is krasserm's `positions(b, n, shift)` (first token 0, pads clamped to
  0); right-padded rows (a dataset's last, padded row) keep 0, 1, ... for their tokens."""
  return jnp.maximum(jnp.cumsum(pad_mask, axis=1, dtype=jnp.int32) - 1, 0)


def kept_prefix_indices(rng, batch: int, prefix_len: int, rate: float):
  """Indices [batch, prefix_len - int(prefix_len * rate)] (ascending) of the prefix positions
  each row keeps under prefix dropout at `rate`, drawn uniformly without replacement."""
  keep = prefix_len - int(prefix_len * rate)
  scores = jax.random.uniform(rng, (batch, prefix_len))
  return jnp.sort(jax.lax.top_k(scores, keep)[1], axis=-1)


def _causal_mask(q_positions, kv_positions, kv_valid):
  """[b, 1, t, s]: query i sees key j when kv_positions[j] <= q_positions[i] and kv_valid[j]."""
  causal = kv_positions[:, None, :] <= q_positions[:, :, None]
  return (causal & kv_valid[:, None, :])[:, None]


def _attention(module, name: str, rotary_fraction: float, out_bias: bool) -> MultiHeadAttention:
  """A Perceiver AR attention: num_heads over num_channels, module.attention, its biases."""
  return MultiHeadAttention(
      module.num_heads, module.num_channels, module.num_channels, module.num_channels,
      rotary_fraction=rotary_fraction, attention=module.attention, qkv_bias=module.qkv_bias,
      out_bias=out_bias, dtype=module.dtype, param_dtype=module.param_dtype, name=name)


class _SelfAttentionLayer(nn.Module):
  """x += Attn(LN(x)) (causal over the latents); x += MLP(LN(x)); [b, L, d] -> [b, L, d]."""
  num_channels: int
  num_heads: int
  widening_factor: int
  activation: str
  rotary_fraction: float
  dropout_rate: float
  attention: AttentionConfig
  qkv_bias: bool
  out_bias: bool
  mlp_bias: bool
  dtype: DType
  param_dtype: DType

  @nn.compact
  def __call__(self, x, positions, mask, deterministic: bool, cache=None):
    """With cache = (keys, values [b, M, heads, head_dim], start) (generation's latent cache),
    x's keys and values are written at slots start.. and x attends to the whole cache (mask
    [b, 1, t, M]); returns (x, (keys, values)) then."""
    norm = lambda name: (lambda y: layer_norm(self.param_dtype, name)(y).astype(self.dtype))
    y = norm("attention_norm")(x)
    attention = _attention(self, "attention", self.rotary_fraction, self.out_bias)
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
            self.activation, self.mlp_bias, name="mlp")(norm("mlp_norm")(x), deterministic)
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
  num_self_attention_rotary_layers: int = -1
  absolute_positions: bool = False
  dropout_rate: float = 0.0
  cross_attention_dropout: float = 0.0
  attention: AttentionConfig = AttentionConfig()
  tied_embeddings: bool = False
  output_bias: bool = True
  final_norm: bool = True
  latent_kv_query_norm: bool = False
  qkv_bias: bool = True
  cross_attention_out_bias: bool = True
  self_attention_out_bias: bool = True
  mlp_bias: bool = True
  remat: bool = False
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32

  def __post_init__(self):
    check_positive(self, "vocab_size", "max_context", "num_latents", "num_channels", "num_heads",
                   "num_layers", "widening_factor")
    check_rate(self, "dropout_rate", "cross_attention_dropout")
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
    rotary_layers = self.num_self_attention_rotary_layers
    if not -1 <= rotary_layers <= self.num_layers or (
        self.rotary_fraction == 0 and rotary_layers != -1):
      raise ValueError(
          f"PerceiverAR.num_self_attention_rotary_layers={rotary_layers} must be -1 (every "
          f"layer) or 0 .. num_layers={self.num_layers}, and stay -1 when rotary_fraction=0.")
    super().__post_init__()

  @nn.nowrap
  def self_attention_rotary_fraction(self, layer: int) -> float:
    """The rotary fraction of self-attention layer `layer` (0 past the rotary layers)."""
    rotary_layers = self.num_self_attention_rotary_layers
    return self.rotary_fraction if rotary_layers == -1 or layer < rotary_layers else 0.0

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
    self.cross_attention = _attention(self, "cross_attention", self.rotary_fraction,
                                      self.cross_attention_out_bias)
    self.cross_dropout = nn.Dropout(self.dropout_rate)
    self.cross_mlp_norm = layer_norm(self.param_dtype, "cross_attention_mlp_norm")
    self.cross_mlp = MLP(self.widening_factor, self.dropout_rate, self.dtype, self.param_dtype,
                         self.activation, self.mlp_bias, name="cross_attention_mlp")
    layer = nn.remat(_SelfAttentionLayer, static_argnums=(4,)) if self.remat else (
        _SelfAttentionLayer)
    settings = dict(num_channels=self.num_channels, num_heads=self.num_heads,
                    widening_factor=self.widening_factor, activation=self.activation,
                    dropout_rate=self.dropout_rate, attention=self.attention,
                    qkv_bias=self.qkv_bias, out_bias=self.self_attention_out_bias,
                    mlp_bias=self.mlp_bias, dtype=self.dtype, param_dtype=self.param_dtype)
    self.layers = [layer(**settings, rotary_fraction=self.self_attention_rotary_fraction(i),
                         name=f"self_attention_{i}") for i in range(self.num_layers)]
    if self.final_norm:
      self.output_norm = layer_norm(self.param_dtype, "final_norm")
    if self.tied_embeddings:
      if self.output_bias:
        self.logits_bias = self.param("logits_bias", nn.initializers.zeros, (self.vocab_size,),
                                      self.param_dtype)
    else:
      self.logits = nn.Dense(self.vocab_size, use_bias=self.output_bias,
                             kernel_init=nn.initializers.zeros, dtype=self.dtype,
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
    x = self.cross_attend(x_latents, latent_positions, latent_valid, k, v, kv_positions,
                          kv_valid, deterministic)
    mask = _causal_mask(latent_positions, latent_positions, latent_valid)
    for layer in self.layers:
      x = layer(x, latent_positions, mask, deterministic)
    return self.head(x)

  def cross_attend(self, x_latents, latent_positions, latent_valid, k, v, kv_positions,
                   kv_valid, deterministic: bool = True):
    """The cross-attention block (latents_forward's first part): [b, t, d] -> [b, t, d]."""
    y = self.query_norm(x_latents).astype(self.dtype)
    if self.latent_kv_query_norm:  # Keys from the latents' own query-normed inputs.
      first = jnp.min(jnp.where(latent_valid, latent_positions, jnp.iinfo(jnp.int32).max),
                      axis=1, keepdims=True)
      k_latents, v_latents = self.cross_attention.keys_values(y, latent_positions)
      k, v = (jnp.concatenate(pair, axis=1) for pair in ((k, k_latents), (v, v_latents)))
      kv_valid = jnp.concatenate([kv_valid & (kv_positions < first), latent_valid], axis=1)
      kv_positions = jnp.concatenate([kv_positions, latent_positions], axis=1)
    mask = _causal_mask(latent_positions, kv_positions, kv_valid)
    y = self.cross_attention.attend(y, k, v, mask, deterministic=deterministic,
                                    q_positions=latent_positions)
    x = x_latents + self.cross_dropout(y, deterministic=deterministic)
    return x + self.cross_mlp(self.cross_mlp_norm(x).astype(self.dtype), deterministic)

  def head(self, x):
    """The optional final norm and the logits: latents [b, t, d] -> [b, t, vocab_size]."""
    if self.final_norm:
      x = self.output_norm(x).astype(self.dtype)
    if not self.tied_embeddings:
      return self.logits(x)
    logits = self.embedding.attend(x)
    return logits + self.logits_bias.astype(self.dtype) if self.output_bias else logits

  def latents_extend(self, x_latents, latent_positions, k, v, kv_positions, kv_valid, cache,
                     cache_positions, cache_valid, start):
    """Generation's latent cache (generation.py, cache='latents'): new latents x_latents
    [b, t, d] cross-attend as in latents_forward; in each self-attention layer their keys and
    values join that layer's cache (keys, values) [b, M, heads, head_dim] at slots start..
    start+t-1 and they attend to every cached latent at a position <= theirs (cache_positions,
    cache_valid [b, M], already holding theirs). -> (logits [b, t, V], the updated caches).
    Not for `latent_kv_query_norm` (earlier latents' keys would need their query norm)."""
    if self.latent_kv_query_norm:
      raise ValueError("PerceiverAR.latents_extend (generate's cache='latents') does not "
                       "support latent_kv_query_norm=True; use cache='sliding'.")
    valid = jnp.ones(latent_positions.shape, bool)
    x = self.cross_attend(x_latents, latent_positions, valid, k, v, kv_positions, kv_valid)
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
    positions = token_positions(pad_mask)
    x = self.embed(ids, positions)
    prefix = length - min(self.num_latents, length)
    latents = (x[:, prefix:], positions[:, prefix:], pad_mask[:, prefix:])
    inputs = (x, positions, pad_mask)  # The cross-attention's keys and values come from these.
    if not deterministic and self.cross_attention_dropout > 0 and prefix > 0:
      kept = kept_prefix_indices(self.make_rng("dropout"), batch, prefix,
                                 self.cross_attention_dropout)
      if self.attention.sow_weights:
        self.sow("intermediates", "cross_attention_kept_prefix", kept)
      gather = lambda a: jnp.take_along_axis(a, kept.reshape(kept.shape + (1,) * (a.ndim - 2)),
                                             axis=1)
      inputs = tuple(jnp.concatenate([gather(a[:, :prefix]), a_latents], axis=1)
                     for a, a_latents in zip(inputs, latents))
    if self.latent_kv_query_norm:  # latents_forward adds the latents' keys and values.
      inputs = tuple(a[:, :a.shape[1] - latents[0].shape[1]] for a in inputs)
    k, v = self.cross_keys_values(inputs[0], inputs[1])
    return self.latents_forward(*latents, k, v, inputs[1], inputs[2], deterministic)

  @nn.nowrap
  def stats(self, input_shape) -> Stats:
    """Parameters and forward FLOPs for ids of `input_shape` = (length,) -> [L, vocab_size]."""
    (length,) = input_shape
    d, w, vocab = self.num_channels, self.widening_factor, self.vocab_size
    latents = min(self.num_latents, length)
    qkv = 3 * (d * d + (d if self.qkv_bias else 0))
    attention = lambda out_bias: qkv + d * d + (d if out_bias else 0)
    mlp = 2 * w * d * d + ((w * d + d) if self.mlp_bias else 0)
    params = vocab * d + (self.max_context * d if self.absolute_positions else 0)
    params += 3 * 2 * d + attention(self.cross_attention_out_bias) + mlp  # 3 norms, attn, MLP.
    params += self.num_layers * (2 * 2 * d + attention(self.self_attention_out_bias) + mlp)
    params += (2 * d if self.final_norm else 0) + (0 if self.tied_embeddings else d * vocab)
    params += vocab if self.output_bias else 0
    cross = 2 * length * 2 * d * d + 2 * latents * 2 * d * d + 4 * latents * length * d
    layer = 8 * latents * d * d + 4 * latents * latents * d + 4 * latents * w * d * d
    flops = (cross + 4 * latents * w * d * d + self.num_layers * layer
             + 2 * latents * d * vocab)
    return Stats(params, flops, (latents, vocab))
