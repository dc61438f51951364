"""MultiHeadAttention: channel defaults, validation, and a numpy re-computation from its params."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver_jax import MultiHeadAttention
from perceiver_jax.nn.attention import AttentionConfig

B, T, S, CQ, CKV = 2, 5, 7, 6, 8  # batch, q_len, kv_len, query channels, kv channels.


@pytest.fixture(autouse=True)
def _full_precision_matmuls():
  """float32 matmuls without TF32 (a GPU default), so the float64 references apply."""
  with jax.default_matmul_precision("float32"):
    yield


def _data(seed, *shape):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _shapes(module, *args, **kwargs):
  variables = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), *args, **kwargs))
  return jax.tree_util.tree_map(lambda s: s.shape, variables["params"])


def _params(module, *args, seed=0, **kwargs):
  """Random params of init's structure, biases included (numpy-drawn)."""
  shapes = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), *args, **kwargs))["params"]
  rng = np.random.default_rng(seed)
  fill = lambda s: jnp.asarray(0.4 * rng.normal(size=s.shape), s.dtype)
  return jax.tree_util.tree_map(fill, shapes)


def _np_rope(x, positions, fraction, max_wavelength=10_000.0):
  """Interleaved rotary embedding of the first fraction of head dims, float64."""
  x = np.array(x, np.float64)
  rot = 2 * int(np.floor(x.shape[-1] * fraction / 2))
  positions = np.broadcast_to(np.asarray(positions, np.float64), x.shape[:2])
  for i in range(rot // 2):
    angle = positions[:, :, None] * max_wavelength ** (-2.0 * i / rot)
    a, b = x[..., 2 * i].copy(), x[..., 2 * i + 1].copy()
    x[..., 2 * i] = a * np.cos(angle) - b * np.sin(angle)
    x[..., 2 * i + 1] = a * np.sin(angle) + b * np.cos(angle)
  return x


def _np_weights(params, inputs_q, inputs_kv, mask=None, causal=False, rotary_fraction=0.0,
                q_positions=None, kv_positions=None):
  """Dense query and key projections and per-head softmax weights [b, h, t, s] in float64."""
  p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
  xq, xkv = np.asarray(inputs_q, np.float64), np.asarray(inputs_kv, np.float64)
  q = np.einsum("btc,chd->bthd", xq, p["query"]["kernel"]) + p["query"]["bias"]
  k = np.einsum("bsc,chd->bshd", xkv, p["key"]["kernel"]) + p["key"]["bias"]
  if rotary_fraction:
    q, k = _np_rope(q, q_positions, rotary_fraction), _np_rope(k, kv_positions, rotary_fraction)
  t, s = q.shape[1], k.shape[1]
  allowed = np.ones((q.shape[0], q.shape[2], t, s), bool)
  if mask is not None:
    mask = np.asarray(mask)
    allowed &= mask[:, None, None, :] if mask.ndim == 2 else mask
  if causal:
    allowed &= np.arange(s)[None, :] <= np.arange(t)[:, None] + (s - t)
  logits = np.einsum("bthd,bshd->bhts", q, k) / np.sqrt(q.shape[-1])
  logits = np.where(allowed, logits, -np.inf)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  return weights / weights.sum(-1, keepdims=True)


def _np_module(params, inputs_q, inputs_kv, mask=None, **kwargs):
  """Dense projections, per-head softmax attention and output projection in float64."""
  p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
  xkv = np.asarray(inputs_kv, np.float64)
  v = np.einsum("bsc,chd->bshd", xkv, p["value"]["kernel"]) + p["value"]["bias"]
  weights = _np_weights(params, inputs_q, inputs_kv, mask, **kwargs)
  out = np.einsum("bhts,bshd->bthd", weights, v)
  return np.einsum("bthd,hdo->bto", out, p["out"]["kernel"]) + p["out"]["bias"]


def _pad_mask():
  return jnp.asarray(np.arange(S)[None, :] < np.array([[S], [4]]))  # Batch 1: last 3 keys pad.


def test_default_channels():
  """qk_channels = kv channels, v_channels = qk_channels, output = query channels."""
  xq, xkv = _data(0, B, T, CQ), _data(1, B, S, CKV)
  module = MultiHeadAttention(num_heads=2)
  shapes = _shapes(module, xq, xkv)
  assert shapes["query"]["kernel"] == (CQ, 2, CKV // 2)
  assert shapes["key"]["kernel"] == (CKV, 2, CKV // 2)
  assert shapes["value"]["kernel"] == (CKV, 2, CKV // 2)
  assert shapes["out"]["kernel"] == (2, CKV // 2, CQ) and shapes["out"]["bias"] == (CQ,)
  out = jax.eval_shape(lambda: module.init_with_output(jax.random.PRNGKey(0), xq, xkv)[0])
  assert out.shape == (B, T, CQ)
  # Self-attention: everything is the latent width.
  latents = _data(2, B, T, 4)
  shapes = _shapes(module, latents, latents)
  assert shapes["query"]["kernel"] == (4, 2, 2) and shapes["out"]["kernel"] == (2, 2, 4)


def test_explicit_channels():
  xq, xkv = _data(0, B, T, CQ), _data(1, B, S, CKV)
  shapes = _shapes(MultiHeadAttention(2, qk_channels=12, v_channels=6, output_channels=10), xq, xkv)
  assert shapes["query"]["kernel"] == (CQ, 2, 6) and shapes["key"]["kernel"] == (CKV, 2, 6)
  assert shapes["value"]["kernel"] == (CKV, 2, 3)
  assert shapes["out"]["kernel"] == (2, 3, 10)
  shapes = _shapes(MultiHeadAttention(2, qk_channels=12), xq, xkv)  # v_channels follows qk.
  assert shapes["value"]["kernel"] == (CKV, 2, 6) and shapes["out"]["kernel"] == (2, 6, CQ)


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_heads=0), "num_heads must be >= 1"),
    (dict(num_heads=2, qk_channels=0), "qk_channels"),
    (dict(num_heads=2, output_channels=-1), "output_channels"),
    (dict(num_heads=2, rotary_fraction=1.5), "rotary_fraction"),
    (dict(num_heads=2, attention=AttentionConfig("cudnn"), dtype=jnp.float32),
     "implementation='cudnn'.*bfloat16 or float16"),
])
def test_construction_errors(kwargs, match):
  with pytest.raises(ValueError, match=match):
    MultiHeadAttention(**kwargs)


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_heads=3), r"qk_channels=8 is not divisible by num_heads=3"),  # Default from kv.
    (dict(num_heads=2, qk_channels=7), r"qk_channels=7 is not divisible by num_heads=2"),
    (dict(num_heads=3, qk_channels=6, v_channels=4),
     r"v_channels=4 is not divisible by num_heads=3"),
])
def test_channels_not_divisible_by_heads_raise_at_call(kwargs, match):
  module = MultiHeadAttention(**kwargs)  # Construction is fine: channels may come from inputs.
  with pytest.raises(ValueError, match=match):
    _shapes(module, _data(0, B, T, CQ), _data(1, B, S, CKV))


CASES = {
    "plain": dict(),
    "key_padding": dict(mask="padding"),
    "full_mask_causal": dict(mask="full", causal=True),
    "explicit_channels": dict(qk_channels=12, v_channels=6, output_channels=10, mask="padding"),
    "rotary_causal": dict(rotary_fraction=0.5, causal=True, mask="padding"),
}


def _case(name, implementation):
  """Module, inputs, call kwargs and numpy-reference kwargs of a named case."""
  settings = dict(CASES[name])
  mask_kind = settings.pop("mask", None)
  causal = settings.pop("causal", False)
  module = MultiHeadAttention(num_heads=2, causal=causal,
                              attention=AttentionConfig(implementation, chunk_size=3), **settings)
  xq, xkv = _data(0, B, T, CQ), _data(1, B, S, CKV)
  mask = None
  if mask_kind == "padding":
    mask = _pad_mask()
  elif mask_kind == "full":
    mask = jnp.asarray(np.random.default_rng(4).random((B, 2, T, S)) < 0.7).at[..., 0].set(True)
  call = dict(mask=mask)
  if settings.get("rotary_fraction"):
    call.update(q_positions=jnp.arange(S - T, S) + 3, kv_positions=jnp.arange(S) + 3)
  ref = dict(call, causal=causal, rotary_fraction=settings.get("rotary_fraction", 0.0))
  return module, xq, xkv, call, ref


@pytest.mark.parametrize("implementation", ["xla", "chunked"])
@pytest.mark.parametrize("name", list(CASES))
def test_matches_numpy_computation_from_params(name, implementation):
  module, xq, xkv, call, ref = _case(name, implementation)
  params = _params(module, xq, xkv, **call)
  out = jax.jit(lambda p: module.apply({"params": p}, xq, xkv, **call))(params)
  np.testing.assert_allclose(out, _np_module(params, xq, xkv, **ref), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["full_mask_causal", "rotary_causal"])
def test_backends_agree_on_outputs_and_param_gradients(name):
  module_xla, xq, xkv, call, _ = _case(name, "xla")
  module_chunked = _case(name, "chunked")[0]
  params = _params(module_xla, xq, xkv, **call)
  target = _data(5, B, T, CQ)

  @jax.jit
  def outputs_and_grads(params):
    results = []
    for module in (module_xla, module_chunked):
      loss = lambda p, module=module: jnp.sum(module.apply({"params": p}, xq, xkv, **call) * target)
      results.append((module.apply({"params": params}, xq, xkv, **call), jax.grad(loss)(params)))
    return results

  (out_xla, g_xla), (out_chunked, g_chunked) = outputs_and_grads(params)
  np.testing.assert_allclose(out_chunked, out_xla, atol=2e-5, rtol=1e-4)
  chex.assert_trees_all_close(g_chunked, g_xla, atol=3e-5, rtol=1e-4)
  for path, a in jax.tree_util.tree_leaves_with_path(g_xla):
    if path[-1].key == "kernel":  # The key bias may get none: it shifts whole logit rows.
      assert np.abs(np.asarray(a)).max() > 1e-3, path


def test_dropout_uses_the_dropout_rng():
  """Flax's default (threefry) 'dropout' rng drives the chunked backend's attention dropout."""
  xq, xkv = _data(0, B, T, CQ), _data(1, B, S, CKV)
  module = MultiHeadAttention(num_heads=2, attention=AttentionConfig("chunked", chunk_size=3,
                                                                     dropout_rate=0.5))
  params = _params(module, xq, xkv)
  apply = jax.jit(lambda rng: module.apply({"params": params}, xq, xkv, deterministic=False,
                                           rngs={"dropout": rng}))
  clean = module.apply({"params": params}, xq, xkv)  # deterministic=True by default.
  np.testing.assert_allclose(clean, _np_module(params, xq, xkv), atol=2e-5, rtol=1e-4)
  a, b, c = apply(jax.random.PRNGKey(0)), apply(jax.random.PRNGKey(0)), apply(jax.random.PRNGKey(1))
  np.testing.assert_array_equal(a, b)
  assert np.abs(np.asarray(a) - np.asarray(clean)).max() > 1e-2
  assert np.abs(np.asarray(a) - np.asarray(c)).max() > 1e-2
  with pytest.raises(Exception, match="dropout"):  # No 'dropout' rng given.
    module.apply({"params": params}, xq, xkv, deterministic=False)


def test_rotary_needs_positions():
  xq, xkv = _data(0, B, T, CQ), _data(1, B, S, CKV)
  module = MultiHeadAttention(num_heads=2, rotary_fraction=0.5)
  with pytest.raises(ValueError, match="q_positions and kv_positions"):
    _shapes(module, xq, xkv)
  with pytest.raises(ValueError, match="q_positions and kv_positions"):
    _shapes(module, xq, xkv, q_positions=jnp.arange(T))


@pytest.mark.parametrize("batched_positions", [False, True])
def test_rotary_attention_depends_only_on_relative_positions(batched_positions):
  xq, xkv = _data(0, B, T, CQ), _data(1, B, S, CKV)
  module = MultiHeadAttention(num_heads=2, rotary_fraction=0.5, causal=True)
  q_pos, kv_pos = jnp.arange(S - T, S), jnp.arange(S)
  if batched_positions:  # Per-example offsets.
    q_pos, kv_pos = q_pos + jnp.array([[0], [5]]), kv_pos + jnp.array([[0], [5]])
  params = _params(module, xq, xkv, q_positions=q_pos, kv_positions=kv_pos)
  apply = jax.jit(lambda q_pos, kv_pos: module.apply({"params": params}, xq, xkv,
                                                     q_positions=q_pos, kv_positions=kv_pos))
  out = apply(q_pos, kv_pos)
  np.testing.assert_allclose(apply(q_pos + 17, kv_pos + 17), out, atol=2e-5, rtol=1e-4)
  np.testing.assert_allclose(apply(q_pos - 4, kv_pos - 4), out, atol=2e-5, rtol=1e-4)
  assert np.abs(np.asarray(apply(q_pos + 1, kv_pos)) - np.asarray(out)).max() > 1e-3


def test_bfloat16_compute_dtype():
  xq, xkv = _data(0, B, T, CQ), _data(1, B, S, CKV)
  module = MultiHeadAttention(num_heads=2, dtype=jnp.bfloat16)
  params = _params(module, xq, xkv)
  assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(params))
  out = jax.jit(module.apply)({"params": params}, xq, xkv)
  assert out.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(out, np.float32), _np_module(params, xq, xkv),
                             atol=5e-2, rtol=5e-2)


@pytest.mark.parametrize("implementation", ["xla", "chunked"])
def test_folded_kv_projections_same_result_fewer_flops(implementation):
  """The CPU speed-up of the cross-attention (multi_head_attention.py): one head, few queries
  reading many inputs. Same outputs and parameter gradients as the literal K/V projections
  (a fully masked row included; chunked: 3 key chunks, the last partial), and fewer compiled
  FLOPs."""
  rng = np.random.default_rng(0)
  q = jnp.asarray(rng.standard_normal((2, 3, 8)), jnp.float32)
  kv = jnp.asarray(rng.standard_normal((2, 40, 6)), jnp.float32)
  mask = jnp.asarray(np.arange(40)[None] < np.array([[25], [0]]))  # Row 2 sees no key.
  modules = [MultiHeadAttention(num_heads=1, fold_kv_projections=fold,
                                attention=AttentionConfig(implementation, chunk_size=16))
             for fold in (True, False)]
  params = modules[1].init(jax.random.PRNGKey(0), q, kv, mask)["params"]
  params = jax.tree_util.tree_map(  # Non-zero biases.
      lambda p: p + 0.3 * jnp.asarray(rng.standard_normal(p.shape), p.dtype), params)
  chex.assert_trees_all_equal_shapes(modules[0].init(jax.random.PRNGKey(0), q, kv, mask),
                                     {"params": params})
  loss = lambda module: jax.jit(jax.value_and_grad(
      lambda p: jnp.sum(jnp.sin(module.apply({"params": p}, q, kv, mask)))))
  (folded, folded_grads), (literal, literal_grads) = [loss(m)(params) for m in modules]
  np.testing.assert_allclose(folded, literal, rtol=1e-5)
  chex.assert_trees_all_close(folded_grads, literal_grads, rtol=1e-4, atol=1e-5)
  flops = [loss(m).lower(params).compile().cost_analysis()["flops"] for m in modules]
  assert flops[0] < flops[1]


@pytest.mark.parametrize("fold", [True, False])
def test_kv_affine_map_equals_applying_it_first(fold):
  """kv_scale / kv_bias (a LayerNorm's affine map, folded into the projections when the
  attention folds): the same outputs and gradients (parameters, scale and bias) as attending
  to inputs * scale + bias; folded, the backward pass needs fewer FLOPs (no [b, s, c]
  gradient of the inputs)."""
  rng = np.random.default_rng(1)
  q = jnp.asarray(rng.standard_normal((2, 3, 8)), jnp.float32)
  kv = jnp.asarray(rng.standard_normal((2, 40, 6)), jnp.float32)
  mask = jnp.asarray(np.arange(40)[None] < np.array([[25], [0]]))  # Row 2 sees no key.
  affine = {"scale": jnp.asarray(1 + 0.5 * rng.standard_normal(6), jnp.float32),
            "bias": jnp.asarray(0.5 * rng.standard_normal(6), jnp.float32)}
  module = MultiHeadAttention(num_heads=1, fold_kv_projections=fold)
  params = module.init(jax.random.PRNGKey(0), q, kv, mask)["params"]
  params = jax.tree_util.tree_map(
      lambda p: p + 0.3 * jnp.asarray(rng.standard_normal(p.shape), p.dtype), params)
  passed = lambda p, a: module.apply({"params": p}, q, kv, mask, kv_scale=a["scale"],
                                     kv_bias=a["bias"])
  applied = lambda p, a: module.apply({"params": p}, q, kv * a["scale"] + a["bias"], mask)
  losses = [jax.jit(jax.value_and_grad(lambda p, a, f=f: jnp.sum(jnp.sin(f(p, a))),
                                       argnums=(0, 1))) for f in (passed, applied)]
  (out, grads), (expected, expected_grads) = [loss(params, affine) for loss in losses]
  np.testing.assert_allclose(passed(params, affine), applied(params, affine), rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
  chex.assert_trees_all_close(grads, expected_grads, rtol=1e-4, atol=1e-5)
  flops = [loss.lower(params, affine).compile().cost_analysis()["flops"] for loss in losses]
  assert flops[0] < flops[1] if fold else flops[0] == pytest.approx(flops[1], rel=0.05)


def test_kv_affine_map_errors():
  module = MultiHeadAttention(num_heads=1)
  q, kv = jnp.ones((1, 2, 4)), jnp.ones((1, 5, 3))
  with pytest.raises(ValueError, match="kv_scale and kv_bias go together"):
    module.init(jax.random.PRNGKey(0), q, kv, kv_scale=jnp.ones(3))
  with pytest.raises(ValueError, match=r"shape \[kv_channels\]"):
    module.init(jax.random.PRNGKey(0), q, kv, kv_scale=jnp.ones(4), kv_bias=jnp.ones(4))


@pytest.mark.parametrize("name", list(CASES))
def test_sown_weights_are_the_softmax_of_queries_and_keys(name):
  """With AttentionConfig(sow_weights=True) the module sows its softmax weights
  [b, heads, t, s]: an independent float64 softmax(q k^T / sqrt(d) + mask) of its own
  projections, summing to 1 over the keys; the output is unchanged."""
  module, xq, xkv, call, ref = _case(name, "xla")
  sowing = module.clone(attention=AttentionConfig(sow_weights=True))
  params = _params(module, xq, xkv, **call)
  out, state = jax.jit(lambda p: sowing.apply({"params": p}, xq, xkv, **call,
                                              mutable=["intermediates"]))(params)
  (weights,) = state["intermediates"]["attention_weights"]
  assert weights.shape == (B, 2, T, S)
  np.testing.assert_allclose(weights, _np_weights(params, xq, xkv, **ref), atol=1e-6, rtol=1e-5)
  np.testing.assert_allclose(np.sum(weights, axis=-1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(out, module.apply({"params": params}, xq, xkv, **call), rtol=1e-6)


def test_folded_attention_sows_the_same_weights():
  """The folded one-head path (queries attend to the inputs themselves) sows the weights of
  the literal keys: its softmax ignores the key bias, which only shifts whole rows."""
  xq, xkv = _data(0, B, 3, CQ), _data(1, B, 40, CKV)
  mask = jnp.asarray(np.arange(40)[None] < np.array([[40], [25]]))
  module = MultiHeadAttention(num_heads=1, attention=AttentionConfig(sow_weights=True))
  assert module.folds_kv_projections(3, 40, CKV)
  params = _params(module, xq, xkv, mask)
  _, state = module.apply({"params": params}, xq, xkv, mask, mutable=["intermediates"])
  (weights,) = state["intermediates"]["attention_weights"]
  np.testing.assert_allclose(weights, _np_weights(params, xq, xkv, mask), atol=1e-6, rtol=1e-5)
  assert np.all(np.asarray(weights)[1, :, :, 25:] == 0)  # Padding gets no weight.


def test_nothing_is_sown_by_default():
  xq, xkv = _data(0, B, T, CQ), _data(1, B, S, CKV)
  for module in (MultiHeadAttention(num_heads=2), MultiHeadAttention(num_heads=1)):
    params = _params(module, xq, xkv)
    _, state = module.apply({"params": params}, xq, xkv, mutable=["intermediates"])
    assert not state.get("intermediates")


def test_keys_values_then_attend_equals_the_call():
  """The two steps a key/value cache runs (Perceiver AR's generation) give the module's output:
  keys_values(inputs_kv, kv_positions) -> [b, s, heads, d] twice, then attend."""
  module, xq, xkv, call, _ = _case("rotary_causal", "xla")
  params = {"params": _params(module, xq, xkv, **call)}
  key, value = module.apply(params, xkv, call["kv_positions"], method=module.keys_values)
  assert key.shape == value.shape == (B, S, 2, CKV // 2)
  out = module.apply(params, xq, key, value, call["mask"], q_positions=call["q_positions"],
                     method=module.attend)
  np.testing.assert_allclose(out, module.apply(params, xq, xkv, **call), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("fold", [True, False])
def test_projections_without_biases_equal_zero_biases(fold):
  """qkv_bias / out_bias False: no bias parameters, and the outputs of zero biases (the
  folded one-head path included)."""
  q, kv = _data(0, B, T, CQ), _data(1, B, S, CKV)
  biased = MultiHeadAttention(num_heads=1, fold_kv_projections=fold)
  bare = biased.clone(qkv_bias=False, out_bias=False)
  assert bare.folds_kv_projections(T, S, CKV) == fold
  params = biased.init(jax.random.PRNGKey(0), q, kv)["params"]
  kernels = {name: {"kernel": p["kernel"]} for name, p in params.items()}
  assert jax.tree_util.tree_structure(bare.init(jax.random.PRNGKey(0), q, kv)["params"]) == (
      jax.tree_util.tree_structure(kernels))
  zero_biases = {name: dict(p, bias=jnp.zeros_like(p["bias"])) for name, p in params.items()}
  np.testing.assert_allclose(bare.apply({"params": kernels}, q, kv),
                             biased.apply({"params": zero_biases}, q, kv), rtol=1e-5, atol=1e-6)
  only_out = biased.clone(qkv_bias=False)
  assert set(only_out.init(jax.random.PRNGKey(0), q, kv)["params"]["out"]) == {"kernel", "bias"}
