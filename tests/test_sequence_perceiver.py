"""SequencePerceiver (Edifice's Perceiver): the encoder, a LayerNorm and a mean over latents,
with Edifice's defaults, the encoder's weight sharing, masks, dropout and analytic stats."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver_jax import PerceiverEncoder, SequencePerceiver
from perceiver_jax.nn.layers import layer_norm
from perceiver_jax.nn.model_stats import count_params, flops, param_count
from random_params import random_data as _data, random_params as _params

B, S, F = 2, 11, 6  # batch, sequence length, input features.
SMALL = dict(input_dim=F, latent_dim=16, num_latents=4, num_layers=2, num_heads=2, dropout=0.0)


def _init_count(model, shape):
  return count_params(jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.ones((1,) + shape)))


def test_defaults_are_edifices_recommended_configuration():
  assert SequencePerceiver.recommended_defaults() == dict(
      latent_dim=256, num_latents=64, num_layers=4, num_cross_layers=1, num_heads=4, dropout=0.1)
  model = SequencePerceiver(input_dim=F)
  assert model.output_size == model.latent_dim == 256
  out = jax.eval_shape(model.init_with_output, jax.random.PRNGKey(0), jnp.ones((B, S, F)))[0]
  assert out.shape == (B, 256)


def test_is_the_encoder_then_layer_norm_then_mean_over_latents():
  model = SequencePerceiver(**SMALL, num_cross_layers=2)
  x = _data(0, B, S, F)
  params = _params(model, x)
  encoder = PerceiverEncoder(
      num_latents=4, num_latent_channels=16, num_cross_attention_layers=2,
      num_self_attention_blocks=2, num_self_attention_layers_per_block=1,
      num_cross_attention_heads=2, num_self_attention_heads=2, cross_attention_qk_channels=16,
      cross_attention_v_channels=16, cross_attention_widening_factor=4,
      self_attention_widening_factor=4)
  latents = encoder.apply({"params": params["encoder"]}, x)
  normed = layer_norm(jnp.float32).apply({"params": params["final_norm"]}, latents)
  out = model.apply({"params": params}, x)
  assert out.shape == (B, model.output_size)
  np.testing.assert_allclose(out, normed.mean(axis=1), rtol=1e-6, atol=1e-6)


def test_cross_attentions_after_the_first_and_the_self_attention_groups_share_weights():
  """Two cross-attentions with a layer each, or four: the same parameters, twice the FLOPs."""
  two = SequencePerceiver(**dict(SMALL, num_layers=2), num_cross_layers=2)
  four = SequencePerceiver(**dict(SMALL, num_layers=4), num_cross_layers=4)
  assert param_count(two, (S, F)) == param_count(four, (S, F)) == _init_count(four, (S, F))
  encoder_params = jax.eval_shape(four.init, jax.random.PRNGKey(0), jnp.ones((1, S, F)))
  assert set(encoder_params["params"]["encoder"]) == {
      "latents", "cross_attention_first", "cross_attention_shared", "self_attention_block_shared"}
  assert flops(four, (S, F)) == 2 * flops(two, (S, F))


def test_padded_positions_do_not_change_the_output():
  model = SequencePerceiver(**SMALL)
  x = _data(1, B, S, F)
  params = _params(model, x)
  pad_mask = jnp.asarray(np.arange(S)[None, :] < np.array([[7], [S]]))
  noisy = jnp.where(pad_mask[..., None], x, 100.0 * _data(2, B, S, F))
  out = model.apply({"params": params}, x, pad_mask)
  np.testing.assert_allclose(model.apply({"params": params}, noisy, pad_mask), out, atol=1e-5)
  np.testing.assert_allclose(model.apply({"params": params}, x[:1, :7]), out[:1], atol=1e-5)
  assert not np.allclose(model.apply({"params": params}, noisy), out, atol=1e-3)


def test_dropout_is_off_when_deterministic_and_follows_the_rng_otherwise():
  model = SequencePerceiver(**dict(SMALL, dropout=0.5))
  x = _data(3, B, S, F)
  variables = {"params": _params(model, x)}
  run = lambda seed: model.apply(variables, x, deterministic=False,
                                 rngs={"dropout": jax.random.PRNGKey(seed)})
  np.testing.assert_array_equal(model.apply(variables, x), model.apply(variables, x))
  np.testing.assert_array_equal(run(0), run(0))
  assert not np.allclose(run(0), run(1))
  assert not np.allclose(run(0), model.apply(variables, x))


@pytest.mark.parametrize("settings", [
    {}, dict(num_cross_layers=2), dict(num_layers=3, num_heads=1, latent_dim=8)])
def test_param_count_equals_init(settings):
  model = SequencePerceiver(**dict(SMALL, **settings))
  assert param_count(model, (S, F)) == _init_count(model, (S, F))
  assert model.stats((S, F)).output_shape == (model.output_size,)


@pytest.mark.parametrize("settings", [
    dict(num_cross_layers=2, num_layers=4), dict(num_heads=1, latent_dim=64)])
def test_flops_within_ten_percent_of_xla_cost_analysis(settings):
  """At sizes where matmuls dominate (XLA also counts norms, softmax and activations)."""
  model = SequencePerceiver(**{**SMALL, "input_dim": 64, "latent_dim": 128, "num_latents": 32,
                               **settings})
  shape = (256, 64)
  x = jax.ShapeDtypeStruct((1,) + shape, jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  cost = jax.jit(model.apply).lower(variables, x).compile().cost_analysis()
  measured = (cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"]
  assert abs(flops(model, shape) - measured) / measured < 0.10, (flops(model, shape), measured)


@pytest.mark.parametrize("settings,match", [
    (dict(num_layers=3, num_cross_layers=2), r"num_layers=3 is not a multiple of .*num_cross"),
    (dict(latent_dim=10, num_heads=4), r"latent_dim=10 is not divisible by .*num_heads=4"),
    (dict(num_latents=0), r"SequencePerceiver.num_latents must be >= 1"),
    (dict(input_dim=0), r"SequencePerceiver.input_dim must be >= 1"),
    (dict(dropout=1.0), r"SequencePerceiver.dropout must be in \[0, 1\)"),
])
def test_bad_fields_are_clear_errors(settings, match):
  with pytest.raises(ValueError, match=match):
    SequencePerceiver(**dict(SMALL, **settings))


def test_inputs_of_another_width_are_a_clear_error_at_call_and_in_stats():
  model = SequencePerceiver(**SMALL)
  with pytest.raises(ValueError, match=r"\[batch, seq, input_dim=6\], got shape \(2, 11, 5\)"):
    model.init(jax.random.PRNGKey(0), jnp.ones((B, S, 5)))
  with pytest.raises(ValueError, match="input_dim=6"):
    param_count(model, (S, 5))
