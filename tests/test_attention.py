"""dot_product_attention ('xla', 'chunked', 'cudnn') against a float64 numpy reference; its
AttentionConfig's checks; the attention weights it sows."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver_jax.nn import attention
from perceiver_jax.nn.attention import AttentionConfig

B = 2  # Batch of every small case.


# Jitted once per configuration: eager op-by-op dispatch would dominate the runtime.
@functools.partial(jax.jit, static_argnames=("causal", "implementation", "dropout_rate",
                                             "deterministic", "chunk_size"))
def dot_product_attention(q, k, v, mask=None, *, implementation="xla", chunk_size=1024,
                          dropout_rate=0.0, **kwargs):
  """attention.dot_product_attention with its AttentionConfig's fields as keywords."""
  config = AttentionConfig(implementation, chunk_size, dropout_rate)
  return attention.dot_product_attention(q, k, v, mask, config=config, **kwargs)


@pytest.fixture(autouse=True)
def _full_precision_matmuls():
  """float32 matmuls without TF32 (a GPU default), so the float64 references apply."""
  with jax.default_matmul_precision("float32"):
    yield


def _reference(q, k, v, mask=None, causal=False):
  """softmax(q k^T / sqrt(d)) v per head in float64; fully masked rows give zeros."""
  q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
  b, t, h, d = q.shape
  s = k.shape[1]
  allowed = np.ones((b, h, t, s), bool)
  if mask is not None:
    mask = np.asarray(mask)
    allowed &= np.broadcast_to(mask[:, None, None, :] if mask.ndim == 2 else mask, allowed.shape)
  if causal:  # Query i sits at position s - t + i.
    allowed &= np.arange(s)[None, :] <= np.arange(t)[:, None] + (s - t)
  logits = np.einsum("bthd,bshd->bhts", q, k) / np.sqrt(d)
  weights = np.zeros_like(logits)
  for idx in np.ndindex(b, h, t):
    row, ok = logits[idx], allowed[idx]
    if ok.any():
      e = np.exp(row[ok] - row[ok].max())
      weights[idx][ok] = e / e.sum()
  return np.einsum("bhts,bshd->bthd", weights, v)


def _inputs(t, s, h, d, dv=None, seed=0, dtype=jnp.float32):
  rng = np.random.default_rng(seed)
  q = rng.normal(size=(B, t, h, d))
  k = rng.normal(size=(B, s, h, d))
  v = rng.normal(size=(B, s, h, dv or d))
  return tuple(jnp.asarray(x, dtype) for x in (q, k, v))


def _mask(kind, t, s, h, seed=1):
  """A random boolean mask of the given kind (True = attend), or None."""
  rng = np.random.default_rng(seed)
  shape = {"none": None, "padding": (B, s), "b1ts": (B, 1, t, s), "bhts": (B, h, t, s),
           "11ts": (1, 1, t, s)}[kind]
  return None if shape is None else jnp.asarray(rng.random(shape) < 0.7)


# (name, q_len, kv_len, heads, qk_dim, v_dim, mask kind, causal)
CASES = [
    ("plain", 5, 13, 2, 8, 8, "none", False),
    ("key_padding", 5, 13, 2, 8, 8, "padding", False),
    ("mask_b1ts", 5, 13, 2, 8, 8, "b1ts", False),
    ("mask_bhts", 5, 13, 2, 8, 8, "bhts", False),
    ("causal_cross", 5, 13, 2, 8, 8, "none", True),
    ("causal_self_11ts", 9, 9, 2, 8, 8, "11ts", True),
    ("causal_padding", 9, 9, 2, 8, 8, "padding", True),
    ("v_dim", 5, 13, 2, 8, 3, "none", False),
    ("v_dim_masked_causal", 5, 13, 2, 8, 3, "bhts", True),
]
BACKENDS = [("xla", 1024), ("chunked", 4)]  # Chunks of 4 pad kv_len 13 and 9.
SINGLE_CHUNK_CASES = ("plain", "mask_bhts", "causal_cross")  # Also run with chunk_size > kv_len.


def _ids(cases):
  return [c[0] for c in cases]


@pytest.mark.parametrize("name,t,s,h,d,dv,mask_kind,causal", CASES, ids=_ids(CASES))
def test_matches_numpy_reference(name, t, s, h, d, dv, mask_kind, causal):
  q, k, v = _inputs(t, s, h, d, dv)
  mask = _mask(mask_kind, t, s, h)
  expected = _reference(q, k, v, mask, causal)

  backends = BACKENDS + ([("chunked", 64)] if name in SINGLE_CHUNK_CASES else [])

  @jax.jit  # Every backend in one compilation.
  def attend_all(q, k, v, mask):
    return [attention.dot_product_attention(q, k, v, mask, causal=causal,
                                            config=AttentionConfig(impl, chunk_size))
            for impl, chunk_size in backends]

  for (impl, chunk_size), out in zip(backends, attend_all(q, k, v, mask)):
    assert out.shape == (B, t, h, dv) and out.dtype == jnp.float32
    np.testing.assert_allclose(out, expected, atol=2e-6, rtol=1e-5,
                               err_msg=f"implementation={impl}, chunk_size={chunk_size}")


def test_causal_cross_attention_alignment_by_hand():
  """kv_len 4, q_len 2: query 0 sits at position 2 (keys 0..2), query 1 at 3 (all keys)."""
  q = jnp.zeros((1, 2, 1, 1))  # Equal logits: outputs are plain means of the visible values.
  k = jnp.zeros((1, 4, 1, 1))
  v = jnp.asarray([1.0, 2.0, 3.0, 10.0]).reshape(1, 4, 1, 1)
  for implementation in ("xla", "chunked"):
    out = dot_product_attention(q, k, v, causal=True, implementation=implementation, chunk_size=3)
    np.testing.assert_allclose(np.asarray(out).ravel(), [2.0, 4.0], rtol=1e-6)


# --- Gradients -------------------------------------------------------------------------------


def _weighted_loss(implementation, mask, causal, chunk_size, weights, **kwargs):
  def loss(q, k, v):
    out = dot_product_attention(q, k, v, mask, causal=causal, implementation=implementation,
                                chunk_size=chunk_size, **kwargs)
    return jnp.sum(out.astype(weights.dtype) * weights)
  return loss


GRAD_CASES = [c for c in CASES if c[0] in
              ("plain", "mask_b1ts", "causal_padding", "v_dim_masked_causal")]


@pytest.mark.parametrize("name,t,s,h,d,dv,mask_kind,causal", GRAD_CASES, ids=_ids(GRAD_CASES))
def test_chunked_gradients_match_xla(name, t, s, h, d, dv, mask_kind, causal):
  chunk_size = 64 if name == "plain" else 4  # One chunk, or several with padding.
  q, k, v = _inputs(t, s, h, d, dv)
  mask = _mask(mask_kind, t, s, h)
  weights = jnp.asarray(np.random.default_rng(2).normal(size=(B, t, h, dv)), jnp.float32)

  @jax.jit
  def both_grads(q, k, v):
    return [jax.grad(_weighted_loss(impl, mask, causal, chunk_size, weights), argnums=(0, 1, 2))(
        q, k, v) for impl in ("xla", "chunked")]

  g_xla_all, g_chunked_all = both_grads(q, k, v)
  for g_chunked, g_xla in zip(g_chunked_all, g_xla_all):
    assert np.abs(np.asarray(g_xla)).max() > 1e-3  # Not trivially zero.
    np.testing.assert_allclose(g_chunked, g_xla, atol=2e-5, rtol=1e-4)


def _check_finite_differences(loss, args, eps=1e-3, directions=3, seed=3):
  """Directional derivatives of loss (float64 inputs) against central differences.

  Returns the loss at args.
  """
  rng = np.random.default_rng(seed)
  # Perturbations (+eps u, -eps u) of one argument at a time, stacked for a single vmap.
  steps = [np.zeros((len(args), directions, 2) + x.shape) for x in args]
  for i, x in enumerate(args):
    u = rng.normal(size=(directions,) + x.shape)
    steps[i][i, :, 0], steps[i][i, :, 1] = eps * u, -eps * u
  steps = [jnp.asarray(st.reshape((-1,) + x.shape)) for st, x in zip(steps, args)]

  @jax.jit  # Gradient and every perturbed evaluation in one compilation.
  def analytic_and_numeric(args, steps):
    value, grads = jax.value_and_grad(loss, argnums=tuple(range(len(args))))(*args)
    values = jax.vmap(lambda *d: loss(*(x + dx for x, dx in zip(args, d))))(*steps)
    numeric = (values[0::2] - values[1::2]) / (2 * eps)
    analytic = sum(jnp.einsum("...,n...->n", g, st[0::2]) / eps for g, st in zip(grads, steps))
    return value, grads, analytic, numeric

  value, grads, analytic, numeric = analytic_and_numeric(args, steps)
  assert all(g.dtype == jnp.float64 for g in grads)
  assert np.abs(np.asarray(analytic)).min() > 1e-2  # Derivatives worth comparing.
  # Logits are float32 even for float64 inputs: allow ~1e-4 of rounding noise.
  np.testing.assert_allclose(analytic, numeric, rtol=2e-3, atol=2e-4)
  return float(value)


def test_chunked_gradients_match_finite_differences():
  """Full mask, causal, v_dim != qk_dim and a padded last chunk at once."""
  t, s, h, d, dv = 5, 13, 2, 8, 3
  with jax.enable_x64(True):
    q, k, v = _inputs(t, s, h, d, dv, dtype=jnp.float64)
    mask = _mask("bhts", t, s, h)
    weights = jnp.asarray(np.random.default_rng(2).normal(size=(B, t, h, dv)), jnp.float64)
    loss = _weighted_loss("chunked", mask, True, 4, weights)
    _check_finite_differences(loss, (q, k, v))


# --- Fully masked rows, bfloat16 -------------------------------------------------------------


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("implementation", ["xla", "chunked"])
def test_fully_masked_rows_output_zeros(implementation, dtype):
  t, s, h, d = 4, 9, 2, 8
  q, k, v = _inputs(t, s, h, d, dtype=dtype)
  mask = np.random.default_rng(1).random((B, h, t, s)) < 0.6
  mask[0, :, :, :] = False  # Every query of batch 0.
  mask[1, 1, 2, :] = False  # One query of one head.
  mask[1, 0, :, 0] = True  # Every other row of batch 1 keeps at least one key.
  mask[1, 1, [0, 1, 3], 0] = True
  mask = jnp.asarray(mask)
  weights = jnp.asarray(np.random.default_rng(2).normal(size=(B, t, h, d)), jnp.float32)

  def loss(q, k, v):
    out = attention.dot_product_attention(q, k, v, mask,
                                          config=AttentionConfig(implementation, chunk_size=4))
    return jnp.sum(out.astype(jnp.float32) * weights), out

  grads, out = jax.jit(jax.grad(loss, argnums=(0, 1, 2), has_aux=True))(q, k, v)
  assert out.dtype == dtype
  out = np.asarray(out, np.float32)
  assert np.isfinite(out).all()
  assert (out[0] == 0).all() and (out[1, 2, 1] == 0).all()
  assert np.abs(out[1, :, 0]).min() > 0  # Unmasked rows are not zeroed.
  tol = 1e-5 if dtype == jnp.float32 else 5e-2
  np.testing.assert_allclose(out, _reference(q.astype(jnp.float32), k.astype(jnp.float32),
                                             v.astype(jnp.float32), mask), atol=tol, rtol=tol)
  for g in grads:
    assert np.isfinite(np.asarray(g, np.float32)).all()
  g_q = np.asarray(grads[0], np.float32)
  assert (g_q[0] == 0).all() and (g_q[1, 2, 1] == 0).all()  # Masked queries get no gradient.


def test_causal_with_left_padding_zeroes_early_queries():
  """Causal self-attention whose first keys are padding: early queries see nothing."""
  t = s = 6
  q, k, v = _inputs(t, s, 1, 4)
  mask = jnp.asarray(np.arange(s)[None, :] >= np.array([[3], [0]]))  # Batch 0: first 3 keys pad.
  for implementation in ("xla", "chunked"):
    out = np.asarray(dot_product_attention(q, k, v, mask, causal=True,
                                           implementation=implementation, chunk_size=4))
    assert (out[0, :3] == 0).all() and np.abs(out[0, 3:]).min() > 0
    np.testing.assert_allclose(out, _reference(q, k, v, mask, causal=True), atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("implementation", ["xla", "chunked"])
@pytest.mark.parametrize("name,t,s,h,d,dv,mask_kind,causal",
                         [c for c in CASES if c[0] in ("plain", "v_dim_masked_causal")],
                         ids=["plain", "v_dim_masked_causal"])
def test_bfloat16_close_to_exact_result(implementation, name, t, s, h, d, dv, mask_kind, causal):
  """bf16 inputs against the exact result for the same (bf16-valued) inputs."""
  q, k, v = _inputs(t, s, h, d, dv, dtype=jnp.bfloat16)
  mask = _mask(mask_kind, t, s, h)
  out = dot_product_attention(q, k, v, mask, causal=causal, implementation=implementation,
                              chunk_size=4)
  assert out.dtype == jnp.bfloat16
  expected = _reference(*(np.asarray(x, np.float32) for x in (q, k, v)), mask, causal)
  np.testing.assert_allclose(np.asarray(out, np.float32), expected, atol=3e-2, rtol=3e-2)


# --- Dropout ---------------------------------------------------------------------------------


def _key(seed):
  """An 'rbg' PRNG key: threefry's bit generator takes seconds to compile on CPU.

  test_multi_head_attention.py runs dropout with flax's default (threefry) keys.
  """
  return jax.random.key(seed, impl="rbg")


def _one_hot_values(t, s, h, d):
  """Values v[b, j] = e_j, so output[b, i, n, j] is the (dropped-out) probability P[b, n, i, j]."""
  q, k, _ = _inputs(t, s, h, d)
  v = jnp.broadcast_to(jnp.eye(s)[None, :, None, :], (B, s, h, s))
  return q, k, v


@pytest.mark.parametrize("implementation", ["xla", "chunked"])
def test_dropout_scales_kept_probabilities(implementation):
  """Each probability is either dropped (0) or kept and scaled by 1 / (1 - rate)."""
  t, s, h, d, rate = 6, 13, 2, 4, 0.3
  q, k, v = _one_hot_values(t, s, h, d)
  mask = _mask("padding", t, s, h)
  probs = _reference(q, k, v, mask)  # [b, t, h, s] = P[b, h, t, s] transposed.
  out = np.asarray(dot_product_attention(
      q, k, v, mask, implementation=implementation, dropout_rate=rate, deterministic=False,
      dropout_rng=_key(7), chunk_size=4), np.float64)
  visible = probs > 0
  ratio = out[visible] / probs[visible]
  kept = np.abs(ratio - 1 / (1 - rate)) < 1e-4
  assert (kept | (np.abs(ratio) < 1e-6)).all()
  assert (out[~visible] == 0).all()
  assert 0.55 < kept.mean() < 0.85  # About 1 - rate = 0.7 of ~130 entries.
  if implementation == "chunked":  # Chunks of 4 keys draw different masks.
    kept_all = np.abs(out) > 0
    both_visible = visible[..., 0:4] & visible[..., 4:8]
    assert (kept_all[..., 0:4] != kept_all[..., 4:8])[both_visible].any()


@pytest.mark.parametrize("implementation", ["xla", "chunked"])
def test_dropout_reproducible_and_unbiased(implementation):
  t, s, h, d, rate = 3, 10, 2, 4, 0.5
  q, k, v = _inputs(t, s, h, d)
  mask = _mask("padding", t, s, h)

  def attend(rng):
    return dot_product_attention(q, k, v, mask, implementation=implementation, dropout_rate=rate,
                                 dropout_rng=rng, deterministic=False, chunk_size=4)

  clean = _reference(q, k, v, mask)
  # deterministic=True switches dropout off (no rng needed).
  np.testing.assert_allclose(
      dot_product_attention(q, k, v, mask, implementation=implementation, dropout_rate=rate,
                            chunk_size=4), clean, atol=2e-6, rtol=1e-5)
  attend_many = jax.jit(jax.vmap(attend))
  keys = jax.random.split(_key(3), 4000)
  samples = np.asarray(attend_many(keys))
  np.testing.assert_array_equal(attend_many(keys), samples)  # Same rngs, same outputs.
  assert np.abs(samples[0] - clean).max() > 1e-2
  assert np.abs(samples[1] - samples[0]).max() > 1e-2
  mean, sem = samples.mean(0), samples.std(0) / np.sqrt(len(samples))
  assert sem.max() < 0.05  # Small next to the outputs (~0.5) and to a missing 1/(1-rate).
  assert (np.abs(mean - clean) < 5 * sem + 1e-3).all()


def test_chunked_dropout_gradients_match_finite_differences():
  t, s, h, d = 4, 11, 2, 4
  with jax.enable_x64(True):
    q, k, v = _inputs(t, s, h, d, dtype=jnp.float64)
    mask = _mask("bhts", t, s, h)
    weights = jnp.asarray(np.random.default_rng(2).normal(size=(B, t, h, d)), jnp.float64)
    loss = _weighted_loss("chunked", mask, True, 4, weights, dropout_rate=0.4,
                          dropout_rng=_key(5), deterministic=False)
    value = _check_finite_differences(loss, (q, k, v))
  clean = np.sum(_reference(q, k, v, mask, causal=True) * np.asarray(weights))
  assert abs(value - clean) > 1e-2  # Dropout is active.


# --- Memory of the chunked backward pass -----------------------------------------------------

S_IMAGE = 224 * 224  # Every pixel of a 224x224 image is a key.


@functools.lru_cache(maxsize=None)
def _compiled_grad(implementation, q_len, head_dim=32):
  def loss(q, k, v):
    return dot_product_attention(q, k, v, implementation=implementation).sum()

  q = jax.ShapeDtypeStruct((1, q_len, 1, head_dim), jnp.float32)
  kv = jax.ShapeDtypeStruct((1, S_IMAGE, 1, head_dim), jnp.float32)
  return jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(q, kv, kv).compile()


def _largest_array(hlo_text):
  """Element count of the largest array shape in optimized HLO text."""
  sizes = [int(np.prod([int(n) for n in dims.split(",")]))
           for dims in re.findall(r"[a-z]+[0-9]*\[([0-9]+(?:,[0-9]+)*)\]", hlo_text)]
  return max(sizes)


def test_chunked_backward_has_no_attention_sized_intermediate():
  """No array of the chunked gradient is larger than the keys themselves (kv_len * head_dim)."""
  q_len, head_dim = 64, 32
  assert _largest_array(_compiled_grad("xla", q_len).as_text()) >= q_len * S_IMAGE
  assert _largest_array(_compiled_grad("chunked", q_len).as_text()) <= S_IMAGE * head_dim


def test_chunked_backward_temp_memory_does_not_grow_with_q_times_kv():
  """Temp memory of the jitted gradient grows like q_len * kv_len for xla, not for chunked.

  The chunked backward holds [q_len, chunk] blocks plus kv-sized copies (kv_len * head_dim).
  """
  temp = {}
  for implementation, q_len in [("xla", 64), ("chunked", 64), ("chunked", 512)]:
    stats = _compiled_grad(implementation, q_len).memory_analysis()  # 512: Perceiver's latents.
    if stats is None:
      pytest.skip("memory_analysis is unavailable on this backend")
    temp[implementation, q_len] = stats.temp_size_in_bytes
  matrix_bytes = lambda q_len: q_len * S_IMAGE * 4
  assert temp["xla", 64] >= matrix_bytes(64)
  assert temp["chunked", 512] < matrix_bytes(512) / 4
  growth = temp["chunked", 512] - temp["chunked", 64]
  assert growth < (matrix_bytes(512) - matrix_bytes(64)) / 5


# --- cuDNN -----------------------------------------------------------------------------------

CUDNN_CASES = [c for c in CASES if c[0] in ("plain", "key_padding", "mask_bhts", "causal_cross",
                                            "causal_self_11ts", "v_dim")]


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN attention needs an NVIDIA GPU")
@pytest.mark.parametrize("name,t,s,h,d,dv,mask_kind,causal", CUDNN_CASES, ids=_ids(CUDNN_CASES))
def test_cudnn_matches_xla_in_bfloat16(name, t, s, h, d, dv, mask_kind, causal):
  q, k, v = _inputs(t, s, h, d, dv, dtype=jnp.bfloat16)
  mask = _mask(mask_kind, t, s, h)
  if mask is not None:  # Keep one visible key per row: cuDNN's fully masked rows are untested.
    mask = mask.at[..., 0].set(True)
  out = dot_product_attention(q, k, v, mask, causal=causal, implementation="cudnn")
  assert out.dtype == jnp.bfloat16 and out.shape == (B, t, h, dv)
  ref = dot_product_attention(q, k, v, mask, causal=causal, implementation="xla")
  np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(ref, np.float32),
                             atol=3e-2, rtol=3e-2)


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="checks the non-GPU error")
def test_cudnn_off_gpu_raises():
  q, k, v = _inputs(3, 5, 1, 8, dtype=jnp.bfloat16)
  with pytest.raises(ValueError, match="needs an NVIDIA GPU"):
    dot_product_attention(q, k, v, implementation="cudnn")


def test_cudnn_float32_raises():
  q, k, v = _inputs(3, 5, 1, 8)
  with pytest.raises(ValueError, match="implementation='cudnn'.*bfloat16 or float16"):
    dot_product_attention(q, k, v, implementation="cudnn")
  with pytest.raises(ValueError, match="bfloat16 or float16.*set dtype=jnp.bfloat16"):
    AttentionConfig("cudnn").check_dtype(jnp.float32)
  AttentionConfig("cudnn").check_dtype(jnp.bfloat16)


# --- Errors ----------------------------------------------------------------------------------


def test_bad_arguments_raise():
  q, k, v = _inputs(3, 5, 2, 4)
  bad_shapes = [(B, 6), (B, 1, 5), (B, 1, 4, 5), (B, 3, 3, 5), (3, 1, 3, 5)]  # kv_len 5, q_len 3.
  for bad_mask in (np.ones(shape, bool) for shape in bad_shapes):
    with pytest.raises(ValueError, match="mask"):
      dot_product_attention(q, k, v, jnp.asarray(bad_mask))
  with pytest.raises(ValueError, match="boolean"):
    dot_product_attention(q, k, v, jnp.ones((B, 5), jnp.float32))
  with pytest.raises(ValueError, match="no dropout_rng"):
    dot_product_attention(q, k, v, dropout_rate=0.1, deterministic=False)
  with pytest.raises(ValueError, match="q_len <= kv_len"):
    dot_product_attention(k, q, q, causal=True)  # q_len 5 > kv_len 3.
  with pytest.raises(ValueError, match="head_dim"):
    dot_product_attention(q, k[..., :3], v)


@pytest.mark.parametrize("implementation", ["xla", "chunked"])
def test_causal_mask_is_computed_not_a_constant(implementation):
  """No [q_len, kv_len] constant in the program: XLA constant-folds reductions over such a
  mask at every compile (13 s for Perceiver AR's 1,024 x 8,192 cross-attention on CPU)."""
  query, key = jnp.ones((1, 64, 1, 8)), jnp.ones((1, 256, 1, 8))
  text = jax.jit(lambda q, k: attention.dot_product_attention(
      q, k, k, causal=True, config=AttentionConfig(implementation))).lower(query, key).as_text()
  assert not [line for line in text.splitlines()
              if "constant" in line and "64x256" in line]


@pytest.mark.parametrize("settings,match", [
    (dict(implementation="flash"), r"AttentionConfig.implementation must be one of .*'flash'"),
    (dict(chunk_size=0), r"AttentionConfig.chunk_size must be >= 1, got 0"),
    (dict(dropout_rate=1.0), r"AttentionConfig.dropout_rate must be in \[0, 1\)"),
    (dict(dropout_rate=-0.1), r"AttentionConfig.dropout_rate must be in \[0, 1\)"),
    (dict(implementation="cudnn", dropout_rate=0.1), r"'cudnn'.*no attention-probability dropout"),
    (dict(implementation="chunked", sow_weights=True), r"'chunked' backend keeps no attention "
                                                       r"weights; set implementation='xla'"),
    (dict(implementation="cudnn", sow_weights=True), r"'cudnn' backend keeps no attention weights"),
])
def test_attention_config_errors(settings, match):
  with pytest.raises(ValueError, match=match):
    AttentionConfig(**settings)


# --- Attention weights -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["plain", "mask_bhts", "causal_padding", "v_dim_masked_causal"])
def test_attention_weights_are_the_softmax_the_values_get(name):
  """attention_weights equals an independent float64 softmax(q k^T / sqrt(d) + mask), sums to
  1 over the keys (0 for a query without keys), and weights the values as
  dot_product_attention does."""
  _, t, s, h, d, dv, mask_kind, causal = next(c for c in CASES if c[0] == name)
  q, k, v = _inputs(t, s, h, d, dv)
  mask = _mask(mask_kind, t, s, h)
  weights = np.asarray(attention.attention_weights(q, k, mask, causal=causal), np.float64)
  logits = np.einsum("bthd,bshd->bhts", np.asarray(q, np.float64), np.asarray(k, np.float64))
  visible = np.ones(logits.shape, bool)
  if mask is not None:
    mask = np.asarray(mask)
    visible &= mask[:, None, None, :] if mask.ndim == 2 else mask
  if causal:
    visible &= np.arange(s)[None, :] <= np.arange(t)[:, None] + (s - t)
  logits = np.where(visible, logits / np.sqrt(d), -np.inf)
  has_keys = visible.any(-1, keepdims=True)
  expected = np.exp(logits - np.where(has_keys, logits.max(-1, keepdims=True), 0))
  expected = np.where(has_keys, expected / np.maximum(expected.sum(-1, keepdims=True), 1e-300), 0)
  assert weights.shape == (B, h, t, s)
  np.testing.assert_allclose(weights, expected, atol=1e-6, rtol=1e-5)
  np.testing.assert_allclose(weights.sum(-1), has_keys[..., 0].astype(float), atol=1e-5)
  attended = np.einsum("bhts,bshd->bthd", weights, np.asarray(v, np.float64))
  np.testing.assert_allclose(dot_product_attention(q, k, v, mask, causal=causal), attended,
                             atol=2e-6, rtol=1e-5)
