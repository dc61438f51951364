"""Optimiser tests: schedules, decay mask, AdamW / LAMB / SGD steps against numpy, clipping."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from perceiver_jax import PerceiverEncoder
from perceiver_jax.train.optim import default_config, make_optimizer, weight_decay_mask

PEAK = 0.1


def _config(**overrides):
  c = default_config()
  c.learning_rate = PEAK
  c.update(overrides)
  return c


def _cosine(progress, end):
  return PEAK * (end + (1 - end) * 0.5 * (1 + np.cos(np.pi * progress)))


def _schedule(config, num_train_steps=100):
  return make_optimizer(config, num_train_steps)[1]


def _formula(config, step, num_train_steps=100):
  """The schedule's closed form at an integer step, in float64 numpy."""
  warmup, kind = config.warmup_steps, config.schedule
  if step < warmup:
    return PEAK * step / warmup
  if kind == "constant":
    return PEAK
  if kind == "step":
    passed = sum(step >= int(f * num_train_steps) for f in config.decay_boundaries)
    return PEAK * config.decay_factor ** passed
  start = warmup if kind == "warmup_cosine" else int(config.constant_fraction * num_train_steps)
  progress = np.clip((step - start) / (num_train_steps - start), 0.0, 1.0)
  return _cosine(progress, config.end_learning_rate_factor)


SCHEDULE_CASES = [
    (dict(schedule="constant", warmup_steps=10),
     {0: 0.0, 5: PEAK / 2, 10: PEAK, 99: PEAK, 150: PEAK}),
    (dict(schedule="warmup_cosine", warmup_steps=10, end_learning_rate_factor=0.1),
     {0: 0.0, 4: 0.4 * PEAK, 10: PEAK, 55: _cosine(0.5, 0.1), 70: _cosine(60 / 90, 0.1),
      100: 0.1 * PEAK, 150: 0.1 * PEAK}),
    (dict(schedule="warmup_cosine", warmup_steps=0),
     {0: PEAK, 25: _cosine(0.25, 0.0), 50: PEAK / 2, 100: 0.0}),
    (dict(schedule="constant_cosine", warmup_steps=10, constant_fraction=0.5),
     {0: 0.0, 5: PEAK / 2, 10: PEAK, 49: PEAK, 50: PEAK, 75: PEAK / 2, 90: _cosine(0.8, 0.0),
      100: 0.0}),
    (dict(schedule="step", warmup_steps=5, decay_boundaries=(0.7, 0.85, 0.95),
          decay_factor=0.1),
     {0: 0.0, 1: PEAK / 5, 5: PEAK, 69: PEAK, 70: PEAK * 0.1, 84: PEAK * 0.1, 85: PEAK * 0.01,
      94: PEAK * 0.01, 95: PEAK * 1e-3, 100: PEAK * 1e-3}),
]


@pytest.mark.parametrize("overrides,expected", SCHEDULE_CASES)
def test_schedule_matches_closed_form(overrides, expected):
  config = _config(**overrides)
  schedule = _schedule(config)
  every = np.arange(151)
  np.testing.assert_allclose(schedule(jnp.asarray(every)), [_formula(config, s) for s in every],
                             rtol=1e-5, atol=1e-7 * PEAK)  # float32 near a cosine's end.
  steps = np.array(list(expected), np.int32)
  np.testing.assert_allclose(schedule(jnp.asarray(steps)), list(expected.values()),
                             rtol=1e-5, atol=1e-9)
  # The optimiser calls it with a scalar int32 count inside jit.
  np.testing.assert_allclose(jax.jit(schedule)(jnp.int32(steps[-1])), expected[steps[-1]],
                             rtol=1e-5, atol=1e-9)


def test_decay_mask_on_encoder_params():
  encoder = PerceiverEncoder(num_latents=4, num_latent_channels=8, num_self_attention_blocks=1,
                             num_self_attention_layers_per_block=1, num_self_attention_heads=2)
  params = encoder.init(jax.random.PRNGKey(0), jnp.zeros((1, 5, 3)))["params"]
  mask = weight_decay_mask(params)
  assert jax.tree_util.tree_structure(mask) == jax.tree_util.tree_structure(params)
  flat = {jax.tree_util.keystr(path): m for path, m in jax.tree_util.tree_leaves_with_path(mask)}
  assert flat["['latents']"] is True
  assert flat["['cross_attention_first']['input_norm']['scale']"] is False
  assert flat["['cross_attention_first']['input_norm']['bias']"] is False
  assert flat["['cross_attention_first']['attention']['query']['kernel']"] is True
  assert flat["['self_attention_block_shared']['layer_0']['mlp']['Dense_0']['bias']"] is False
  for name, decayed in flat.items():
    assert decayed == (name.endswith("['kernel']") or name == "['latents']"), name
  assert sum(flat.values()) == 1 + 6 + 6  # latents; q, k, v, out and 2 MLP kernels per layer


def test_decay_mask_on_boxed_params():
  dense = nn.Dense(3, kernel_init=nn.with_partitioning(nn.initializers.ones, (None, "model")),
                   bias_init=nn.with_partitioning(nn.initializers.zeros, ("model",)))
  params = dense.init(jax.random.PRNGKey(0), jnp.zeros((1, 2)))["params"]
  mask = weight_decay_mask(params)
  assert isinstance(mask["kernel"], nn.Partitioned)
  assert mask["kernel"].value is True and mask["bias"].value is False


def _f32(tree):
  return jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), tree)


def _params_and_grads():
  """Float64 numpy params (a kernel, a bias, a norm scale, latents) and two random grads."""
  rng = np.random.default_rng(0)
  params = {"dense": {"kernel": rng.normal(size=(3, 4)), "bias": rng.normal(size=(4,))},
            "norm": {"scale": 1.0 + rng.normal(size=(4,))}, "latents": rng.normal(size=(2, 4))}
  grads = [jax.tree_util.tree_map(lambda p: rng.normal(size=p.shape), params) for _ in range(2)]
  return params, grads


def _run_optimizer(config, params, grads, num_train_steps=2):
  optimizer, _ = make_optimizer(config, num_train_steps)
  params = _f32(params)
  state = optimizer.init(params)
  update = jax.jit(optimizer.update)
  for g in grads:
    updates, state = update(_f32(g), state, params)
    params = optax.apply_updates(params, updates)
  return params


# Two steps on the 'step' schedule: the rate is PEAK at step 0 and PEAK * 0.5 at step 1, so
# the tests also check that the schedule is read at the optimiser's step count.
STEP_LR = dict(schedule="step", warmup_steps=0, decay_boundaries=(0.5,), decay_factor=0.5)
RATES = (PEAK, PEAK * 0.5)
DECAYED = {"dense": {"kernel": 1.0, "bias": 0.0}, "norm": {"scale": 0.0}, "latents": 1.0}


def _numpy_steps(params, grads, direction):
  """Two steps p <- p - lr_t * direction(t, state, g, p) per leaf, in float64 numpy."""
  leaves, treedef = jax.tree_util.tree_flatten(params)
  decayed = jax.tree_util.tree_leaves(DECAYED)
  states = [{} for _ in leaves]
  for t, (lr, g) in enumerate(zip(RATES, grads), start=1):
    leaves = [p - lr * direction(t, s, g_, p, d)
              for p, s, g_, d in zip(leaves, states, jax.tree_util.tree_leaves(g), decayed)]
  return jax.tree_util.tree_unflatten(treedef, leaves)


def _adam_direction(b1, b2, eps, wd):
  """Bias-corrected Adam direction plus masked decoupled weight decay; updates `state`."""
  def direction(t, state, g, p, decayed):
    state["m"] = b1 * state.get("m", 0.0) + (1 - b1) * g
    state["v"] = b2 * state.get("v", 0.0) + (1 - b2) * g * g
    m_hat, v_hat = state["m"] / (1 - b1**t), state["v"] / (1 - b2**t)
    return m_hat / (np.sqrt(v_hat) + eps) + wd * decayed * p
  return direction


def _assert_trees_close(got, want):
  chex.assert_trees_all_close(got, want, rtol=2e-5, atol=1e-6)


ADAM_HYPER = dict(b1=0.8, b2=0.95, eps=1e-3, weight_decay=0.3)


def test_adamw_two_steps_match_numpy():
  params, grads = _params_and_grads()
  got = _run_optimizer(_config(name="adamw", **ADAM_HYPER, **STEP_LR), params, grads)
  want = _numpy_steps(params, grads, _adam_direction(0.8, 0.95, 1e-3, 0.3))
  _assert_trees_close(got, want)


def test_lamb_two_steps_match_numpy():
  params, grads = _params_and_grads()
  adam = _adam_direction(0.8, 0.95, 1e-3, 0.3)

  def lamb(t, state, g, p, decayed):
    u = adam(t, state, g, p, decayed)
    return np.linalg.norm(p) / np.linalg.norm(u) * u  # per-leaf trust ratio
  got = _run_optimizer(_config(name="lamb", **ADAM_HYPER, **STEP_LR), params, grads)
  _assert_trees_close(got, _numpy_steps(params, grads, lamb))
  # The trust ratio matters: plain AdamW with the same numbers lands elsewhere.
  adamw = _numpy_steps(params, grads, _adam_direction(0.8, 0.95, 1e-3, 0.3))
  assert not np.allclose(got["dense"]["kernel"], adamw["dense"]["kernel"], atol=1e-3)


def test_sgd_two_steps_match_numpy():
  params, grads = _params_and_grads()

  def sgd(t, state, g, p, decayed):
    state["m"] = 0.9 * state.get("m", 0.0) + g
    return state["m"] + 0.3 * decayed * p
  got = _run_optimizer(_config(name="sgd", momentum=0.9, weight_decay=0.3, **STEP_LR),
                       params, grads)
  _assert_trees_close(got, _numpy_steps(params, grads, sgd))


@pytest.mark.parametrize("clip_norm", [1.0, 0.0, None])
def test_clipping_limits_global_norm(clip_norm):
  params, grads = _params_and_grads()
  big = jax.tree_util.tree_map(lambda g: 10.0 * g, grads[0])
  norm = float(optax.tree.norm(_f32(big)))
  assert norm > 1.0
  config = _config(name="sgd", momentum=0.0, weight_decay=0.0, learning_rate=1.0,
                   schedule="constant", clip_norm=clip_norm)
  optimizer, _ = make_optimizer(config, 10)
  updates, _ = optimizer.update(_f32(big), optimizer.init(_f32(params)), _f32(params))
  scale = 1.0 / norm if clip_norm else 1.0  # None or <= 0 disables clipping
  _assert_trees_close(updates, jax.tree_util.tree_map(lambda g: -scale * g, big))
  small = jax.tree_util.tree_map(lambda g: 0.01 * g / norm, big)  # norm 0.01: untouched
  updates, _ = optimizer.update(_f32(small), optimizer.init(_f32(params)), _f32(params))
  _assert_trees_close(updates, jax.tree_util.tree_map(lambda g: -g, small))


BAD_VALUES = [
    ("name", "adam"), ("learning_rate", 0.0), ("learning_rate", -1e-3), ("learning_rate", "1e-3"),
    ("b1", 1.0), ("b2", -0.1), ("eps", 0.0), ("weight_decay", -0.1), ("momentum", 1.5),
    ("schedule", "cosine"), ("warmup_steps", -1), ("warmup_steps", 100), ("warmup_steps", 2.5),
    ("end_learning_rate_factor", 1.5), ("constant_fraction", 1.0), ("decay_boundaries", (0.0,)),
    ("decay_boundaries", (0.9, 0.7)), ("decay_boundaries", 0.7), ("decay_factor", 0.0),
    ("clip_norm", "big"),
]


@pytest.mark.parametrize("key,value", BAD_VALUES)
def test_bad_values_raise_naming_the_key(key, value):
  config = default_config().to_dict()  # a plain dict: no ConfigDict type locking
  config[key] = value
  with pytest.raises(ValueError, match=rf"config\.optimizer\.{key} must be"):
    make_optimizer(config, num_train_steps=100)


def test_bad_structure_and_steps_raise():
  with pytest.raises(ValueError, match=r"warmup_steps must be <= constant_fraction"):
    _schedule(_config(schedule="constant_cosine", warmup_steps=60))
  with pytest.raises(ValueError, match=r"warmup_steps must be <= the first decay boundary"):
    _schedule(_config(schedule="step", warmup_steps=80))
  with pytest.raises(ValueError, match=r"unknown keys \['lr'\]"):
    make_optimizer(dict(default_config().to_dict(), lr=1e-3), 100)
  partial = default_config().to_dict()
  del partial["clip_norm"]
  with pytest.raises(ValueError, match=r"lacks keys \['clip_norm'\]"):
    make_optimizer(partial, 100)
  with pytest.raises(ValueError, match=r"num_train_steps must be an int >= 1"):
    _schedule(default_config(), 0)
