"""Perceiver AR generation: the latent cache against its recomputed reference, per-row end of
sequence, and batched left-padded prompts equal to each prompt alone."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.benchmark.generation import benchmark_generation
from perceiver_jax.nn.generation import generate, pad_prompts, sequence_lengths
from perceiver_jax.nn.perceiver_ar import PerceiverAR
from random_params import random_params

MODEL = PerceiverAR(vocab_size=11, max_context=12, num_latents=4, num_channels=16, num_heads=2,
                    num_layers=2, widening_factor=2)


def _ids(seed, *shape):
  return jnp.asarray(np.random.default_rng(seed).integers(0, 11, shape), jnp.int32)


def _params(model=MODEL):
  return {"params": random_params(model, _ids(0, 2, model.max_context))}


def _latent_stack(module, x, positions):
  """The self-attention layers over latents x [b, t, d] at positions [t] -> logits [b, t, V]."""
  mask = (positions[None, :] <= positions[:, None])[None, None]
  for layer in module.layers:
    x = layer(x, positions[None], mask, True)
  return module.head(x)


def _latent_reference(model, params, prompt, steps, max_latents):
  """Greedy decoding, each step recomputed from the model's methods: the latents are every
  position since the last reset-fill (a fill takes the last num_latents positions, empty slots
  before position 0 included; a new token that would make more than max_latents latents
  triggers one), each cross-attending to the positions <= its own among the last max_context
  of the sequence when it joined (within max_context: latents_forward over the sequence)."""
  apply = jax.jit(model.apply, static_argnames="method")  # One program per method and shape.
  sequence, logits = prompt, []
  length = prompt.shape[1]
  start = length - model.num_latents  # The first latent's position (< 0: empty slots).
  joined = {q: length for q in range(max(start, 0), length)}  # Latent -> sequence length.
  for _ in range(steps):
    if length - start > max_latents:
      start = length - model.num_latents
      joined = {q: length for q in range(start, length)}
    positions = jnp.arange(length)[None]
    x = apply(params, sequence, positions, method=PerceiverAR.embed)
    k, v = apply(params, x, positions, method=PerceiverAR.cross_keys_values)
    latents = [apply(params, x[:, q:q + 1], positions[:, q:q + 1], jnp.ones((1, 1), bool), k,
                     v, positions, positions >= joined[q] - model.max_context,
                     method=PerceiverAR.cross_attend) for q in sorted(joined)]
    step_logits = apply(params, jnp.concatenate(latents, axis=1), jnp.asarray(sorted(joined)),
                        method=_latent_stack)[:, -1]
    logits.append(step_logits)
    sequence = jnp.concatenate([sequence, jnp.argmax(step_logits, -1)[:, None]], axis=1)
    joined[length] = length + 1
    length += 1
  return sequence[:, prompt.shape[1]:], jnp.stack(logits, axis=1)


def test_latent_cache_equals_its_reference_across_reset_fills_and_the_sliding_window():
  params = _params()
  prompt = _ids(4, 2, 3)  # Shorter than num_latents=4: the first fill has an empty slot.
  steps = 11  # max_latents=6: reset-fills every 2 tokens; past max_context=12 the window slides.
  tokens, logits = generate(MODEL, params, prompt, steps, temperature=0.0, return_logits=True,
                            cache="latents", max_latents=6)
  expected_tokens, expected_logits = _latent_reference(MODEL, params, prompt, steps, 6)
  np.testing.assert_array_equal(tokens, expected_tokens)
  np.testing.assert_allclose(logits, expected_logits, rtol=1e-4, atol=1e-4)
  _, sliding = generate(MODEL, params, prompt, steps, temperature=0.0, return_logits=True)
  np.testing.assert_allclose(logits[:, 0], sliding[:, 0], rtol=1e-4, atol=1e-4)  # Both fill.
  assert not np.allclose(logits, sliding, atol=1e-3)  # Up to 6 latents against 4.


@pytest.mark.parametrize("cache", ["sliding", "latents"])
def test_a_row_that_emits_eos_yields_pad_after_it_and_the_other_row_runs_on(cache):
  params = _params()
  prompt = _ids(11, 2, 5)
  free = np.asarray(generate(MODEL, params, prompt, 8, temperature=0.0, cache=cache))
  # The end-of-sequence id: a token row 0 generates at step >= 1 and row 1 never does.
  step = next(i for i in range(1, 8) if free[0, i] not in free[1])
  eos = int(free[0, step])
  first = list(free[0]).index(eos)
  tokens, logits = generate(MODEL, params, prompt, 8, temperature=0.0, cache=cache, eos_id=eos,
                            return_logits=True)
  tokens = np.asarray(tokens)
  np.testing.assert_array_equal(tokens[0], list(free[0, :first + 1]) + [0] * (7 - first))
  np.testing.assert_array_equal(tokens[1], free[1])
  np.testing.assert_array_equal(sequence_lengths(tokens, eos), [first + 1, 8])
  np.testing.assert_array_equal(logits[0, first + 1:], 0.0)


def test_pad_prompts_left_pads():
  ids, mask = pad_prompts([[5, 6], [7, 8, 9]])
  np.testing.assert_array_equal(ids, [[0, 5, 6], [7, 8, 9]])
  np.testing.assert_array_equal(mask, [[False, True, True], [True, True, True]])


@pytest.mark.parametrize("absolute_positions,cache", [(False, "sliding"), (False, "latents"),
                                                      (True, "latents")])
def test_batched_left_padded_prompts_generate_what_each_prompt_alone_does(absolute_positions,
                                                                         cache):
  model = MODEL.clone(absolute_positions=absolute_positions)
  params = _params(model)
  prompts = [np.asarray(_ids(20 + i, 1, length)[0]).tolist() for i, length in enumerate([2, 5, 7])]
  steps = 5 if absolute_positions else 9  # Rotary: 7 + 9 > 12, the window slides.
  kwargs = dict(temperature=0.0, cache=cache)
  if cache == "latents":
    kwargs["max_latents"] = 5
  ids, mask = pad_prompts(prompts)
  batched = generate(model, params, ids, steps, prompt_mask=mask, **kwargs)
  for row, prompt in enumerate(prompts):
    alone = generate(model, params, jnp.asarray([prompt], jnp.int32), steps, **kwargs)
    np.testing.assert_array_equal(batched[row], alone[0], err_msg=f"prompt {row}")


def test_generation_errors_name_the_argument():
  params, prompt = _params(), _ids(0, 1, 3)
  for kwargs, match in [(dict(cache="ring"), "cache must be one of"),
                        (dict(cache="latents", max_latents=3), "max_latents=3 must be in"),
                        (dict(cache="latents", max_latents=13), "max_latents=13 must be in"),
                        (dict(max_latents=6), "max_latents=6 bounds cache='latents' only"),
                        (dict(eos_id=11), "eos_id=11"),
                        (dict(prompt_mask=jnp.asarray([[True, True, False]])), "prompt_mask"),
                        (dict(prompt_mask=jnp.asarray([[True, False, True]])), "prompt_mask")]:
    with pytest.raises(ValueError, match=match):
      generate(MODEL, params, prompt, 2, temperature=0.0, **kwargs)
  with pytest.raises(ValueError, match="no empty prompt"):
    pad_prompts([[1], []])
  krasserm_like = MODEL.clone(latent_kv_query_norm=True)  # Sliding stays exact, latents not.
  with pytest.raises(ValueError, match="cache='latents' does not support.*latent_kv_query_norm"):
    generate(krasserm_like, params, prompt, 2, temperature=0.0, cache="latents")


def test_the_generation_benchmark_runs_on_a_tiny_model():
  rows = benchmark_generation(MODEL, _params(), _ids(1, 1, 6), 3, 1)
  assert [row["cache"] for row in rows] == ["sliding", "latents"]
  assert all(row["new_tokens"] == 3 and row["tokens_per_s"] > 0 and row["compile_s"] > 0
             for row in rows)
