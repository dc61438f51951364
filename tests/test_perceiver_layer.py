"""PerceiverLayer (zeta's): per block, self-attention of q, a CrossAttentionLayer to
concat(k, v); checked against the underlying layers composed by hand with the same params."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver_jax import CrossAttentionLayer, MultiHeadAttention, PerceiverLayer
from perceiver_jax.nn.layers import layer_norm
from perceiver_jax.nn.model_stats import count_params, flops, param_count
from random_params import random_data as _data, random_params as _params

B, T, K, V, D = 2, 5, 7, 4, 16  # batch, q_len, k_len, v_len, dim.


def _qkv(seed=0, k_len=K, v_len=V):
  return _data(seed, B, T, D), _data(seed + 1, B, k_len, D), _data(seed + 2, B, v_len, D)


def _block_by_hand(params, x, context, heads, dim_head, mask=None):
  """One block from the layers it composes, with the block's params."""
  inner = heads * dim_head
  normed = layer_norm(jnp.float32).apply({"params": params["attention_norm"]}, x)
  attention = MultiHeadAttention(num_heads=heads, qk_channels=inner, v_channels=inner)
  x = x + attention.apply({"params": params["self_attention"]}, normed, normed)
  cross = CrossAttentionLayer(num_heads=heads, qk_channels=inner, v_channels=inner,
                              widening_factor=4)
  return cross.apply({"params": params["cross_attention"]}, x, context, mask)


@pytest.mark.parametrize("heads,dim_head", [(4, 8), (1, 32)])
def test_depth_one_equals_the_layers_composed_by_hand(heads, dim_head):
  layer = PerceiverLayer(D, heads, 1, dim_head)
  q, k, v = _qkv()
  params = _params(layer, q, k, v)
  out = layer.apply({"params": params}, q, k, v)
  assert out.shape == (B, T, D)
  expected = _block_by_hand(params["block_0"], q, jnp.concatenate([k, v], 1), heads, dim_head)
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_depth_blocks_have_their_own_weights_and_run_in_sequence():
  layer = PerceiverLayer(D, 2, 3, 8)
  q, k, v = _qkv(3)
  params = _params(layer, q, k, v)
  assert set(params) == {"block_0", "block_1", "block_2"}
  assert not np.allclose(params["block_0"]["attention_norm"]["scale"],
                         params["block_1"]["attention_norm"]["scale"])
  x, context = q, jnp.concatenate([k, v], 1)
  for i in range(3):
    x = _block_by_hand(params[f"block_{i}"], x, context, 2, 8)
  np.testing.assert_allclose(layer.apply({"params": params}, q, k, v), x, rtol=1e-5, atol=1e-5)
  shapes = ((T, D), (K, D), (V, D))
  assert param_count(layer, shapes) == 3 * param_count(PerceiverLayer(D, 2, 1, 8), shapes)


def test_a_masked_context_row_is_a_dropped_one():
  """The mask covers the context concat(k, v): masking v's last 2 rows equals dropping them."""
  layer = PerceiverLayer(D, 2, 2, 8)
  q, k, v = _qkv(6)
  params = {"params": _params(layer, q, k, v)}
  mask = jnp.asarray(np.arange(K + V) < K + V - 2)[None].repeat(B, 0)
  masked = layer.apply(params, q, k, v, mask)
  np.testing.assert_allclose(masked, layer.apply(params, q, k, v[:, :-2]), rtol=1e-5, atol=1e-5)
  assert not np.allclose(masked, layer.apply(params, q, k, v), atol=1e-4)
  with pytest.raises(ValueError, match="key padding mask must have shape"):
    layer.apply(params, q, k, v, mask[:, :K])


def test_dropout_is_off_when_deterministic_and_follows_the_rng_otherwise():
  layer = PerceiverLayer(D, 2, 2, 8, dropout=0.3)
  q, k, v = _qkv(9)
  variables = {"params": _params(layer, q, k, v)}
  run = lambda seed: layer.apply(variables, q, k, v, deterministic=False,
                                 rngs={"dropout": jax.random.PRNGKey(seed)})
  np.testing.assert_array_equal(layer.apply(variables, q, k, v), layer.apply(variables, q, k, v))
  np.testing.assert_array_equal(run(0), run(0))
  assert not np.allclose(run(0), run(1))
  no_dropout = PerceiverLayer(D, 2, 2, 8, dropout=0.0)
  np.testing.assert_array_equal(no_dropout.apply(variables, q, k, v, deterministic=False),
                                no_dropout.apply(variables, q, k, v))


def test_zeta_call_convention_and_defaults():
  layer = PerceiverLayer(32, 8, 6, 64)  # zeta's example: dim, heads, depth, dim_head.
  assert (layer.dim, layer.heads, layer.depth, layer.dim_head, layer.dropout, layer.ff_mult) == (
      32, 8, 6, 64, 0.1, 4)
  q, k, v = (jnp.ones((1, 32, 32)),) * 3
  out = jax.eval_shape(layer.init_with_output, jax.random.PRNGKey(0), q, k, v)[0]
  assert out.shape == (1, 32, 32)


@pytest.mark.parametrize("heads,dim_head,depth", [(4, 8, 1), (1, 32, 2), (2, 16, 3)])
def test_param_count_equals_init(heads, dim_head, depth):
  layer = PerceiverLayer(D, heads, depth, dim_head)
  q, k, v = _qkv()
  shapes = jax.eval_shape(layer.init, jax.random.PRNGKey(0), q, k, v)
  assert param_count(layer, ((T, D), (K, D), (V, D))) == count_params(shapes)
  assert layer.stats((T, D), (K, D), (V, D)).output_shape == (T, D)


@pytest.mark.parametrize("heads,dim_head", [(4, 32), (1, 128)])
def test_flops_within_ten_percent_of_xla_cost_analysis(heads, dim_head):
  """At sizes where matmuls dominate; one head of 128 > dim channels folds the self-attention's
  key/value projections (multi_head_attention.py), and the count follows."""
  dim, q_len, k_len, v_len = 64, 32, 256, 128
  layer = PerceiverLayer(dim, heads, 2, dim_head)
  args = [jax.ShapeDtypeStruct((1, n, dim), jnp.float32) for n in (q_len, k_len, v_len)]
  variables = jax.eval_shape(layer.init, jax.random.PRNGKey(0), *args)
  cost = jax.jit(layer.apply).lower(variables, *args).compile().cost_analysis()
  measured = (cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"]
  analytic = flops(layer, ((q_len, dim), (k_len, dim), (v_len, dim)))
  assert abs(analytic - measured) / measured < 0.10, (analytic, measured)


@pytest.mark.parametrize("settings,match", [
    (dict(heads=0), r"PerceiverLayer.heads must be >= 1"),
    (dict(depth=0), r"PerceiverLayer.depth must be >= 1"),
    (dict(dim_head=0), r"PerceiverLayer.dim_head must be >= 1"),
    (dict(ff_mult=0), r"PerceiverLayer.ff_mult must be >= 1"),
    (dict(dropout=1.0), r"PerceiverLayer.dropout must be in \[0, 1\)"),
])
def test_bad_fields_are_clear_errors(settings, match):
  with pytest.raises(ValueError, match=match):
    PerceiverLayer(**dict(dict(dim=D, heads=2, depth=1), **settings))


@pytest.mark.parametrize("shapes", [
    ((B, T, D), (B, K, D + 1), (B, V, D)),  # k of another width.
    ((B, T, D), (B, K, D), (B + 1, V, D)),  # v of another batch.
    ((T, D), (B, K, D), (B, V, D)),  # q without a batch dim.
])
def test_inputs_of_other_shapes_are_clear_errors(shapes):
  layer = PerceiverLayer(D, 2, 1, 8)
  with pytest.raises(ValueError, match=r"q, k and v \[batch, length, dim=16\] of one batch"):
    layer.init(jax.random.PRNGKey(0), *(jnp.ones(s) for s in shapes))
  with pytest.raises(ValueError, match="set PerceiverLayer.dim"):
    param_count(PerceiverLayer(D + 1, 2, 1, 8), ((T, D), (K, D), (V, D)))
