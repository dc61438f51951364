"""Analytic parameter counts equal init's; analytic FLOPs are within 10% of XLA's count."""

import ast

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from perceiver_jax.nn.attention import AttentionConfig
from perceiver_jax import (ClassificationDecoder, Perceiver, PerceiverDecoder, PerceiverEncoder,
                           PerceiverIO, ProjectionDecoder, TrainableQuery)
from perceiver_jax.nn import model_stats
from perceiver_jax.nn.model_stats import Stats, count_params, flops, param_count, stats


def _encoder(**overrides):
  settings = dict(num_latents=8, num_latent_channels=32, num_cross_attention_layers=1,
                  num_self_attention_blocks=2, num_self_attention_layers_per_block=2,
                  num_self_attention_heads=4)
  settings.update(overrides)
  return PerceiverEncoder(**settings)


def _init_count(model, input_shape):
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.ones((2,) + input_shape))
  return count_params(shapes)


ENCODERS = [
    {},
    dict(num_cross_attention_layers=2, num_self_attention_blocks=3),
    dict(num_cross_attention_layers=3, num_self_attention_blocks=3,
         first_cross_attention_layer_shared=True),
    dict(num_self_attention_blocks=1, first_self_attention_block_shared=False),
    dict(num_self_attention_blocks=4, first_self_attention_block_shared=False),
    dict(num_cross_attention_layers=1, first_cross_attention_layer_shared=True),
    dict(num_cross_attention_heads=2, cross_attention_qk_channels=16, cross_attention_v_channels=8,
         self_attention_qk_channels=16, self_attention_v_channels=24,
         cross_attention_widening_factor=3, self_attention_widening_factor=2),
    dict(use_query_residual=False, num_self_attention_layers_per_block=3),
]


@pytest.mark.parametrize("encoder_overrides", ENCODERS)
@pytest.mark.parametrize("input_shape", [(6, 6, 3), (10, 5), (3, 4, 4, 2)])
def test_perceiver_param_count_equals_init(encoder_overrides, input_shape):
  for decoder in (ProjectionDecoder(7), ClassificationDecoder(num_classes=7)):
    model = Perceiver(_encoder(**encoder_overrides), decoder, num_frequency_bands=3)
    assert param_count(model, input_shape) == _init_count(model, input_shape)


@pytest.mark.parametrize("fourier", [dict(concat_pos=False), dict(sine_only=True),
                                     dict(max_resolution=(20, 30))])
def test_param_count_follows_fourier_settings(fourier):
  model = Perceiver(_encoder(), ProjectionDecoder(5), num_frequency_bands=4, **fourier)
  assert param_count(model, (6, 6, 3)) == _init_count(model, (6, 6, 3))


@pytest.mark.parametrize("decoder", [
    PerceiverDecoder(output_channels=3),
    PerceiverDecoder(num_heads=2, qk_channels=8, v_channels=4, use_query_residual=True),
    PerceiverDecoder(use_mlp=False, widening_factor=2, output_channels=5),
])
def test_perceiver_io_param_count_equals_init(decoder):
  model = PerceiverIO(_encoder(), TrainableQuery(4, 12), decoder)
  assert param_count(model, (20, 6)) == _init_count(model, (20, 6))


class _Linear(nn.Module):
  """A toy adapter: a linear map of the last dim."""
  features: int

  @nn.compact
  def __call__(self, x, deterministic=True):
    return nn.Dense(self.features)(x)


class _CountedLinear(_Linear):
  """The toy adapter with its analytic stats."""

  @nn.nowrap
  def stats(self, input_shape):
    tokens, channels = input_shape
    return Stats(channels * self.features + self.features, 2 * tokens * channels * self.features,
                 (tokens, self.features))


def test_adapter_without_stats_is_a_clear_error_and_a_stats_method_counts_it():
  model = PerceiverIO(_encoder(), TrainableQuery(4, 12), PerceiverDecoder(),
                      input_adapter=_Linear(10), output_adapter=_Linear(3))
  with pytest.raises(TypeError, match="_Linear; give it a method stats"):
    param_count(model, (20, 6))
  with pytest.raises(TypeError, match="_Linear"):
    stats(_Linear(3), (20, 6))

  model = PerceiverIO(_encoder(), TrainableQuery(4, 12), PerceiverDecoder(),
                      input_adapter=_CountedLinear(10), output_adapter=_CountedLinear(3))
  assert param_count(model, (20, 6)) == _init_count(model, (20, 6))
  assert stats(model, (20, 6)).output_shape == (4, 3)


def test_stats_run_on_bound_and_unbound_modules_alike():
  """The stats methods read fields only (nn.nowrap): a bound module gives the same numbers."""
  model = PerceiverIO(_encoder(), TrainableQuery(4, 12), PerceiverDecoder(output_channels=5))
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.ones((1, 20, 6)))
  assert model.bind(variables).stats((20, 6)) == model.stats((20, 6))
  assert model.stats((20, 6)).params == count_params(variables)


def _xla_flops(model, input_shape):
  x = jax.ShapeDtypeStruct((1,) + input_shape, jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  cost = jax.jit(model.apply).lower(variables, x).compile().cost_analysis()
  return (cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"]


@pytest.mark.parametrize("model,input_shape", [
    (Perceiver(_encoder(num_latents=32, num_latent_channels=256, num_cross_attention_layers=2,
                        num_self_attention_blocks=3), ProjectionDecoder(10), num_frequency_bands=8),
     (16, 16, 3)),
    (Perceiver(_encoder(num_latents=16, num_latent_channels=128, num_self_attention_heads=2,
                        self_attention_widening_factor=4),
               ClassificationDecoder(num_classes=10), num_frequency_bands=16), (64, 5)),
    (PerceiverIO(_encoder(num_latents=32, num_latent_channels=256, cross_attention_qk_channels=128),
                 TrainableQuery(64, 128), PerceiverDecoder(output_channels=64)), (512, 96)),
])
def test_flops_within_ten_percent_of_xla_cost_analysis(model, input_shape):
  analytic, measured = flops(model, input_shape), _xla_flops(model, input_shape)
  assert abs(analytic - measured) / measured < 0.10, (analytic, measured)


def test_flops_count_every_application_of_shared_weights():
  one = _encoder(num_self_attention_blocks=2)
  three = _encoder(num_self_attention_blocks=6)
  shape = (30, 16)
  assert param_count(PerceiverIO(one, TrainableQuery(1, 8), PerceiverDecoder()), shape) == \
      param_count(PerceiverIO(three, TrainableQuery(1, 8), PerceiverDecoder()), shape)
  block_flops = (stats(three, shape).flops - stats(one, shape).flops) / 4
  assert block_flops > 0
  assert stats(one, shape).flops > 2 * block_flops  # Two blocks plus the cross-attention.


def test_flops_follow_the_cross_attention_backend():
  """The one-head cross-attention folds its projections with 'xla' and 'chunked', not with
  'cudnn' (the encoder's cross_attention config): the analytic FLOPs follow, for the
  cross-attention alone."""
  shape = (400, 16)  # Many inputs, few latents: folding saves FLOPs.
  counts = {cross: stats(_encoder(cross_attention=cross and AttentionConfig(cross),
                                  dtype=jnp.bfloat16), shape).flops
            for cross in (None, "chunked", "cudnn")}
  assert counts[None] == counts["chunked"] < counts["cudnn"]
  assert stats(_encoder(attention=AttentionConfig("cudnn"), cross_attention=AttentionConfig(),
                        dtype=jnp.bfloat16), shape).flops == counts[None]


def test_count_params_accepts_variables_or_params():
  model = Perceiver(_encoder(), ProjectionDecoder(4), num_frequency_bands=2)
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.ones((1, 5, 3)))
  assert count_params(variables) == count_params(variables["params"]) > 0


def test_model_stats_imports_no_model():
  """The modules import model_stats for their stats methods, so it must not import them."""
  tree = ast.parse(open(model_stats.__file__).read())
  imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
  imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
               for alias in node.names}
  ours = {name for name in imported if name.startswith("perceiver_jax")}
  assert not ours, ours
