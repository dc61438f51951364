"""Perceiver AR: shapes, exact causality, padding, and cached generation equal to recomputing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver_jax.nn.generation import generate, sample_logits
from perceiver_jax.nn.model_stats import count_params, flops, param_count
from perceiver_jax.nn.perceiver_ar import PerceiverAR
from random_params import random_params

MODEL = PerceiverAR(vocab_size=11, max_context=12, num_latents=4, num_channels=16, num_heads=2,
                    num_layers=2, widening_factor=2)


def _ids(seed, *shape):
  return jnp.asarray(np.random.default_rng(seed).integers(0, 11, shape), jnp.int32)


def _params(model=MODEL, length=12):
  return {"params": random_params(model, _ids(0, 2, length))}


def test_logits_for_the_last_latents_and_zero_initialised_head():
  ids = _ids(1, 2, 9)
  variables = MODEL.init(jax.random.PRNGKey(0), ids)
  out = MODEL.apply(variables, ids)
  assert out.shape == (2, 4, 11)
  np.testing.assert_array_equal(out, 0.0)  # Zero-initialised logits layer.
  assert MODEL.apply(variables, ids[:, :3]).shape == (2, 3, 11)  # Fewer tokens than latents.
  assert set(variables["params"]) >= {"cross_attention", "self_attention_0", "self_attention_1",
                                      "final_norm", "logits", "embedding"}


def test_gradients_never_flow_from_later_inputs():
  length = 10
  params = _params()
  ids = _ids(2, 1, length)
  positions = jnp.arange(length)[None]

  def logits_from_embeddings(module, x):
    k, v = module.cross_keys_values(x, positions)
    valid = jnp.ones((1, length), bool)
    return module.latents_forward(x[:, -4:], positions[:, -4:], valid[:, -4:], k, v, positions,
                                  valid)

  x = MODEL.apply(params, ids, positions, method=PerceiverAR.embed)
  for latent in range(4):
    position = length - 4 + latent
    grad = jax.grad(lambda x: MODEL.apply(params, x, method=logits_from_embeddings)[
        0, latent].sum())(x)
    grad_norms = np.abs(np.asarray(grad[0])).sum(-1)
    assert np.all(grad_norms[position + 1:] == 0.0), (latent, grad_norms)
    assert np.all(grad_norms[:position + 1] > 0.0)  # Every earlier input matters.


def test_padding_is_ignored_by_the_real_tokens():
  params = _params()
  ids = _ids(3, 2, 10)
  pad_mask = jnp.arange(10)[None] >= 3  # Left padding of 3.
  out = MODEL.apply(params, ids, pad_mask=jnp.broadcast_to(pad_mask, (2, 10)))
  other = ids.at[:, :3].set(7)
  out_other = MODEL.apply(params, other, pad_mask=jnp.broadcast_to(pad_mask, (2, 10)))
  np.testing.assert_allclose(out, out_other, rtol=1e-5, atol=1e-6)
  assert not np.allclose(MODEL.apply(params, ids), MODEL.apply(params, other))


def _recompute(model, params, prompt, steps):
  """Greedy decoding that reruns the model on the last max_context tokens at every step."""
  sequence, logits = prompt, []
  for _ in range(steps):
    window = sequence[:, -model.max_context:]
    step_logits = model.apply(params, window)[:, -1]
    logits.append(step_logits)
    sequence = jnp.concatenate([sequence, jnp.argmax(step_logits, -1)[:, None]], axis=1)
  return sequence[:, prompt.shape[1]:], jnp.stack(logits, axis=1)


@pytest.mark.parametrize("prompt_length", [2, 7])
def test_cached_greedy_generation_equals_recomputing_also_past_the_context(prompt_length):
  params = _params()
  prompt = _ids(4, 2, prompt_length)
  steps = 14  # The sequence grows past max_context=12, so the window slides.
  tokens, logits = generate(MODEL, params, prompt, steps, temperature=0.0, return_logits=True)
  expected_tokens, expected_logits = _recompute(MODEL, params, prompt, steps)
  np.testing.assert_array_equal(tokens, expected_tokens)
  np.testing.assert_allclose(logits, expected_logits, rtol=1e-4, atol=1e-4)


def test_generation_with_a_left_padded_prompt_matches_the_unpadded_prompt():
  params = _params()
  prompt = _ids(5, 1, 5)
  padded = jnp.concatenate([jnp.zeros((1, 3), jnp.int32), prompt], axis=1)
  mask = jnp.arange(8)[None] >= 3
  tokens = generate(MODEL, params, padded, 5, temperature=0.0, prompt_mask=mask)
  # The padded prompt's positions are shifted by 3; rotary attention is relative, so the
  # tokens equal those generated from the bare prompt.
  np.testing.assert_array_equal(tokens, generate(MODEL, params, prompt, 5, temperature=0.0))


def test_sampling_restrictions():
  logits = jnp.asarray(np.random.default_rng(6).normal(size=(3, 11)), jnp.float32)
  greedy = jnp.argmax(logits, -1)
  rng = jax.random.PRNGKey(0)
  np.testing.assert_array_equal(sample_logits(logits, rng, 1.0, top_k=1), greedy)
  np.testing.assert_array_equal(sample_logits(logits, rng, 1.0, top_p=1e-6), greedy)
  top3 = np.asarray(jax.lax.top_k(logits, 3)[1])
  for seed in range(20):
    drawn = np.asarray(sample_logits(logits, jax.random.PRNGKey(seed), 2.0, top_k=3))
    assert all(d in row for d, row in zip(drawn, top3))
  params = _params()
  prompt = _ids(7, 2, 4)
  a = generate(MODEL, params, prompt, 6, rng=jax.random.PRNGKey(1), top_k=4)
  np.testing.assert_array_equal(a, generate(MODEL, params, prompt, 6, rng=jax.random.PRNGKey(1),
                                               top_k=4))


def test_errors_name_the_field():
  with pytest.raises(ValueError, match="num_latents"):
    PerceiverAR(max_context=4, num_latents=8)
  with pytest.raises(ValueError, match="num_heads"):
    PerceiverAR(num_channels=10, num_heads=4)
  with pytest.raises(ValueError, match="activation"):
    PerceiverAR(activation="swish")
  with pytest.raises(ValueError, match="rotary_fraction"):
    PerceiverAR(rotary_fraction=1.5)
  with pytest.raises(ValueError, match="max_context"):
    MODEL.init(jax.random.PRNGKey(0), _ids(0, 1, 13))
  with pytest.raises(ValueError, match="absolute_positions"):
    model = PerceiverAR(vocab_size=11, max_context=12, num_latents=4, num_channels=16,
                        num_heads=2, num_layers=1, absolute_positions=True)
    generate(model, _params(model), _ids(0, 1, 8), 6, temperature=0.0)
  with pytest.raises(ValueError, match="rng"):
    generate(MODEL, _params(), _ids(0, 1, 3), 2, temperature=1.0)


def test_remat_and_bfloat16_keep_the_function():
  params = _params()
  ids = _ids(8, 2, 10)
  grad = lambda model: jax.grad(lambda p: model.apply(p, ids).sum())(params)
  np.testing.assert_allclose(grad(MODEL.clone(remat=True))["params"]["logits"]["kernel"],
                             grad(MODEL)["params"]["logits"]["kernel"], rtol=1e-5, atol=1e-6)
  out = MODEL.clone(dtype=jnp.bfloat16).apply(params, ids)
  assert out.dtype == jnp.bfloat16
  np.testing.assert_allclose(out.astype(np.float32), MODEL.apply(params, ids), rtol=0.1, atol=0.1)


@pytest.mark.parametrize("absolute_positions,length", [(False, 10), (True, 3)])
def test_analytic_param_count_equals_init(absolute_positions, length):
  model = MODEL.clone(absolute_positions=absolute_positions)
  assert param_count(model, (length,)) == count_params(jax.eval_shape(
      model.init, jax.random.PRNGKey(0), _ids(9, 1, length)))


def test_analytic_flops_match_xla_where_matmuls_dominate():
  model = PerceiverAR(max_context=128, num_latents=32, num_channels=128, num_heads=4,
                      num_layers=2)
  ids = jnp.zeros((1, 128), jnp.int32)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), ids)
  xla_flops = jax.jit(model.apply).lower(variables, ids).compile().cost_analysis()["flops"]
  assert abs(flops(model, (128,)) - xla_flops) / xla_flops < 0.05


def test_default_vocabulary_is_the_bytes_tokenizers():
  from perceiver_jax.data.tokenizer import VOCAB_SIZE  # pylint: disable=import-outside-toplevel
  assert PerceiverAR(max_context=12, num_latents=4).vocab_size == VOCAB_SIZE
