"""Pre-LN layers against float64 numpy references computed from their own (randomised) params."""

import math

import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver_jax.nn.attention import AttentionConfig
from perceiver_jax import MLP, CrossAttentionLayer, SelfAttentionBlock, SelfAttentionLayer
from random_params import random_data as _data, random_params as _params

B, N, D, M, C = 2, 5, 8, 7, 6  # batch, latents, latent channels, inputs, input channels.


def _structure(module, *args):
  shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), *args)
  return jax.tree_util.tree_map(lambda s: s.shape, shapes)


def _np(tree):
  return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), tree)


def _ln(x, p):
  mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + 1e-5) * p["scale"] + p["bias"]


def _gelu_tanh(x):
  return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def dense_stats(x, p):
  return x @ p["kernel"] + p["bias"]


def _mlp(x, p):
  return dense_stats(_gelu_tanh(dense_stats(x, p["Dense_0"])), p["Dense_1"])


def _attention(q_in, kv_in, p, mask=None):
  """Multi-head softmax attention; mask [b, kv] True = attend."""
  q = np.einsum("btc,chd->bthd", q_in, p["query"]["kernel"]) + p["query"]["bias"]
  k = np.einsum("bsc,chd->bshd", kv_in, p["key"]["kernel"]) + p["key"]["bias"]
  v = np.einsum("bsc,chd->bshd", kv_in, p["value"]["kernel"]) + p["value"]["bias"]
  logits = np.einsum("bthd,bshd->bhts", q, k) / np.sqrt(q.shape[-1])
  if mask is not None:
    logits = np.where(mask[:, None, None, :], logits, -np.inf)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  out = np.einsum("bhts,bshd->bthd", weights, v)
  return np.einsum("bthd,hdc->btc", out, p["out"]["kernel"]) + p["out"]["bias"]


def _self_layer_ref(x, p, mask=None):
  normed = _ln(x, p["attention_norm"])
  x = x + _attention(normed, normed, p["attention"], mask)
  return x + _mlp(_ln(x, p["mlp_norm"]), p["mlp"])


def _cross_layer_ref(q, kv, p, use_query_residual, mask=None):
  a = _attention(_ln(q, p["query_norm"]), _ln(kv, p["input_norm"]), p["attention"], mask)
  x = q + a if use_query_residual else a
  return x + _mlp(_ln(x, p["mlp_norm"]), p["mlp"])


def _pad_mask():
  mask = np.ones((B, M), bool)
  mask[0, 4:] = False
  mask[1, :2] = False
  return jnp.asarray(mask)


@pytest.mark.parametrize("widening_factor", [1, 3])
def test_mlp_is_dense_gelu_tanh_dense(widening_factor):
  x = _data(0, B, N, D)
  mlp = MLP(widening_factor=widening_factor)
  params = _params(mlp, x)
  assert params["Dense_0"]["kernel"].shape == (D, widening_factor * D)
  assert params["Dense_1"]["kernel"].shape == (widening_factor * D, D)
  out = mlp.apply({"params": params}, x)
  np.testing.assert_allclose(out, _mlp(np.asarray(x, np.float64), _np(params)),
                             rtol=1e-5, atol=1e-5)
  # The tanh approximation is the one used: the exact-erf gelu gives a measurably different result.
  exact = dense_stats(jax.nn.gelu(dense_stats(np.asarray(x, np.float64), _np(params)["Dense_0"]),
                             approximate=False), _np(params)["Dense_1"])
  assert np.abs(np.asarray(out) - np.asarray(exact)).max() > 1e-5


@pytest.mark.parametrize("settings,masked", [
    (dict(num_heads=1), False),
    (dict(num_heads=2, widening_factor=3), True),
    (dict(num_heads=2, qk_channels=4, v_channels=6), True),
])
def test_self_attention_layer_matches_pre_ln_reference(settings, masked):
  x = _data(0, B, N, D)
  mask = None
  if masked:
    mask = jnp.asarray(np.arange(N)[None, :] < np.array([[N], [3]]))
  layer = SelfAttentionLayer(**settings)
  params = _params(layer, x)
  widening = settings.get("widening_factor", 1)
  assert params["mlp"]["Dense_0"]["kernel"].shape == (D, widening * D)
  out = layer.apply({"params": params}, x, mask)
  ref = _self_layer_ref(np.asarray(x, np.float64), _np(params),
                        None if mask is None else np.asarray(mask))
  assert out.shape == (B, N, D) and out.dtype == jnp.float32
  np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


def test_layer_norm_epsilon_is_1e_5():
  """Inputs with variance ~1e-6, where the LayerNorm epsilon changes the result."""
  q, kv = 1e-3 * _data(0, B, N, D), 1e-3 * _data(1, B, M, C)
  layer = CrossAttentionLayer(num_heads=2)
  params = _params(layer, q, kv)
  ref = _cross_layer_ref(np.asarray(q, np.float64), np.asarray(kv, np.float64), _np(params), True)
  np.testing.assert_allclose(layer.apply({"params": params}, q, kv), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("use_query_residual", [True, False])
@pytest.mark.parametrize("settings,masked", [
    (dict(), False),
    (dict(num_heads=2, widening_factor=2), True),
    (dict(num_heads=2, qk_channels=4, v_channels=10), True),
])
def test_cross_attention_layer_matches_pre_ln_reference(use_query_residual, settings, masked):
  q, kv = _data(0, B, N, D), _data(1, B, M, C)
  mask = _pad_mask() if masked else None
  layer = CrossAttentionLayer(use_query_residual=use_query_residual, **settings)
  params = _params(layer, q, kv)
  # Default qk width is the input (kv) width; output is projected back to the query width.
  qk = settings.get("qk_channels", C)
  assert params["attention"]["key"]["kernel"].reshape(C, -1).shape == (C, qk)
  assert params["attention"]["out"]["kernel"].shape[-1] == D
  out = layer.apply({"params": params}, q, kv, mask)
  ref = _cross_layer_ref(np.asarray(q, np.float64), np.asarray(kv, np.float64), _np(params),
                         use_query_residual, None if mask is None else np.asarray(mask))
  assert out.shape == (B, N, D)
  np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


def test_cross_attention_query_residual_toggle_changes_output():
  q, kv = _data(0, B, N, D), _data(1, B, M, C)
  with_res, without = CrossAttentionLayer(), CrossAttentionLayer(use_query_residual=False)
  params = {"params": _params(with_res, q, kv)}
  assert _structure(with_res, q, kv) == _structure(without, q, kv)
  assert not np.allclose(with_res.apply(params, q, kv), without.apply(params, q, kv), atol=1e-3)


@pytest.mark.parametrize("rates", [dict(dropout_rate=0.5),
                                   dict(attention=AttentionConfig(dropout_rate=0.5))])
@pytest.mark.parametrize("kind", ["self", "cross"])
def test_dropout_only_when_not_deterministic_and_needs_rng(rates, kind):
  x, kv = _data(0, B, N, D), _data(1, B, M, C)
  args = (x,) if kind == "self" else (x, kv)
  layer = (SelfAttentionLayer(num_heads=2, **rates) if kind == "self"
           else CrossAttentionLayer(**rates))
  plain = SelfAttentionLayer(num_heads=2) if kind == "self" else CrossAttentionLayer()
  params = {"params": _params(layer, *args)}
  deterministic = layer.apply(params, *args)
  np.testing.assert_allclose(deterministic, plain.apply(params, *args), rtol=1e-6, atol=1e-6)
  rng = lambda seed: {"dropout": jax.random.PRNGKey(seed)}
  dropped = layer.apply(params, *args, deterministic=False, rngs=rng(1))
  assert np.all(np.isfinite(dropped))
  assert np.abs(np.asarray(dropped) - np.asarray(deterministic)).max() > 1e-3
  np.testing.assert_array_equal(
      dropped, layer.apply(params, *args, deterministic=False, rngs=rng(1)))
  assert not np.allclose(dropped, layer.apply(params, *args, deterministic=False, rngs=rng(2)))
  with pytest.raises(flax.errors.InvalidRngError):
    layer.apply(params, *args, deterministic=False)
  # With zero rates, deterministic=False is a no-op and needs no rng.
  np.testing.assert_allclose(plain.apply(params, *args, deterministic=False), deterministic,
                             rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", ["self", "cross"])
@pytest.mark.parametrize("zeroed", ["mlp", "attention"])
def test_dropout_follows_the_attention_and_mlp_outputs(kind, zeroed):
  """With one branch zeroed, out - x is the other branch with inverted dropout applied."""
  rate = 0.5
  x, kv = _data(0, B, N, D), _data(1, B, M, C)
  args = (x,) if kind == "self" else (x, kv)
  layer = (SelfAttentionLayer(num_heads=2, dropout_rate=rate) if kind == "self"
           else CrossAttentionLayer(dropout_rate=rate))
  params = _params(layer, *args)
  last = params["mlp"]["Dense_1"] if zeroed == "mlp" else params["attention"]["out"]
  for leaf in ("kernel", "bias"):
    last[leaf] = jnp.zeros_like(last[leaf])
  branch = np.asarray(layer.apply({"params": params}, *args) - x)
  dropped = np.asarray(layer.apply({"params": params}, *args, deterministic=False,
                                   rngs={"dropout": jax.random.PRNGKey(0)}) - x)
  kept = np.isclose(dropped, branch / (1 - rate), rtol=1e-4, atol=1e-5)
  zero = np.abs(dropped) < 1e-6
  assert np.all(kept | zero)
  assert 0.3 < zero.mean() < 0.7 and np.abs(branch).min() > 1e-6


def test_self_attention_block_has_num_layers_distinct_layers_in_order():
  x = _data(0, B, N, D)
  block = SelfAttentionBlock(num_layers=3, num_heads=2)
  params = _params(block, x)
  assert sorted(params) == ["layer_0", "layer_1", "layer_2"]
  out = block.apply({"params": params}, x)
  ref = np.asarray(x, np.float64)
  for i in range(3):
    ref = _self_layer_ref(ref, _np(params[f"layer_{i}"]))
  np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)
  layer = SelfAttentionLayer(num_heads=2)
  y = x
  for _ in range(3):
    y = layer.apply({"params": params["layer_0"]}, y)
  assert not np.allclose(out, y, atol=1e-4)  # Not one layer reused.


def test_remat_gives_identical_outputs_and_gradients():
  x = _data(0, B, N, D)
  settings = dict(num_layers=2, num_heads=2, widening_factor=2, dropout_rate=0.2,
                  attention=AttentionConfig(dropout_rate=0.2))
  plain, remat = SelfAttentionBlock(**settings), SelfAttentionBlock(remat=True, **settings)
  params = {"params": _params(plain, x)}
  assert _structure(plain, x) == _structure(remat, x)
  np.testing.assert_allclose(plain.apply(params, x), remat.apply(params, x), rtol=1e-6, atol=1e-6)
  rngs = {"dropout": jax.random.key(3, impl="rbg")}  # rbg: cheap to compile on CPU.

  def loss(module, params, x):  # With dropout on: remat must replay the same dropout masks.
    out = module.apply(params, x, None, False, rngs=rngs)
    return jnp.sum(out * jnp.cos(out)), out

  grad = jax.jit(jax.value_and_grad(loss, argnums=(1, 2), has_aux=True), static_argnums=0)
  (l1, out1), g1 = grad(plain, params, x)
  (l2, out2), g2 = grad(remat, params, x)
  assert not np.allclose(out1, plain.apply(params, x), atol=1e-3)  # Dropout was active.
  np.testing.assert_allclose(out1, out2, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(l1, l2, rtol=1e-5)
  chex.assert_trees_all_close(g1, g2, rtol=1e-4, atol=1e-5)
  assert all(np.abs(np.asarray(g)).max() > 0 for g in jax.tree_util.tree_leaves(g1))


_BAD_FIELDS = [dict(widening_factor=0), dict(dropout_rate=-0.1), dict(dropout_rate=1.0),
               dict(num_heads=0)]


@pytest.mark.parametrize("cls,bad", [
    (cls, bad) for cls in (SelfAttentionLayer, CrossAttentionLayer, SelfAttentionBlock, MLP)
    for bad in _BAD_FIELDS if next(iter(bad)) in cls.__dataclass_fields__])
def test_bad_fields_raise_at_construction(cls, bad):
  with pytest.raises(ValueError, match=f"{cls.__name__}.{next(iter(bad))}"):
    cls(**bad)


def test_block_needs_at_least_one_layer():
  with pytest.raises(ValueError, match="SelfAttentionBlock.num_layers"):
    SelfAttentionBlock(num_layers=0)


@pytest.mark.parametrize("kind", ["self", "cross"])
def test_bfloat16_compute_with_float32_params(kind):
  x, kv = _data(0, B, N, D), _data(1, B, M, C)
  args = (x,) if kind == "self" else (x, kv)
  make = ((lambda **kw: SelfAttentionLayer(num_heads=2, **kw)) if kind == "self"
          else CrossAttentionLayer)
  low = make(dtype=jnp.bfloat16)
  shapes = jax.eval_shape(low.init, jax.random.PRNGKey(0), *args)
  assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(shapes))
  params = {"params": _params(low, *args)}
  out = low.apply(params, *args)
  assert out.dtype == jnp.bfloat16
  full = make().apply(params, *args)
  np.testing.assert_allclose(np.asarray(out, np.float32), full, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("activation,reference", [
    ("gelu", lambda h: 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h ** 3)))),
    ("gelu_exact", lambda h: 0.5 * h * (1 + np.vectorize(math.erf)(h / np.sqrt(2)))),
    ("relu", lambda h: np.maximum(h, 0)),
    ("squared_relu", lambda h: np.maximum(h, 0) ** 2),
])
def test_mlp_activations(activation, reference):
  x = _data(0, B, N, D)
  mlp = MLP(widening_factor=2, activation=activation)
  params = _params(mlp, x)
  hidden = np.asarray(x, np.float64) @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"]
  expected = reference(hidden) @ params["Dense_1"]["kernel"] + params["Dense_1"]["bias"]
  np.testing.assert_allclose(mlp.apply({"params": params}, x), expected, rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match="MLP.activation"):
    MLP(activation="swish")


def test_mlp_without_biases_equals_zero_biases():
  x = _data(0, B, N, D)
  params = _params(MLP(), x)
  bare = MLP(use_bias=False)
  kernels = {name: {"kernel": p["kernel"]} for name, p in params.items()}
  assert _params(bare, x).keys() == kernels.keys()
  assert all(set(p) == {"kernel"} for p in _params(bare, x).values())
  zero_biases = {name: dict(p, bias=jnp.zeros_like(p["bias"])) for name, p in params.items()}
  np.testing.assert_allclose(bare.apply({"params": kernels}, x),
                             MLP().apply({"params": zero_biases}, x), rtol=1e-6, atol=1e-6)
