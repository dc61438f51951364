"""Perceiver IO output queries for grid-shaped outputs (flow, video, audio, MLM).

Each query module maps `inputs` [batch, ...] (only the batch size is used, except by
`InputQuery`) to decoder queries [batch, num_outputs, channels]. With `subsampled_points`, int
indices [k] (shared by the batch) or [batch, k] into the num_outputs axis, only those queries
are returned, [batch, k, channels]: Perceiver IO decodes a random subset of output points in
training.

- `FourierQuery`: Fourier features of the output grid (no parameters).
- `TrainableGridQuery`: learned queries, one per grid point.
- `InputQuery`: the adapted inputs themselves (the official optical-flow decoder).
"""

from typing import Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from perceiver_jax.model_stats import Stats, stats
from perceiver_jax.position_encoding import (TrainablePositionEncoding, batched_fourier_features,
                                             fourier_num_channels)
from perceiver_jax.typing import DType
from perceiver_jax.validation import check_index_dims, check_positive


def subsample(queries: jnp.ndarray, subsampled_points) -> jnp.ndarray:
  """queries [b, n, c] at indices [k] or [b, k] -> [b, k, c]; None returns queries."""
  if subsampled_points is None:
    return queries
  points = jnp.asarray(subsampled_points)
  if not jnp.issubdtype(points.dtype, jnp.integer) or points.ndim not in (1, 2):
    raise ValueError("subsampled_points must be int indices [k] or [batch, k], got "
                     f"{points.dtype} {points.shape}.")
  if points.ndim == 1:
    return jnp.take(queries, points, axis=1)
  if points.shape[0] != queries.shape[0]:
    raise ValueError(f"subsampled_points [batch, k] has batch {points.shape[0]}, "
                     f"queries have batch {queries.shape[0]}.")
  return jnp.take_along_axis(queries, points[:, :, None], axis=1)


class FourierQuery(nn.Module):
  """Fourier features of the output grid: [b, prod(output_index_dims), channels]."""
  output_index_dims: Sequence[int]
  num_frequency_bands: int = 64
  max_resolution: Optional[Sequence[int]] = None  # Defaults to output_index_dims.
  concat_pos: bool = True
  sine_only: bool = False
  dtype: DType = jnp.float32

  def __post_init__(self):
    check_index_dims(self, "output_index_dims")
    check_positive(self, "num_frequency_bands")
    if self.max_resolution is not None and len(self.max_resolution) != len(self.output_index_dims):
      raise ValueError(
          f"FourierQuery.max_resolution {tuple(self.max_resolution)} needs one entry per "
          f"output index dim {tuple(self.output_index_dims)}.")
    super().__post_init__()

  def __call__(self, inputs, subsampled_points=None) -> jnp.ndarray:
    queries = batched_fourier_features(self.output_index_dims, inputs.shape[0],
                                       self.num_frequency_bands, self.max_resolution,
                                       self.concat_pos, self.sine_only, self.dtype)
    return subsample(queries, subsampled_points)


class TrainableGridQuery(nn.Module):
  """Learned queries, one per output grid point: [b, prod(output_index_dims), num_channels]."""
  output_index_dims: Sequence[int]
  num_channels: int
  init_scale: float = 0.02
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32

  def __post_init__(self):
    check_index_dims(self, "output_index_dims")
    check_positive(self, "num_channels")
    super().__post_init__()

  @nn.compact
  def __call__(self, inputs, subsampled_points=None) -> jnp.ndarray:
    queries = TrainablePositionEncoding(self.output_index_dims, self.num_channels, self.init_scale,
                                        self.dtype, self.param_dtype,
                                        name="queries")(inputs.shape[0])
    return subsample(queries, subsampled_points)


class InputQuery(nn.Module):
  """The adapted inputs [b, n, c] are the queries (one output per input point)."""

  def __call__(self, inputs, subsampled_points=None) -> jnp.ndarray:
    if inputs.ndim != 3:
      raise ValueError(f"InputQuery expects inputs [batch, index, channels], got {inputs.shape}.")
    return subsample(inputs, subsampled_points)


@stats.register
def _(module: FourierQuery, input_shape) -> Stats:
  del input_shape  # Queries depend only on the batch size.
  channels = fourier_num_channels(len(module.output_index_dims), module.num_frequency_bands,
                                  module.concat_pos, module.sine_only)
  return Stats(0, 0, (int(np.prod(module.output_index_dims)), channels))


@stats.register
def _(module: TrainableGridQuery, input_shape) -> Stats:
  del input_shape  # Queries depend only on the batch size.
  shape = (int(np.prod(module.output_index_dims)), module.num_channels)
  return Stats(int(np.prod(shape)), 0, shape)


@stats.register
def _(module: InputQuery, input_shape) -> Stats:
  return Stats(0, 0, tuple(input_shape))
