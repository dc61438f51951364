"""PerceiverEncoder: weight sharing, layer order, validation, masking, init, dtypes, training."""

import math

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from perceiver_jax.nn.attention import AttentionConfig
from perceiver_jax import (CrossAttentionLayer, PerceiverEncoder, ProjectionDecoder,
                           SelfAttentionBlock)
from random_params import param_shapes as _shapes, random_data as _data, random_params as _params

B, M, C = 2, 6, 5  # batch, input positions, input channels.
N, D = 4, 8  # latents, latent channels.
BASE = dict(num_latents=N, num_latent_channels=D, num_self_attention_heads=2,
            num_self_attention_blocks=1, num_self_attention_layers_per_block=1)


def _encoder(**overrides):
  return PerceiverEncoder(**dict(BASE, **overrides))


def _count(tree):
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))


# Analytic parameter counts of the building blocks.
def _ln(c):
  return 2 * c


def _mha(q_in, kv_in, qk, v, out):
  return (q_in + 1) * qk + (kv_in + 1) * qk + (kv_in + 1) * v + (v + 1) * out


def _mlp(c, w):
  return (c + 1) * w * c + (w * c + 1) * c


def _cross_layer(c, d, qk, v, w):
  return 2 * _ln(d) + _ln(c) + _mha(d, c, qk, v, d) + _mlp(d, w)


def _self_layer(d, qk, v, w):
  return 2 * _ln(d) + _mha(d, d, qk, v, d) + _mlp(d, w)


SCHEDULES = [(1, 1), (1, 3), (2, 2), (3, 4)]  # (P, L).


@pytest.mark.parametrize("p,l", SCHEDULES)
@pytest.mark.parametrize("cross_shared", [False, True])
@pytest.mark.parametrize("block_shared", [False, True])
def test_param_count_counts_each_shared_set_once(p, l, cross_shared, block_shared):
  layers = 2
  enc = _encoder(num_cross_attention_layers=p, num_self_attention_blocks=l,
                 first_cross_attention_layer_shared=cross_shared,
                 first_self_attention_block_shared=block_shared,
                 num_self_attention_layers_per_block=layers)
  shapes = _shapes(enc, jnp.zeros((B, M, C)))
  num_cross = 1 if (p == 1 or cross_shared) else 2
  num_blocks = 1 if (l == 1 or block_shared) else 2
  expected = (N * D + num_cross * _cross_layer(C, D, C, C, 1)
              + num_blocks * layers * _self_layer(D, D, D, 1))
  assert _count(shapes) == expected
  assert sum(k.startswith("cross_attention") for k in shapes) == num_cross
  assert sum(k.startswith("self_attention_block") for k in shapes) == num_blocks


def test_param_count_with_custom_widths():
  enc = _encoder(num_cross_attention_layers=2, num_self_attention_blocks=3,
                 num_cross_attention_heads=2, cross_attention_qk_channels=6,
                 cross_attention_v_channels=4, self_attention_qk_channels=4,
                 self_attention_v_channels=6, cross_attention_widening_factor=3,
                 self_attention_widening_factor=2, num_self_attention_layers_per_block=2,
                 first_self_attention_block_shared=False)
  expected = N * D + 2 * _cross_layer(C, D, 6, 4, 3) + 2 * 2 * _self_layer(D, 4, 6, 2)
  assert _count(_shapes(enc, jnp.zeros((B, M, C)))) == expected


@pytest.mark.parametrize("first_shared", [False, True])
def test_more_blocks_reuse_weights_but_change_the_output(first_shared):
  x = _data(0, B, M, C)
  encoders = [_encoder(num_self_attention_blocks=l, first_self_attention_block_shared=first_shared)
              for l in (2, 3, 5)]
  chex.assert_trees_all_equal_shapes(*[_shapes(e, x) for e in encoders])
  params = {"params": _params(encoders[0], x)}
  outputs = [np.asarray(e.apply(params, x)) for e in encoders]
  assert all(np.all(np.isfinite(o)) for o in outputs)
  assert not np.allclose(outputs[0], outputs[1], atol=1e-4)
  assert not np.allclose(outputs[1], outputs[2], atol=1e-4)


def _reference(enc, variables, x, mask=None):
  """The documented schedule, applied by hand: cross-attention i, then block i."""
  params = variables["params"]
  cross = CrossAttentionLayer(num_heads=enc.num_cross_attention_heads,
                              use_query_residual=enc.use_query_residual)
  block = SelfAttentionBlock(num_layers=enc.num_self_attention_layers_per_block,
                             num_heads=enc.num_self_attention_heads)
  first_cross = ("cross_attention_shared" if enc.first_cross_attention_layer_shared
                 else "cross_attention_first")
  first_block = ("self_attention_block_shared" if enc.first_self_attention_block_shared
                 else "self_attention_block_first")
  z = jnp.broadcast_to(params["latents"], (x.shape[0],) + params["latents"].shape)
  for i in range(enc.num_self_attention_blocks):
    if i < enc.num_cross_attention_layers:
      name = first_cross if i == 0 else "cross_attention_shared"
      z = cross.apply({"params": params[name]}, z, x, mask)
    z = block.apply({"params": params[first_block if i == 0 else "self_attention_block_shared"]}, z)
  return z


@pytest.mark.parametrize("settings", [
    dict(num_cross_attention_layers=1, num_self_attention_blocks=1),
    dict(num_cross_attention_layers=2, num_self_attention_blocks=2,
         first_self_attention_block_shared=False),
    dict(num_cross_attention_layers=2, num_self_attention_blocks=4,
         first_self_attention_block_shared=False, num_self_attention_layers_per_block=2),
    dict(num_cross_attention_layers=3, num_self_attention_blocks=3,
         first_cross_attention_layer_shared=True, use_query_residual=False),
    dict(num_cross_attention_layers=1, num_self_attention_blocks=3, num_cross_attention_heads=5),
])
def test_encoder_applies_layers_in_documented_order(settings):
  x = _data(0, B, M, C)
  mask = jnp.asarray(np.arange(M)[None] < np.array([[M], [4]]))
  enc = _encoder(**settings)
  variables = {"params": _params(enc, x)}
  out = enc.apply(variables, x, mask)
  assert out.shape == (B, N, D)
  np.testing.assert_allclose(out, _reference(enc, variables, x, mask), rtol=1e-5, atol=1e-5)


def test_reference_order_is_not_interchangeable():
  """Control for the order test: block-before-cross gives another result."""
  x = _data(0, B, M, C)
  enc = _encoder(num_cross_attention_layers=2, num_self_attention_blocks=2,
                 first_self_attention_block_shared=False)
  params = _params(enc, x)
  cross, block = CrossAttentionLayer(), SelfAttentionBlock(num_layers=1, num_heads=2)
  z = jnp.broadcast_to(params["latents"], (B, N, D))
  for i, (c, b) in enumerate([("cross_attention_first", "self_attention_block_first"),
                              ("cross_attention_shared", "self_attention_block_shared")]):
    z = block.apply({"params": params[b]}, z)
    z = cross.apply({"params": params[c]}, z, x)
  assert not np.allclose(enc.apply({"params": params}, x), z, atol=1e-4)


@pytest.mark.parametrize("group", ["latents", "cross_attention_first", "cross_attention_shared",
                                   "self_attention_block_first", "self_attention_block_shared"])
def test_every_parameter_group_is_used(group):
  x = _data(0, B, M, C)
  enc = _encoder(num_cross_attention_layers=2, num_self_attention_blocks=2,
                 first_self_attention_block_shared=False)
  params = _params(enc, x)
  out = enc.apply({"params": params}, x)
  perturbed = dict(params)
  perturbed[group] = jax.tree_util.tree_map(lambda a: a + 0.5, params[group])
  assert not np.allclose(out, enc.apply({"params": perturbed}, x), atol=1e-4)


def test_more_cross_attention_layers_reuse_the_shared_layer():
  """P=3 with the first layer unshared has the same params as P=2, applied once more."""
  x = _data(0, B, M, C)
  two = _encoder(num_cross_attention_layers=2, num_self_attention_blocks=3)
  three = _encoder(num_cross_attention_layers=3, num_self_attention_blocks=3)
  chex.assert_trees_all_equal_shapes(_shapes(two, x), _shapes(three, x))
  params = {"params": _params(two, x)}
  assert not np.allclose(two.apply(params, x), three.apply(params, x), atol=1e-4)


def test_more_cross_attention_layers_than_blocks_is_rejected():
  with pytest.raises(ValueError, match="num_cross_attention_layers"):
    _encoder(num_cross_attention_layers=3, num_self_attention_blocks=2)


@pytest.mark.parametrize("bad,match", [
    (dict(num_latents=0), "num_latents"),
    (dict(num_latent_channels=0), "num_latent_channels"),
    (dict(num_self_attention_blocks=0), "num_self_attention_blocks"),
    (dict(num_self_attention_layers_per_block=0), "num_self_attention_layers_per_block"),
    (dict(num_self_attention_heads=0), "num_self_attention_heads"),
    (dict(num_cross_attention_heads=0), "num_cross_attention_heads"),
    (dict(self_attention_widening_factor=0), "self_attention_widening_factor"),
    (dict(num_latent_channels=10, num_self_attention_heads=4), "num_self_attention_heads"),
    (dict(self_attention_qk_channels=6, num_self_attention_heads=4), "self_attention_qk_channels"),
    (dict(self_attention_v_channels=6, num_self_attention_heads=4), "self_attention_v_channels"),
    (dict(cross_attention_qk_channels=5, num_cross_attention_heads=2),
     "cross_attention_qk_channels"),
    (dict(cross_attention_v_channels=5, num_cross_attention_heads=2), "cross_attention_v_channels"),
    (dict(dropout_rate=1.0), "dropout_rate"),
])
def test_bad_fields_raise_at_construction(bad, match):
  with pytest.raises(ValueError, match=match):
    _encoder(**bad)


def test_cudnn_with_bfloat16_constructs_and_reaches_the_self_attention():
  """cudnn in bf16 passes the construction checks and is what the self-attention calls: on a
  GPU the encoder has the xla encoder's parameters; elsewhere its first call stops in the cuDNN
  kernel's device check (the cross-attention is xla, so the error is the self-attention's)."""
  enc = _encoder(attention=AttentionConfig("cudnn"), cross_attention=AttentionConfig("xla"),
                 dtype=jnp.bfloat16)
  x = jnp.zeros((B, M, C))
  if jax.default_backend() == "gpu":
    chex.assert_trees_all_equal_shapes_and_dtypes(_shapes(enc, x), _shapes(_encoder(), x))
  else:
    with pytest.raises(ValueError, match="implementation='cudnn' needs an NVIDIA GPU"):
      _shapes(enc, x)


@pytest.mark.parametrize("field", ["attention", "cross_attention"])
def test_cudnn_in_float32_raises_at_init(field):
  """cuDNN computes in 16 bits only: either attention setting asking for it in a float32
  encoder is a ValueError naming the backend and the fix when the model is built."""
  encoder = _encoder(**{field: AttentionConfig("cudnn")})
  with pytest.raises(ValueError, match="implementation='cudnn'.*needs dtype bfloat16 or "
                                       "float16, got float32; set dtype=jnp.bfloat16"):
    _shapes(encoder, _data(0, B, M, C))


@pytest.mark.parametrize("shape", [(B, M), (B, 2, 3, C)])
def test_inputs_must_be_three_dimensional(shape):
  with pytest.raises(ValueError, match=r"\[batch, index, channels\]"):
    _shapes(_encoder(), jnp.zeros(shape))


def test_default_cross_attention_width_must_divide_by_heads():
  with pytest.raises(ValueError, match="cross_attention_qk_channels.*num_cross_attention_heads"):
    _shapes(_encoder(num_cross_attention_heads=2), jnp.zeros((B, M, C)))  # C = 5.
  _shapes(_encoder(num_cross_attention_heads=2, cross_attention_qk_channels=4),
          jnp.zeros((B, M, C)))


def test_padded_inputs_do_not_influence_the_output():
  x = _data(0, B, M, C)
  mask = np.ones((B, M), bool)
  mask[0, 3:] = False
  mask[1, :1] = False
  enc = _encoder(num_cross_attention_layers=2, num_self_attention_blocks=2)
  params = {"params": _params(enc, x)}
  changed = jnp.where(jnp.asarray(mask)[..., None], x, 100.0 * _data(1, B, M, C))
  out = enc.apply(params, x, jnp.asarray(mask))
  np.testing.assert_allclose(out, enc.apply(params, changed, jnp.asarray(mask)),
                             rtol=1e-6, atol=1e-6)
  assert not np.allclose(enc.apply(params, x), enc.apply(params, changed), atol=1e-3)
  # Masking matters: it differs from the unmasked output.
  assert not np.allclose(out, enc.apply(params, x), atol=1e-3)


def test_fully_padded_example_is_finite_and_independent_of_its_inputs():
  x = _data(0, B, M, C)
  mask = jnp.asarray(np.array([[True] * M, [False] * M]))
  enc = _encoder(num_cross_attention_layers=2, num_self_attention_blocks=2)
  params = {"params": _params(enc, x)}
  out = enc.apply(params, x, mask)
  assert np.all(np.isfinite(out))
  other = enc.apply(params, x.at[1].set(_data(2, M, C)), mask)
  np.testing.assert_allclose(out[1], other[1], rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(out[0], other[0], rtol=1e-6, atol=1e-6)


def test_latents_are_truncated_normal():
  scale = 0.5
  enc = PerceiverEncoder(num_latents=256, num_latent_channels=64, num_self_attention_blocks=1,
                         num_self_attention_layers_per_block=1, num_self_attention_heads=1,
                         latent_init_scale=scale)
  # An 'rbg' key compiles far faster on CPU than threefry; the initialiser is the same.
  params = jax.jit(enc.init)(jax.random.key(0, impl="rbg"), jnp.zeros((1, 2, 4)))["params"]
  latents = np.asarray(params["latents"], np.float64)
  assert latents.shape == (256, 64) and params["latents"].dtype == jnp.float32
  # A standard normal truncated to [-2, 2], times `scale` (Haiku's TruncatedNormal convention).
  phi2 = math.exp(-2.0) / math.sqrt(2 * math.pi)
  truncated_std = math.sqrt(1 - 4 * phi2 / math.erf(2 / math.sqrt(2)))
  assert abs(latents.std() / (scale * truncated_std) - 1) < 0.05
  assert abs(latents.mean()) < 0.05 * scale
  assert np.abs(latents).max() <= 2 * scale * (1 + 1e-6)
  assert np.abs(latents).max() > 1.8 * scale  # Tails up to the truncation point are drawn.


class _Classifier(nn.Module):
  """The encoder with the original Perceiver's head (mean over latents -> linear)."""
  encoder: PerceiverEncoder
  num_classes: int

  @nn.compact
  def __call__(self, x):
    return ProjectionDecoder(self.num_classes, dtype=self.encoder.dtype)(self.encoder(x))


def test_bfloat16_compute_with_float32_params_trains():
  x = _data(0, 8, M, C)
  labels = jnp.asarray(np.arange(8) % 4)
  enc = _encoder(dtype=jnp.bfloat16)
  model = _Classifier(enc, 4)
  assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(_shapes(model, x)))
  params = _params(model, x)
  assert jax.eval_shape(enc.apply, {"params": params["encoder"]}, x).dtype == jnp.bfloat16
  assert jax.eval_shape(model.apply, {"params": params}, x).dtype == jnp.bfloat16
  optimizer = optax.adam(1e-2)

  def loss_fn(params):
    logits = model.apply({"params": params}, x).astype(jnp.float32)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  @jax.jit
  def step(params, state):
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, state = optimizer.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss

  state = optimizer.init(params)
  losses = []
  for _ in range(40):
    params, state, loss = step(params, state)
    losses.append(float(loss))
  assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(params))
  assert losses[-1] < 0.2 * losses[0], losses


def test_remat_gives_identical_outputs_and_gradients():
  x = _data(0, B, M, C)
  mask = jnp.asarray(np.arange(M)[None] < np.array([[M], [4]]))
  plain, remat = _encoder(), _encoder(remat=True)  # One cross-attention layer and one block.
  params = {"params": _params(plain, x)}

  def loss(module, params, x):
    out = module.apply(params, x, mask)
    return jnp.sum(out * jnp.sin(out)), out

  grad = jax.jit(jax.value_and_grad(loss, argnums=(1, 2), has_aux=True), static_argnums=0)
  (l1, out1), g1 = grad(plain, params, x)
  (l2, out2), g2 = grad(remat, params, x)
  np.testing.assert_allclose(out1, out2, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(l1, l2, rtol=1e-5)
  chex.assert_trees_all_close(g1, g2, rtol=1e-4, atol=1e-5)
  # Every gradient is non-zero but the one-head cross-attention's key bias: a softmax ignores
  # it, and its folded projections (multi_head_attention.py) make that gradient exactly zero.
  flat = jax.tree_util.tree_flatten_with_path(g1[0])[0]
  zero = [jax.tree_util.keystr(path) for path, g in flat if not np.abs(np.asarray(g)).max() > 0]
  assert zero == ["['params']['cross_attention_first']['attention']['key']['bias']"]


def test_remat_with_active_dropout_matches():
  """deterministic=False must reach the rematerialised layers as a static flag."""
  x = _data(0, B, M, C)
  settings = dict(num_cross_attention_layers=2, num_self_attention_blocks=2, dropout_rate=0.2,
                  attention=AttentionConfig(dropout_rate=0.2))
  plain, remat = _encoder(**settings), _encoder(remat=True, **settings)
  params = {"params": _params(plain, x)}
  rngs = {"dropout": jax.random.key(1, impl="rbg")}  # rbg: cheap to compile on CPU.

  @jax.jit
  def outputs(params):
    return (plain.apply(params, x, None, False, rngs=rngs),
            remat.apply(params, x, None, False, rngs=rngs), plain.apply(params, x))

  dropped, dropped_remat, deterministic = outputs(params)
  assert not np.allclose(dropped, deterministic, atol=1e-3)
  np.testing.assert_allclose(dropped_remat, dropped, rtol=1e-5, atol=1e-5)


def test_chunked_attention_matches_xla():
  x = _data(0, B, 11, C)  # 11 inputs: not a multiple of the chunk size.
  mask = jnp.asarray(np.arange(11)[None] < np.array([[11], [7]]))
  settings = dict(num_cross_attention_layers=2, num_self_attention_blocks=2)
  xla = _encoder(**settings)
  chunked = _encoder(attention=AttentionConfig("chunked", chunk_size=4), **settings)
  params = {"params": _params(xla, x)}
  out, expected = jax.jit(lambda p: (chunked.apply(p, x, mask), xla.apply(p, x, mask)))(params)
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_cross_attention_is_the_cross_attentions_config(monkeypatch):
  """cross_attention reaches the cross-attentions only (the others keep `attention`); left
  None it is `attention`; outputs agree."""
  from perceiver_jax.nn import attention  # pylint: disable=import-outside-toplevel
  used, attend = [], attention.dot_product_attention
  monkeypatch.setattr(attention, "dot_product_attention", lambda *args, config, **kw: (
      used.append(config) or attend(*args, config=config, **kw)))
  x = _data(0, B, 11, C)
  settings = dict(num_cross_attention_layers=2, num_self_attention_blocks=2)
  chunked, xla = AttentionConfig("chunked", chunk_size=4), AttentionConfig()
  outputs = []
  for cross in (chunked, None):
    encoder = _encoder(cross_attention=cross, **settings)
    used.clear()
    outputs.append(encoder.apply({"params": _params(encoder, x)}, x))
    # Traced in order: cross-attention, block, cross-attention, block (one layer each).
    assert used[-4:] == [cross or xla, xla, cross or xla, xla]
  np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-5, atol=1e-5)


def test_activation_reaches_every_mlp():
  """Every MLP of the tower uses the encoder's activation: swapping the MLPs' nonlinearity by
  hand gives the same output as setting the field."""
  x = _data(0, B, M, C)
  settings = dict(num_cross_attention_layers=2, num_self_attention_blocks=2)
  params = _params(_encoder(**settings), x)
  exact = _encoder(**settings, activation="gelu_exact").apply({"params": params}, x)
  approx = _encoder(**settings).apply({"params": params}, x)
  assert not np.allclose(exact, approx, atol=1e-6)
  with nn.intercept_methods(_exact_gelu_everywhere):
    swapped = _encoder(**settings).apply({"params": params}, x)
  np.testing.assert_allclose(swapped, exact, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="activation"):
    _encoder(activation="swish")


def _exact_gelu_everywhere(next_fun, args, kwargs, context):
  from perceiver_jax.nn.layers import MLP
  if isinstance(context.module, MLP) and context.method_name == "__call__":
    if context.module.activation == "gelu":
      return context.module.clone(activation="gelu_exact", parent=None).apply(
          {"params": context.module.variables["params"]}, *args, **kwargs)
  return next_fun(*args, **kwargs)


@pytest.mark.parametrize("remat", [False, True])
def test_sown_weights_come_from_every_attention_layer(remat):
  """attention=AttentionConfig(sow_weights=True) sows softmax weights [b, heads, q, kv] in the
  cross-attention and every self-attention layer (once per call of a shared one)."""
  x = _data(0, B, M, C)
  settings = dict(num_cross_attention_layers=1, num_self_attention_blocks=2, remat=remat)
  encoder = _encoder(attention=AttentionConfig(sow_weights=True), **settings)
  params = {"params": _params(encoder, x)}
  _, state = encoder.apply(params, x, mutable=["intermediates"])
  sown = state["intermediates"]
  (cross,) = sown["cross_attention_first"]["attention"]["attention_weights"]
  assert cross.shape == (B, 1, N, M)
  shared = sown["self_attention_block_shared"]["layer_0"]["attention"]["attention_weights"]
  assert len(shared) == 2 and shared[0].shape == (B, 2, N, N)  # Blocks 1 and 2 share it.
  for weights in (cross,) + shared:
    np.testing.assert_allclose(np.sum(weights, axis=-1), 1.0, rtol=1e-5)
  assert not np.allclose(shared[0], shared[1])  # Each block's own inputs.
