"""Position encodings: Fourier features, trainable embeddings and rotary embeddings.

- `fourier_features(index_dims, ...)`: the official Perceiver formula. Positions are
  linspace(-1, 1, n) per spatial dim (meshgrid 'ij'); frequencies linspace(1, res / 2,
  num_bands) per dim; features [pos (if concat_pos), sin(pi f x) for every dim and band,
  cos(pi f x) likewise] -> [prod(index_dims), d * (2 * num_bands + 1)] (d * (num_bands + 1)
  with sine_only; minus d without concat_pos).
- `fourier_features_at(positions, ...)`: the same features at arbitrary positions [..., d] in
  [-1, 1] (point clouds, subsampled output queries) -> [..., channels].
- `batched_fourier_features(index_dims, batch, ...)`: those features broadcast to
  [batch, prod(index_dims), channels]; `FourierPositionEncoding` is the same as a module.
- `concat_fourier_features(x, ...)`: features [batch, *index_dims, c] flattened and
  concatenated with the Fourier features of their grid -> [batch, prod(index_dims), c + F].
- `TrainablePositionEncoding`: a learned [prod(index_dims), channels] array, truncated-normal
  init, broadcast to [batch, prod(index_dims), channels]. Also the Perceiver IO decoder queries.
- `sinusoidal_table(length, channels, std)`: the Transformer's sin/cos table [length,
  channels] (TextAdapter's `position_init='sinusoidal'`).
- `RotaryPositionEmbedding`: rotates interleaved pairs of the first `fraction` of each head's
  dims by position-dependent angles (Perceiver AR); [batch, length, heads, head_dim] in and out.
"""

from typing import Optional, Sequence, Union

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from perceiver_jax.nn.typing import DType


def fourier_num_channels(num_index_dims: int, num_bands: int, concat_pos: bool = True,
                         sine_only: bool = False) -> int:
  """Channel count of `fourier_features` for `num_index_dims` spatial dims."""
  return num_index_dims * (num_bands * (1 if sine_only else 2) + (1 if concat_pos else 0))


def fourier_features(index_dims: Sequence[int], num_bands: int,
                     max_resolution: Optional[Sequence[int]] = None, concat_pos: bool = True,
                     sine_only: bool = False) -> np.ndarray:
  """Fourier position features [prod(index_dims), channels] (float32, numpy constant)."""
  index_dims = tuple(int(n) for n in index_dims)
  if num_bands < 1:
    raise ValueError(f"num_bands must be >= 1, got {num_bands}.")
  max_resolution = index_dims if max_resolution is None else tuple(max_resolution)
  if len(max_resolution) != len(index_dims):
    raise ValueError(
        f"max_resolution {max_resolution} must have one entry per index dim {index_dims}.")
  axes = [np.linspace(-1.0, 1.0, n, dtype=np.float64) for n in index_dims]
  pos = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(index_dims))
  freqs = np.stack([np.linspace(1.0, res / 2, num_bands) for res in max_resolution])  # [d, K]
  scaled = (pos[:, :, None] * freqs[None]).reshape(pos.shape[0], -1)  # [N, d * K]
  features = [np.sin(np.pi * scaled)] + ([] if sine_only else [np.cos(np.pi * scaled)])
  if concat_pos:
    features.insert(0, pos)
  return np.concatenate(features, axis=-1).astype(np.float32)


def fourier_features_at(positions: jnp.ndarray, num_bands: int,
                        max_resolution: Union[float, Sequence[float]], concat_pos: bool = True,
                        sine_only: bool = False) -> jnp.ndarray:
  """Fourier features [..., channels] of positions [..., d]; one max_resolution or one per dim."""
  dims = positions.shape[-1]
  resolution = np.broadcast_to(np.asarray(max_resolution, np.float64), (dims,))
  freqs = np.stack([np.linspace(1.0, res / 2, num_bands) for res in resolution])  # [d, K]
  scaled = positions[..., :, None] * jnp.asarray(freqs, positions.dtype)
  scaled = scaled.reshape(positions.shape[:-1] + (dims * num_bands,))
  features = [jnp.sin(jnp.pi * scaled)] + ([] if sine_only else [jnp.cos(jnp.pi * scaled)])
  if concat_pos:
    features.insert(0, positions)
  return jnp.concatenate(features, axis=-1)


def batched_fourier_features(index_dims: Sequence[int], batch_size: int, num_bands: int,
                             max_resolution: Optional[Sequence[int]] = None,
                             concat_pos: bool = True, sine_only: bool = False,
                             dtype: DType = jnp.float32) -> jnp.ndarray:
  """`fourier_features` broadcast to [batch_size, prod(index_dims), channels] in `dtype`."""
  features = fourier_features(index_dims, num_bands, max_resolution, concat_pos, sine_only)
  return jnp.broadcast_to(jnp.asarray(features, dtype), (batch_size,) + features.shape)


def concat_fourier_features(x: jnp.ndarray, num_bands: int,
                            max_resolution: Optional[Sequence[int]] = None,
                            concat_pos: bool = True, sine_only: bool = False,
                            dtype: DType = jnp.float32) -> jnp.ndarray:
  """Features [b, *grid, c] -> [b, prod(grid), c + Fourier channels of the grid], in `dtype`."""
  batch, grid = x.shape[0], x.shape[1:-1]
  positions = batched_fourier_features(grid, batch, num_bands, max_resolution, concat_pos,
                                       sine_only, dtype)
  return jnp.concatenate([x.reshape(batch, -1, x.shape[-1]).astype(dtype), positions], axis=-1)


class FourierPositionEncoding(nn.Module):
  """Fourier features of an index grid, [batch, prod(index_dims), channels]."""
  num_bands: int = 64
  max_resolution: Optional[Sequence[int]] = None
  concat_pos: bool = True
  sine_only: bool = False
  dtype: DType = jnp.float32

  def __call__(self, index_dims: Sequence[int], batch_size: int) -> jnp.ndarray:
    return batched_fourier_features(index_dims, batch_size, self.num_bands, self.max_resolution,
                                    self.concat_pos, self.sine_only, self.dtype)


class TrainablePositionEncoding(nn.Module):
  """A learned array [prod(index_dims), num_channels] broadcast to [batch, ..., channels]."""
  index_dims: Sequence[int]
  num_channels: int
  init_scale: float = 0.02
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32

  def __post_init__(self):
    if any(int(n) < 1 for n in self.index_dims) or self.num_channels < 1:
      raise ValueError(
          f"TrainablePositionEncoding needs positive index_dims and num_channels, got "
          f"index_dims={tuple(self.index_dims)}, num_channels={self.num_channels}.")
    super().__post_init__()

  @nn.compact
  def __call__(self, batch_size: int) -> jnp.ndarray:
    num = int(np.prod(self.index_dims))
    embeddings = self.param("embeddings", nn.initializers.truncated_normal(self.init_scale),
                            (num, self.num_channels), self.param_dtype)
    return jnp.broadcast_to(embeddings.astype(self.dtype), (batch_size, num, self.num_channels))


def sinusoidal_table(length: int, channels: int, std: float) -> jnp.ndarray:
  """[length, channels]: sin (first half) and cos (second half) of position * frequency, the
  frequencies geometric from pi down to pi / length, scaled to per-channel std `std`."""
  half = channels // 2
  frequencies = jnp.pi * jnp.exp(-jnp.log(float(length)) * jnp.arange(half) / max(half, 1))
  angles = jnp.arange(length)[:, None] * frequencies
  table = jnp.concatenate([jnp.sin(angles), jnp.cos(angles),
                           jnp.zeros((length, channels - 2 * half))], axis=1)
  return table * (std * jnp.sqrt(2.0))


def rotary_dims(head_dim: int, fraction: float) -> int:
  """Number of leading head dims rotated: the even number nearest below fraction * head_dim."""
  return 2 * int(head_dim * fraction // 2)


class RotaryPositionEmbedding(nn.Module):
  """Rotary embedding of the first `fraction` of each head's dims, interleaved pairs.

  Pair (x[2i], x[2i+1]) of the rotated part turns by angle position / max_wavelength^(2i/r),
  r = rotary_dims(head_dim, fraction); the remaining dims pass through unchanged. Dot
  products of rotated queries and keys depend only on their relative position.
  """
  fraction: float = 0.5
  max_wavelength: float = 10_000.0

  def __post_init__(self):
    if not 0.0 < self.fraction <= 1.0:
      raise ValueError(f"RotaryPositionEmbedding.fraction must be in (0, 1], got {self.fraction}.")
    super().__post_init__()

  def __call__(self, x: jnp.ndarray, positions: jnp.ndarray) -> jnp.ndarray:
    """x [batch, length, heads, head_dim], positions [batch, length] or [length]."""
    rot = rotary_dims(x.shape[-1], self.fraction)
    if rot == 0:
      raise ValueError(
          f"RotaryPositionEmbedding.fraction={self.fraction} rotates no dims of head_dim="
          f"{x.shape[-1]}; raise the fraction or the head dim.")
    inv_freq = self.max_wavelength ** (-np.arange(0, rot, 2, dtype=np.float32) / rot)
    positions = jnp.asarray(positions, jnp.float32)
    if positions.ndim == 1:
      positions = positions[None]
    angles = positions[:, :, None, None] * inv_freq  # [batch, length, 1, rot / 2]
    sin, cos = jnp.sin(angles), jnp.cos(angles)
    rotated = x[..., :rot].astype(jnp.float32)
    even, odd = rotated[..., 0::2], rotated[..., 1::2]
    rotated = jnp.stack([even * cos - odd * sin, even * sin + odd * cos], axis=-1)
    rotated = rotated.reshape(rotated.shape[:-2] + (rot,)).astype(x.dtype)
    return jnp.concatenate([rotated, x[..., rot:]], axis=-1)
