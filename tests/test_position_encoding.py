"""Fourier features, trainable and rotary position encodings against numpy re-derivations."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver_jax import (FourierPositionEncoding, RotaryPositionEmbedding,
                           TrainablePositionEncoding, fourier_features)
from perceiver_jax.nn.position_encoding import fourier_num_channels, rotary_dims

# --- Fourier features ------------------------------------------------------------------------


def _np_fourier(index_dims, num_bands, max_resolution=None, concat_pos=True, sine_only=False):
  """The official formula, one grid point at a time (row-major order over index_dims)."""
  max_resolution = max_resolution or index_dims
  rows = []
  for idx in itertools.product(*(range(n) for n in index_dims)):
    pos = [-1.0 + 2.0 * i / (n - 1) if n > 1 else -1.0 for i, n in zip(idx, index_dims)]
    freqs = [[1.0 + (res / 2 - 1.0) * b / (num_bands - 1) if num_bands > 1 else 1.0
              for b in range(num_bands)] for res in max_resolution]
    sines = [math.sin(math.pi * f * x) for x, fs in zip(pos, freqs) for f in fs]
    cosines = [math.cos(math.pi * f * x) for x, fs in zip(pos, freqs) for f in fs]
    rows.append((pos if concat_pos else []) + sines + ([] if sine_only else cosines))
  return np.array(rows)


def test_fourier_channel_count_for_224_images():
  features = fourier_features((224, 224), num_bands=64)
  assert features.shape == (224 * 224, 258) and features.dtype == np.float32
  assert fourier_num_channels(2, 64) == 258


@pytest.mark.parametrize("index_dims,num_bands,max_resolution", [
    ((7,), 5, None),
    ((4, 6), 3, None),
    ((3, 4, 5), 4, None),
    ((5, 3), 6, (32, 20)),
    ((1, 4), 1, None),  # Single-point axis and a single band.
])
@pytest.mark.parametrize("concat_pos,sine_only", [(True, False), (False, False), (True, True),
                                                  (False, True)])
def test_fourier_matches_official_formula(index_dims, num_bands, max_resolution, concat_pos,
                                          sine_only):
  features = fourier_features(index_dims, num_bands, max_resolution, concat_pos, sine_only)
  expected = _np_fourier(index_dims, num_bands, max_resolution, concat_pos, sine_only)
  assert features.shape == expected.shape
  width = fourier_num_channels(len(index_dims), num_bands, concat_pos, sine_only)
  assert features.shape[1] == width
  np.testing.assert_allclose(features, expected, atol=1e-6)


def test_fourier_positions_come_first_in_ij_order():
  features = fourier_features((3, 4), num_bands=2)
  rows, cols = np.linspace(-1, 1, 3), np.linspace(-1, 1, 4)
  for r in range(3):
    for c in range(4):  # The last index dim varies fastest.
      np.testing.assert_allclose(features[r * 4 + c, :2], [rows[r], cols[c]], atol=1e-7)


def test_fourier_frequencies_by_hand():
  """1-D, max_resolution 10, 5 bands: frequencies 1, 2, 3, 4, 5 (linear, not powers of two)."""
  features = fourier_features((5,), num_bands=5, max_resolution=(10,))  # x = -1, -.5, 0, .5, 1.
  x_half = features[3]  # x = 0.5.
  np.testing.assert_allclose(x_half[0], 0.5)
  np.testing.assert_allclose(x_half[1:6], [1, 0, -1, 0, 1], atol=1e-6)  # sin(pi f / 2).
  np.testing.assert_allclose(x_half[6:11], [0, -1, 0, 1, 0], atol=1e-6)  # cos(pi f / 2).
  np.testing.assert_allclose(features[2, 1:6], 0, atol=1e-7)  # x = 0: every sine vanishes.
  # Default max_resolution is the grid size: bands run from 1 to n / 2 = 4 (x = 1/7).
  features = fourier_features((8,), num_bands=4, concat_pos=False, sine_only=True)
  x = np.linspace(-1, 1, 8)[4]
  np.testing.assert_allclose(features[4], np.sin(np.pi * np.array([1, 2, 3, 4]) * x), atol=1e-6)


def test_fourier_dims_are_grouped_per_index_dim():
  """Channels after the positions: all bands of dim 0, then all bands of dim 1 (sin, then cos)."""
  features = fourier_features((3, 5), num_bands=4, max_resolution=(8, 8))
  row = features[1 * 5 + 4]  # x0 = 0, x1 = 1.
  f = np.linspace(1, 4, 4)
  np.testing.assert_allclose(row[2:6], np.sin(np.pi * f * 0.0), atol=1e-6)
  np.testing.assert_allclose(row[6:10], np.sin(np.pi * f * 1.0), atol=1e-6)
  np.testing.assert_allclose(row[10:14], np.cos(np.pi * f * 0.0), atol=1e-6)
  np.testing.assert_allclose(row[14:18], np.cos(np.pi * f * 1.0), atol=1e-6)


def test_fourier_errors():
  with pytest.raises(ValueError, match="num_bands"):
    fourier_features((4,), num_bands=0)
  with pytest.raises(ValueError, match="max_resolution"):
    fourier_features((4, 4), num_bands=2, max_resolution=(8,))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_fourier_position_encoding_module(dtype):
  module = FourierPositionEncoding(num_bands=3, max_resolution=(16, 12), dtype=dtype)
  out = module.apply({}, (4, 3), 2)
  assert out.shape == (2, 12, 2 * 7) and out.dtype == dtype
  expected = _np_fourier((4, 3), 3, (16, 12))
  for b in range(2):
    np.testing.assert_allclose(np.asarray(out[b], np.float32), expected,
                               atol=1e-6 if dtype == jnp.float32 else 1e-2)
  out = FourierPositionEncoding(num_bands=2, concat_pos=False, sine_only=True).apply({}, (5,), 3)
  assert out.shape == (3, 5, 2)


# --- Trainable position encoding -------------------------------------------------------------


def _truncated_normal_std(bound=2.0):
  """Standard deviation of a standard normal truncated to [-bound, bound]."""
  pdf = math.exp(-bound ** 2 / 2) / math.sqrt(2 * math.pi)
  mass = math.erf(bound / math.sqrt(2))
  return math.sqrt(1 - 2 * bound * pdf / mass)


def test_trainable_position_encoding():
  module = TrainablePositionEncoding(index_dims=(16, 16), num_channels=256, init_scale=0.05)
  variables = module.init(jax.random.PRNGKey(0), 3)
  table = np.asarray(variables["params"]["embeddings"])
  assert table.shape == (256, 256) and table.dtype == np.float32
  # Truncated normal with stddev parameter init_scale (haiku's / flax's convention): 2-sigma cut.
  assert np.abs(table).max() <= 2 * 0.05 + 1e-7
  np.testing.assert_allclose(table.std(), 0.05 * _truncated_normal_std(), rtol=0.02)
  assert abs(table.mean()) < 1e-3
  out = module.apply(variables, 3)
  assert out.shape == (3, 256, 256)
  for b in range(3):
    np.testing.assert_array_equal(out[b], table)
  out = TrainablePositionEncoding((4,), 8, dtype=jnp.bfloat16).apply(
      TrainablePositionEncoding((4,), 8).init(jax.random.PRNGKey(1), 1), 2)
  assert out.shape == (2, 4, 8) and out.dtype == jnp.bfloat16


@pytest.mark.parametrize("index_dims,num_channels", [((0,), 4), ((4, 0), 4), ((4,), 0), ((-1,), 3)])
def test_trainable_position_encoding_errors(index_dims, num_channels):
  with pytest.raises(ValueError, match="positive index_dims and num_channels"):
    TrainablePositionEncoding(index_dims=index_dims, num_channels=num_channels)


# --- Rotary position embedding ---------------------------------------------------------------


def _np_rope(x, positions, rot, max_wavelength=10_000.0):
  """Interleaved RoPE on the first rot dims: pair (2i, 2i+1) turns by pos * w^(-2i/rot)."""
  x = np.array(x, np.float64)
  positions = np.broadcast_to(np.asarray(positions, np.float64), x.shape[:2])
  out = x.copy()
  for i in range(rot // 2):
    theta = positions[:, :, None] * max_wavelength ** (-2.0 * i / rot)
    c, s = np.cos(theta), np.sin(theta)
    out[..., 2 * i] = x[..., 2 * i] * c - x[..., 2 * i + 1] * s
    out[..., 2 * i + 1] = x[..., 2 * i] * s + x[..., 2 * i + 1] * c
  return out


def _x(*shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _rope(fraction, x, positions, **kwargs):
  return RotaryPositionEmbedding(fraction, **kwargs).apply({}, x, positions)


@pytest.mark.parametrize("head_dim,fraction,expected", [
    (8, 0.5, 4), (8, 1.0, 8), (10, 0.5, 4), (12, 0.25, 2), (6, 0.2, 0)])
def test_rotary_dims(head_dim, fraction, expected):
  assert rotary_dims(head_dim, fraction) == expected


@pytest.mark.parametrize("head_dim,fraction,rot,max_wavelength", [
    (8, 1.0, 8, 10_000.0), (8, 0.5, 4, 10_000.0), (10, 0.5, 4, 10_000.0), (6, 1.0, 6, 100.0)])
@pytest.mark.parametrize("batched", [False, True])
def test_rotary_matches_numpy(head_dim, fraction, rot, max_wavelength, batched):
  x = _x(2, 7, 3, head_dim)
  positions = np.arange(7) * 3 + 1
  if batched:
    positions = np.stack([positions, positions[::-1] + 100])
  out = _rope(fraction, x, jnp.asarray(positions), max_wavelength=max_wavelength)
  assert out.shape == x.shape and out.dtype == x.dtype
  np.testing.assert_allclose(out, _np_rope(x, positions, rot, max_wavelength), atol=1e-4, rtol=1e-4)


def test_rotary_rotates_only_the_leading_fraction():
  """head_dim 8, fraction 0.5: dims 0..3 rotate, dims 4..7 pass through bit for bit."""
  x = _x(2, 6, 2, 8)
  out = np.asarray(_rope(0.5, x, jnp.arange(6) + 1))
  np.testing.assert_array_equal(out[..., 4:], np.asarray(x)[..., 4:])
  assert (np.abs(out[..., :4] - np.asarray(x)[..., :4]).max(axis=-1) > 1e-4).all()
  pair_norms = lambda a: np.hypot(a[..., 0:4:2], a[..., 1:4:2])
  np.testing.assert_allclose(pair_norms(out), pair_norms(np.asarray(x)), rtol=1e-5)


def test_rotary_preserves_pair_norms_and_position_zero_is_identity():
  x = _x(1, 5, 2, 8)
  out = np.asarray(_rope(1.0, x, jnp.asarray([0, 1, 50, 1000, 12345])))
  norms = lambda a: np.hypot(a[..., 0::2], a[..., 1::2])
  np.testing.assert_allclose(norms(out), norms(np.asarray(x)), rtol=1e-5)
  np.testing.assert_array_equal(out[:, 0], np.asarray(x)[:, 0])  # Position 0: no rotation.


def test_rotary_dot_products_depend_only_on_relative_position():
  q, k = _x(1, 1, 1, 8, seed=1), _x(1, 1, 1, 8, seed=2)
  rope = jax.jit(lambda x, p: _rope(1.0, x, p))

  def score(m, n):
    return float(jnp.sum(rope(q, jnp.asarray([m])) * rope(k, jnp.asarray([n]))))

  for m, n in [(3, 1), (0, 7), (20, 20)]:
    base = score(m, n)
    for shift in (1, 5, 100):
      np.testing.assert_allclose(score(m + shift, n + shift), base, rtol=1e-4, atol=1e-4)
  assert abs(score(3, 1) - score(4, 1)) > 1e-3  # The relative position itself matters.


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5])
def test_rotary_fraction_out_of_range(fraction):
  with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]"):
    RotaryPositionEmbedding(fraction)


def test_rotary_with_no_rotated_dims_raises():
  with pytest.raises(ValueError, match="rotates no dims"):
    _rope(0.2, _x(1, 3, 1, 6), jnp.arange(3))  # 0.2 * 6 = 1.2 -> 0 dims.
