"""VideoAdapter: video [batch, T, H, W, C] -> space-time patches plus 3-D Fourier features.

space_to_depth(x, spatial_downsample, temporal_downsample) -> [b, T', H', W', t*s*s*C] with
T' = T/t, H' = H/s, W' = W/s -> concat fourier_features((T', H', W'), ...) (max_resolution
defaults to (T', H', W')) -> [b, T'*H'*W', t*s*s*C + fourier_num_channels(3, ...)].
No parameters.
"""

from typing import Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from perceiver_jax.io.adapters.image import block_grid, space_to_depth
from perceiver_jax.nn.model_stats import Stats
from perceiver_jax.nn.position_encoding import concat_fourier_features, fourier_num_channels
from perceiver_jax.nn.typing import DType
from perceiver_jax.nn.validation import check_positive


class VideoAdapter(nn.Module):
  """Space-time patches plus Fourier position features; see the module docstring."""
  temporal_downsample: int = 1
  spatial_downsample: int = 4
  num_frequency_bands: int = 64
  max_resolution: Optional[Sequence[int]] = None  # Defaults to the (T', H', W') patch grid.
  concat_pos: bool = True
  sine_only: bool = False
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32  # The adapter protocol's field; there are no parameters.

  def __post_init__(self):
    check_positive(self, "temporal_downsample", "spatial_downsample", "num_frequency_bands")
    if self.max_resolution is not None and len(self.max_resolution) != 3:
      raise ValueError(
          f"VideoAdapter.max_resolution must have three entries (T', H', W'), got "
          f"{self.max_resolution}.")
    super().__post_init__()

  def __call__(self, inputs, deterministic: bool = True) -> jnp.ndarray:
    del deterministic  # No dropout.
    if inputs.ndim != 5:
      raise ValueError(f"VideoAdapter expects video [batch, T, H, W, C], got shape {inputs.shape}.")
    patches = space_to_depth(inputs, self.spatial_downsample, self.temporal_downsample)
    return concat_fourier_features(patches, self.num_frequency_bands, self.max_resolution,
                                   self.concat_pos, self.sine_only, self.dtype)

  @nn.nowrap
  def stats(self, input_shape) -> Stats:
    """Video [T, H, W, C] -> [patches, channels'] (space-time patches, Fourier; no parameters)."""
    frames, height, width, channels = input_shape
    t, s = self.temporal_downsample, self.spatial_downsample
    grid = block_grid((frames, height, width), (t, s, s))
    channels = t * s * s * channels + fourier_num_channels(
        3, self.num_frequency_bands, self.concat_pos, self.sine_only)
    return Stats(0, 0, (grid[0] * grid[1] * grid[2], channels))
