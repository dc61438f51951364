"""PointCloudAdapter: points concatenated with Fourier features of their coordinates.

`PointCloudAdapter`: points [batch, N, d + F] (the first d = num_position_dims channels are
the coordinates, F >= 0 extra features) -> concat [points, fourier_features_at(points[..., :d])]
-> [batch, N, d + F + fourier_num_channels(d, num_frequency_bands, concat_pos, sine_only)].
No parameters.
"""

from typing import Sequence, Union

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from perceiver_jax.nn.model_stats import Stats
from perceiver_jax.nn.position_encoding import fourier_features_at, fourier_num_channels
from perceiver_jax.nn.typing import DType
from perceiver_jax.nn.validation import check_positive


class PointCloudAdapter(nn.Module):
  """Points plus Fourier features of their coordinates; see the module docstring."""
  max_resolution: Union[float, Sequence[float]]
  num_frequency_bands: int = 64
  num_position_dims: int = 3
  concat_pos: bool = True
  sine_only: bool = False
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32  # The adapter protocol's field; there are no parameters.

  def __post_init__(self):
    check_positive(self, "num_frequency_bands", "num_position_dims")
    resolution = np.asarray(self.max_resolution)
    if resolution.ndim > 1 or resolution.size not in (1, self.num_position_dims) or np.any(
        resolution < 1):
      raise ValueError(
          f"PointCloudAdapter.max_resolution must be a number >= 1 or one per position dim "
          f"({self.num_position_dims}), got {self.max_resolution}.")
    super().__post_init__()

  def __call__(self, inputs, deterministic: bool = True) -> jnp.ndarray:
    del deterministic  # No dropout.
    if inputs.ndim != 3 or inputs.shape[-1] < self.num_position_dims:
      raise ValueError(
          f"PointCloudAdapter expects points [batch, N, >= {self.num_position_dims}] "
          f"(PointCloudAdapter.num_position_dims), got shape {inputs.shape}.")
    positions = inputs[..., :self.num_position_dims].astype(jnp.float32)  # Precise phases.
    features = fourier_features_at(positions, self.num_frequency_bands, self.max_resolution,
                                   self.concat_pos, self.sine_only)
    return jnp.concatenate([inputs.astype(self.dtype), features.astype(self.dtype)], axis=-1)

  @nn.nowrap
  def stats(self, input_shape) -> Stats:
    """Points [points, channels] -> [points, channels + Fourier features] (no parameters)."""
    num_points, channels = input_shape
    channels += fourier_num_channels(self.num_position_dims, self.num_frequency_bands,
                                     self.concat_pos, self.sine_only)
    return Stats(0, 0, (num_points, channels))
