"""Input adapters: TextAdapter, AudioAdapter and PointCloudAdapter values, errors and stats."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver_jax import PerceiverDecoder, PerceiverEncoder, PerceiverIO, TrainableQuery
from perceiver_jax.io.adapters import AudioAdapter, PointCloudAdapter, TextAdapter
from perceiver_jax.nn.model_stats import count_params, param_count, stats
from perceiver_jax.nn.position_encoding import (fourier_features, fourier_features_at,
                                                fourier_num_channels)
from perceiver_jax.data.tokenizer import PAD


def _init(module, inputs):
  return module.init(jax.random.PRNGKey(0), inputs)


# TextAdapter.

def test_text_adapter_is_embedding_lookup_plus_first_positions():
  adapter = TextAdapter(num_channels=8, max_seq_len=12)
  ids = jnp.array([[6, 7, 3, 261, 0], [1, 100, 100, 5, 2]], jnp.int32)
  variables = _init(adapter, ids)
  params = variables["params"]
  table, positions = params["embedding"]["embedding"], params["position_embeddings"]
  assert table.shape == (262, 8) and positions.shape == (12, 8)
  out = adapter.apply(variables, ids)
  assert out.shape == (2, 5, 8)
  np.testing.assert_allclose(out, np.asarray(table)[np.asarray(ids)] + np.asarray(positions)[:5],
                             rtol=1e-6, atol=1e-7)
  assert float(jnp.std(table)) == pytest.approx(0.02, rel=0.3)


def test_text_adapter_too_long_input_raises():
  adapter = TextAdapter(num_channels=4, max_seq_len=3)
  with pytest.raises(ValueError, match="max_seq_len"):
    _init(adapter, jnp.zeros((1, 4), jnp.int32))
  with pytest.raises(ValueError, match="max_seq_len"):
    stats(adapter, (4,))


@pytest.mark.parametrize("fields", [dict(num_channels=0), dict(num_channels=4, vocab_size=0),
                                    dict(num_channels=4, max_seq_len=0)])
def test_text_adapter_bad_fields_name_the_field(fields):
  field = [k for k, v in fields.items() if v == 0][0]
  with pytest.raises(ValueError, match=f"TextAdapter.{field}"):
    TextAdapter(**fields)


@pytest.mark.parametrize("fields,field", [
    (dict(conv_width=2), "conv_width"), (dict(conv_width=-1), "conv_width"),
    (dict(position_init="fourier"), "position_init")])
def test_text_adapter_bad_options_name_the_field(fields, field):
  with pytest.raises(ValueError, match=f"TextAdapter.{field}"):
    TextAdapter(num_channels=4, **fields)


def test_sinusoidal_positions_start_as_the_sin_cos_table_at_the_init_std():
  adapter = TextAdapter(num_channels=16, max_seq_len=64, position_init="sinusoidal")
  positions = np.asarray(_init(adapter, jnp.zeros((1, 4), jnp.int32))["params"][
      "position_embeddings"])
  frequencies = np.pi * np.exp(-np.log(64.0) * np.arange(8) / 8)
  angles = np.arange(64)[:, None] * frequencies
  np.testing.assert_allclose(positions, np.concatenate([np.sin(angles), np.cos(angles)], 1)
                             * 0.02 * np.sqrt(2), atol=1e-6)
  assert float(np.std(positions)) == pytest.approx(0.02, rel=0.05)
  # Unlike random embeddings, a position is closer to its neighbour than to a far position.
  distance = lambda i, j: np.linalg.norm(positions[i] - positions[j])
  assert all(distance(i, i + 1) < distance(i, i + 20) for i in range(40))


def test_conv_width_mixes_exactly_the_neighbours_in_the_window():
  adapter = TextAdapter(num_channels=8, max_seq_len=16, conv_width=5)
  ids = jnp.arange(10, 26, dtype=jnp.int32)[None]
  variables = _init(adapter, ids)
  kernel = variables["params"]["conv"]["kernel"]
  assert kernel.shape == (5, 8, 8)
  out = adapter.apply(variables, ids)
  for changed in (5, 7, 9):  # Positions 5..9 see position 7 (width 5: two on either side).
    moved = adapter.apply(variables, ids.at[0, changed].set(100))
    differs = np.abs(np.asarray(moved - out)[0]).max(axis=-1) > 0
    np.testing.assert_array_equal(np.flatnonzero(differs),
                                  np.arange(max(changed - 2, 0), min(changed + 3, 16)))
  # Position 0's window is zero-padded on the left: embedding + kernel taps on positions 0..2.
  params = variables["params"]
  table = np.asarray(params["embedding"]["embedding"])
  x = table[np.asarray(ids[0])]
  expected = x[0] + sum(x[t] @ np.asarray(kernel)[t + 2] for t in range(3))
  np.testing.assert_allclose(out[0, 0], expected + np.asarray(params["position_embeddings"])[0],
                             rtol=1e-5, atol=1e-6)


class _TextEncoder(nn.Module):
  adapter: TextAdapter
  encoder: PerceiverEncoder

  def __call__(self, ids):
    return self.encoder(self.adapter(ids), ids != PAD)


def test_padding_mask_makes_padded_tokens_irrelevant_to_the_encoder():
  adapter = TextAdapter(num_channels=16, max_seq_len=16)
  encoder = PerceiverEncoder(num_latents=4, num_latent_channels=16, num_self_attention_blocks=1,
                             num_self_attention_layers_per_block=1, num_self_attention_heads=2)
  model = _TextEncoder(adapter, encoder)
  ids = jnp.array([[10, 20, 30, 40, 50, PAD, PAD, PAD]], jnp.int32)
  variables = _init(model, ids)
  base = model.apply(variables, ids)
  longer = model.apply(variables, jnp.pad(ids, ((0, 0), (0, 6))))  # More padding.
  np.testing.assert_allclose(base, longer, rtol=1e-5, atol=1e-6)
  unmasked = encoder.apply({"params": variables["params"]["encoder"]},
                           adapter.apply({"params": variables["params"]["adapter"]}, ids))
  assert not np.allclose(base, unmasked, atol=1e-4)  # Without the mask the pads would matter.


class _MaskedLM(nn.Module):
  """Calls the bound adapter and then its `attend`, as a tied MLM head would."""
  adapter: TextAdapter

  def __call__(self, ids):
    return self.adapter.attend(self.adapter(ids)[:, :3] * 2.0)


def test_attend_ties_logits_to_the_input_embedding():
  adapter = TextAdapter(num_channels=8, vocab_size=20, max_seq_len=6)
  model = _MaskedLM(adapter)
  ids = jnp.array([[1, 7, 19, 4, 5, 6]], jnp.int32)
  variables = _init(model, ids)
  params = variables["params"]["adapter"]
  assert set(params) == {"embedding", "position_embeddings"}  # attend adds no parameters.
  logits = model.apply(variables, ids)
  assert logits.shape == (1, 3, 20)
  x = adapter.apply({"params": params}, ids)
  np.testing.assert_allclose(logits, 2.0 * x[:, :3] @ params["embedding"]["embedding"].T,
                             rtol=1e-5, atol=1e-6)
  # Id 0 is not in the input, so its embedding row gets gradient only through attend.
  grads = jax.grad(lambda p: model.apply(p, ids)[0, 0, 0])(variables)
  assert float(jnp.abs(grads["params"]["adapter"]["embedding"]["embedding"][0]).sum()) > 0


def test_text_adapter_bfloat16_compute():
  adapter = TextAdapter(num_channels=4, max_seq_len=5, dtype=jnp.bfloat16)
  ids = jnp.ones((2, 5), jnp.int32)
  variables = _init(adapter, ids)
  assert variables["params"]["position_embeddings"].dtype == jnp.float32
  assert adapter.apply(variables, ids).dtype == jnp.bfloat16


# AudioAdapter.

def _audio_numpy(samples, p, bands, resolution, concat_pos=True, sine_only=False):
  samples = samples[..., None] if samples.ndim == 2 else samples
  b, t, c = samples.shape
  patches = np.stack([samples[:, i * p:(i + 1) * p].reshape(b, p * c) for i in range(t // p)], 1)
  pos = np.linspace(-1, 1, t // p)[:, None]
  scaled = pos * np.linspace(1, resolution / 2, bands)[None]
  feats = [np.sin(np.pi * scaled)] + ([] if sine_only else [np.cos(np.pi * scaled)])
  feats = np.concatenate(([pos] if concat_pos else []) + feats, -1)
  return np.concatenate([patches, np.broadcast_to(feats, (b,) + feats.shape)], -1)


@pytest.mark.parametrize("shape,fields", [
    ((2, 48), dict(samples_per_patch=8, num_frequency_bands=5)),
    ((2, 48, 2), dict(samples_per_patch=4, num_frequency_bands=3, max_resolution=100)),
    ((1, 30, 3), dict(samples_per_patch=5, num_frequency_bands=2, concat_pos=False,
                      sine_only=True)),
])
def test_audio_adapter_patches_and_fourier_features(shape, fields):
  adapter = AudioAdapter(**fields)
  samples = np.random.default_rng(0).normal(size=shape).astype(np.float32)
  out = adapter.apply({}, jnp.asarray(samples))
  p = fields["samples_per_patch"]
  channels = shape[2] if len(shape) == 3 else 1
  width = fourier_num_channels(1, fields["num_frequency_bands"], fields.get("concat_pos", True),
                               fields.get("sine_only", False))
  assert out.shape == (shape[0], shape[1] // p, p * channels + width)
  assert stats(adapter, shape[1:]).output_shape == out.shape[1:]
  expected = _audio_numpy(samples, p, fields["num_frequency_bands"],
                          fields.get("max_resolution", shape[1] // p),
                          fields.get("concat_pos", True), fields.get("sine_only", False))
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_audio_adapter_errors():
  with pytest.raises(ValueError, match="samples_per_patch"):
    AudioAdapter(samples_per_patch=4).apply({}, jnp.zeros((1, 10)))
  with pytest.raises(ValueError, match="AudioAdapter.samples_per_patch"):
    AudioAdapter(samples_per_patch=0)
  with pytest.raises(ValueError, match="AudioAdapter.num_frequency_bands"):
    AudioAdapter(num_frequency_bands=0)


# PointCloudAdapter.

@pytest.mark.parametrize("index_dims,resolution", [((7,), None), ((5, 6), None),
                                                    ((3, 4, 5), (8, 9, 10))])
@pytest.mark.parametrize("concat_pos,sine_only", [(True, False), (False, True)])
def test_fourier_features_at_grid_positions_equal_fourier_features(index_dims, resolution,
                                                                   concat_pos, sine_only):
  resolution = resolution or index_dims
  axes = [np.linspace(-1.0, 1.0, n) for n in index_dims]
  grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(index_dims))
  got = fourier_features_at(jnp.asarray(grid, jnp.float32), 4, resolution, concat_pos, sine_only)
  expected = fourier_features(index_dims, 4, resolution, concat_pos, sine_only)
  assert got.shape == expected.shape
  np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)  # float32 rounding only.


def _point_features_numpy(points, bands, resolution, d=3):
  out = [points]
  xyz = points[..., :d].astype(np.float64)
  pos = [xyz[..., i] for i in range(d)]
  freqs = [np.linspace(1, r / 2, bands) for r in np.broadcast_to(resolution, (d,))]
  sines = [np.sin(np.pi * f * x[..., None]) for x, f in zip(pos, freqs)]
  cosines = [np.cos(np.pi * f * x[..., None]) for x, f in zip(pos, freqs)]
  return np.concatenate(out + [xyz] + sines + cosines, -1)


@pytest.mark.parametrize("extra,resolution", [(0, 32.0), (2, (16, 24, 40))])
def test_point_cloud_adapter_matches_numpy(extra, resolution):
  adapter = PointCloudAdapter(max_resolution=resolution, num_frequency_bands=6)
  points = np.random.default_rng(1).uniform(-1, 1, (2, 10, 3 + extra)).astype(np.float32)
  out = adapter.apply({}, jnp.asarray(points))
  assert out.shape == (2, 10, 3 + extra + fourier_num_channels(3, 6))
  assert stats(adapter, (10, 3 + extra)).output_shape == out.shape[1:]
  np.testing.assert_allclose(out, _point_features_numpy(points, 6, resolution), atol=2e-5)


def test_point_cloud_adapter_bfloat16_output():
  adapter = PointCloudAdapter(max_resolution=64, num_frequency_bands=4, dtype=jnp.bfloat16)
  points = np.random.default_rng(2).uniform(-1, 1, (1, 6, 3)).astype(np.float32)
  out = adapter.apply({}, jnp.asarray(points))
  assert out.dtype == jnp.bfloat16
  np.testing.assert_allclose(out.astype(jnp.float32), _point_features_numpy(points, 4, 64),
                             atol=1e-2)


def test_point_cloud_adapter_errors():
  with pytest.raises(ValueError, match="PointCloudAdapter.max_resolution"):
    PointCloudAdapter(max_resolution=(4, 4))
  with pytest.raises(ValueError, match="PointCloudAdapter.num_frequency_bands"):
    PointCloudAdapter(max_resolution=8, num_frequency_bands=0)
  with pytest.raises(ValueError, match="num_position_dims"):
    PointCloudAdapter(max_resolution=8).apply({}, jnp.zeros((1, 5, 2)))


# Analytic stats.

@pytest.mark.parametrize("adapter,inputs", [
    (TextAdapter(num_channels=12, max_seq_len=40), jnp.zeros((2, 17), jnp.int32)),
    (TextAdapter(num_channels=5, vocab_size=30, max_seq_len=9), jnp.zeros((2, 9), jnp.int32)),
    (TextAdapter(num_channels=6, max_seq_len=9, conv_width=3), jnp.zeros((2, 9), jnp.int32)),
    (AudioAdapter(samples_per_patch=4, num_frequency_bands=3), jnp.zeros((2, 32))),
    (AudioAdapter(samples_per_patch=2, num_frequency_bands=3), jnp.zeros((2, 8, 2))),
    (PointCloudAdapter(max_resolution=16, num_frequency_bands=3), jnp.zeros((2, 11, 5))),
])
def test_param_count_equals_init_and_output_shape(adapter, inputs):
  shapes = jax.eval_shape(adapter.init, jax.random.PRNGKey(0), inputs)
  assert param_count(adapter, inputs.shape[1:]) == count_params(shapes)
  assert stats(adapter, inputs.shape[1:]).output_shape == jax.eval_shape(
      adapter.apply, shapes, inputs).shape[1:]


def test_perceiver_io_with_text_adapter_param_count_equals_init():
  encoder = PerceiverEncoder(num_latents=4, num_latent_channels=16, num_self_attention_blocks=1,
                             num_self_attention_layers_per_block=1, num_self_attention_heads=2)
  model = PerceiverIO(encoder, TrainableQuery(3, 8), PerceiverDecoder(output_channels=5),
                      input_adapter=TextAdapter(num_channels=12, max_seq_len=20))
  ids = jnp.zeros((2, 10), jnp.int32)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), ids)
  assert param_count(model, (10,)) == count_params(shapes)
  assert jax.eval_shape(model.apply, shapes, ids).shape == (2, 3, 5)
