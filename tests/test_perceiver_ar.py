"""Perceiver AR: shapes, exact causality, padding, and cached generation equal to recomputing."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver_jax.nn.attention import AttentionConfig
from perceiver_jax.nn.generation import generate, sample_logits
from perceiver_jax.nn.model_stats import count_params, flops, param_count
from perceiver_jax.nn.perceiver_ar import PerceiverAR, token_positions
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
  # Row i: the gradient of latent i's summed logits, all four in one program.
  grads = jax.jit(jax.jacrev(lambda x: MODEL.apply(params, x, method=logits_from_embeddings)[
      0].sum(-1)))(x)
  for latent in range(4):
    position = length - 4 + latent
    grad_norms = np.abs(np.asarray(grads[latent, 0])).sum(-1)
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


@functools.partial(jax.jit, static_argnums=0)
def _logits(model, params, ids):
  """model.apply as one program per model and length (run op by op, each op compiles)."""
  return model.apply(params, ids)


def _recompute(model, params, prompt, steps):
  """Greedy decoding that reruns the model on the last max_context tokens at every step."""
  sequence, logits = prompt, []
  for _ in range(steps):
    window = sequence[:, -model.max_context:]
    step_logits = _logits(model, params, window)[:, -1]
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
  grad = lambda model: jax.jit(jax.grad(lambda p: model.apply(p, ids).sum()))(params)
  np.testing.assert_allclose(grad(MODEL.clone(remat=True))["params"]["logits"]["kernel"],
                             grad(MODEL)["params"]["logits"]["kernel"], rtol=1e-5, atol=1e-6)
  out = _logits(MODEL.clone(dtype=jnp.bfloat16), params, ids)
  assert out.dtype == jnp.bfloat16
  np.testing.assert_allclose(out.astype(np.float32), _logits(MODEL, params, ids), rtol=0.1,
                             atol=0.1)


@pytest.mark.parametrize("options,length", [
    (dict(absolute_positions=False), 10), (dict(absolute_positions=True), 3),
    (dict(tied_embeddings=True, final_norm=False, output_bias=False), 10),
    (dict(qkv_bias=False, self_attention_out_bias=False, mlp_bias=False,
          latent_kv_query_norm=True, cross_attention_dropout=0.5), 10)])
def test_analytic_param_count_equals_init(options, length):
  model = MODEL.clone(**options)
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


# A model with every krasserm option (no left-over defaults), small enough to slide its window.
KRASSERM_LIKE = MODEL.clone(tied_embeddings=True, final_norm=False, latent_kv_query_norm=True,
                            num_self_attention_rotary_layers=1, qkv_bias=False,
                            self_attention_out_bias=False, mlp_bias=False,
                            activation="gelu_exact", rotary_fraction=1.0)


def test_prefix_dropout_gathers_the_kept_positions_and_equals_masking_the_dropped():
  model = MODEL.clone(cross_attention_dropout=0.5)
  sowing = model.clone(attention=AttentionConfig(sow_weights=True))
  params = _params()
  ids = _ids(10, 2, 11)  # 7 prefix positions: each row keeps 7 - int(3.5) = 4.
  pad_mask = jnp.asarray([[True] * 11, [False] * 2 + [True] * 9])
  out = MODEL.apply(params, ids, pad_mask)
  np.testing.assert_array_equal(model.apply(params, ids, pad_mask), out)  # Deterministic.
  rng = {"dropout": jax.random.PRNGKey(3)}
  np.testing.assert_array_equal(
      MODEL.apply(params, ids, pad_mask, deterministic=False, rngs=rng), out)  # Rate 0.
  train, state = sowing.apply(params, ids, pad_mask, deterministic=False, rngs=rng,
                              mutable="intermediates")
  kept = state["intermediates"]["cross_attention_kept_prefix"][0]
  weights = state["intermediates"]["cross_attention"]["attention_weights"][0]
  assert kept.shape == (2, 4) and weights.shape == (2, 2, 4, 4 + 4)  # Keys: kept + latents.
  assert np.all(np.diff(kept, axis=1) > 0) and np.all((kept >= 0) & (kept < 7))
  # The reference: every position's keys, with exactly the dropped prefix positions masked.
  keep = np.zeros((2, 11), bool)
  keep[np.arange(2)[:, None], kept] = True
  keep[:, 7:] = True
  positions = token_positions(pad_mask)

  def masked(module):
    x = module.embed(ids, positions)
    k, v = module.cross_keys_values(x, positions)
    return module.latents_forward(x[:, 7:], positions[:, 7:], pad_mask[:, 7:], k, v, positions,
                                  pad_mask & keep)

  np.testing.assert_allclose(train, model.apply(params, method=masked), rtol=1e-5, atol=1e-6)
  assert not np.allclose(train, out, atol=1e-3)
  other = model.apply(params, ids, pad_mask, deterministic=False,
                      rngs={"dropout": jax.random.PRNGKey(4)})
  assert not np.allclose(other, train, atol=1e-3)


def test_rotary_in_the_first_self_attention_layers_only():
  ids = _ids(11, 2, 10)
  params = _params()
  outs = [MODEL.clone(num_self_attention_rotary_layers=n).apply(params, ids) for n in (-1, 0, 1, 2)]
  np.testing.assert_array_equal(outs[3], outs[0])  # Both layers: as every layer.
  for a, b in ((0, 1), (0, 2), (1, 2)):
    assert not np.allclose(outs[a], outs[b], atol=1e-3), (a, b)


def test_tied_logits_and_optional_final_norm_and_output_bias():
  ids = _ids(12, 2, 10)
  wide = MODEL.clone(vocab_size=16)  # vocab = channels: an identity logits kernel reads x.
  params = _params(wide.clone(tied_embeddings=True))["params"]
  assert "logits" not in params and params["logits_bias"].shape == (16,)
  hidden = {final_norm: wide.clone(final_norm=final_norm, output_bias=False).apply(
      {"params": dict(params, logits={"kernel": jnp.eye(16)})}, ids)
            for final_norm in (True, False)}
  x = np.asarray(hidden[False], np.float64)
  normed = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
  np.testing.assert_allclose(hidden[True], normed * params["final_norm"]["scale"]
                             + params["final_norm"]["bias"], rtol=1e-4, atol=1e-5)
  embedding = np.asarray(params["embedding"]["embedding"], np.float64)
  for final_norm, output_bias in ((True, True), (False, False)):
    model = wide.clone(tied_embeddings=True, final_norm=final_norm, output_bias=output_bias)
    model_params = _params(model)["params"]
    assert ("final_norm" in model_params) == final_norm
    assert ("logits_bias" in model_params) == output_bias
    expected = np.asarray(hidden[final_norm], np.float64) @ embedding.T + (
        np.asarray(params["logits_bias"]) if output_bias else 0)
    np.testing.assert_allclose(model.apply({"params": params}, ids), expected, rtol=1e-4,
                               atol=1e-5)
  assert "bias" not in _params(MODEL.clone(output_bias=False))["params"]["logits"]


def test_left_padded_rows_start_at_position_zero_also_with_absolute_positions():
  model = MODEL.clone(absolute_positions=True)
  params = _params(model)
  ids = _ids(13, 1, 9)
  padded = jnp.concatenate([jnp.full((1, 3), 5, jnp.int32), ids], axis=1)
  mask = jnp.arange(12)[None] >= 3
  np.testing.assert_array_equal(token_positions(mask), [[0] * 4 + list(range(1, 9))])
  np.testing.assert_allclose(model.apply(params, padded, mask), model.apply(params, ids),
                             rtol=1e-5, atol=1e-6)
  # A right-padded row (a dataset's last row) keeps its tokens at positions 0, 1, ...: its real
  # latent computes what it does at those positions with the pads only masked.
  right = jnp.concatenate([ids, jnp.full((1, 3), 5, jnp.int32)], axis=1)
  right_mask = jnp.arange(12)[None] < 9
  np.testing.assert_array_equal(token_positions(right_mask), [list(range(9)) + [8] * 3])
  arange = jnp.arange(12)[None]

  def masked(module):
    x = module.embed(right, arange)
    k, v = module.cross_keys_values(x, arange)
    return module.latents_forward(x[:, 8:], arange[:, 8:], right_mask[:, 8:], k, v, arange,
                                  right_mask)

  np.testing.assert_allclose(model.apply(params, right, right_mask)[:, 0],
                             model.apply(params, method=masked)[:, 0], rtol=1e-5, atol=1e-6)
  prompt = ids[:, :4]
  padded = jnp.concatenate([jnp.zeros((1, 3), jnp.int32), prompt], axis=1)
  tokens = generate(model, params, padded, 4, temperature=0.0, prompt_mask=jnp.arange(7)[None] >= 3)
  np.testing.assert_array_equal(tokens, generate(model, params, prompt, 4, temperature=0.0))


def test_krasserm_options_generate_as_recomputing_also_past_the_context():
  params = _params(KRASSERM_LIKE)
  prompt = _ids(14, 2, 7)
  tokens, logits = generate(KRASSERM_LIKE, params, prompt, 9, temperature=0.0, return_logits=True)
  expected_tokens, expected_logits = _recompute(KRASSERM_LIKE, params, prompt, 9)
  np.testing.assert_array_equal(tokens, expected_tokens)
  np.testing.assert_allclose(logits, expected_logits, rtol=1e-4, atol=1e-4)
  # The latents' keys come from the query norm: changing the kv norm changes only the prefix.
  assert not np.allclose(KRASSERM_LIKE.apply(params, prompt),
                         KRASSERM_LIKE.clone(latent_kv_query_norm=False).apply(params, prompt),
                         atol=1e-3)


def test_option_errors_name_the_field():
  with pytest.raises(ValueError, match="cross_attention_dropout"):
    PerceiverAR(cross_attention_dropout=1.0)
  with pytest.raises(ValueError, match="num_self_attention_rotary_layers"):
    PerceiverAR(num_layers=2, num_self_attention_rotary_layers=3)
  with pytest.raises(ValueError, match="num_self_attention_rotary_layers"):
    PerceiverAR(rotary_fraction=0.0, num_self_attention_rotary_layers=1)


def test_the_task_config_exposes_every_field():
  from perceiver_jax.tasks import language_modeling  # pylint: disable=import-outside-toplevel
  config = language_modeling.tiny_config()
  fields = set(PerceiverAR.__dataclass_fields__) - {"parent", "name", "dtype", "param_dtype"}
  assert set(config.perceiver_ar) == fields
  config.perceiver_ar.cross_attention_dropout = 0.5
  config.perceiver_ar.num_self_attention_rotary_layers = 1
  model = language_modeling.build(config)
  assert (model.cross_attention_dropout, model.num_self_attention_rotary_layers) == (0.5, 1)
