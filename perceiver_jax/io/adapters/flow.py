"""FlowAdapter: two frames [batch, 2, H, W, C] -> per-pixel 3x3 patches plus 2-D Fourier features.

Each pixel gets its 3x3 neighbourhood (zeros beyond the borders) in every frame: 2 * 9 * C
features (54 for RGB) ordered (frame, dy, dx, c), i.e. feature index
((frame * 3 + dy) * 3 + dx) * C + c for the neighbour at row offset dy - 1, column offset dx - 1
-> Dense(out_channels) when out_channels is set (the official conv_after_patching, 64) ->
concat fourier_features((H, W), ...) (max_resolution defaults to (H, W)) ->
[batch, H*W, (out_channels or 2*9*C) + fourier_num_channels(2, ...)].
Any number of frames works the same way.
"""

from typing import Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from perceiver_jax.nn.model_stats import Stats, dense_stats
from perceiver_jax.nn.position_encoding import concat_fourier_features, fourier_num_channels
from perceiver_jax.nn.typing import DType
from perceiver_jax.nn.validation import check_positive


def extract_patches_3x3(frames):
  """[b, F, H, W, C] -> [b, H, W, F * 9 * C], (frame, dy, dx, c) order, zero padding."""
  batch, num_frames, height, width, channels = frames.shape
  padded = jnp.pad(frames, ((0, 0), (0, 0), (1, 1), (1, 1), (0, 0)))
  shifted = [padded[:, :, dy:dy + height, dx:dx + width] for dy in range(3) for dx in range(3)]
  patches = jnp.stack(shifted, axis=-2)  # [b, F, H, W, 9, C]
  return patches.transpose(0, 2, 3, 1, 4, 5).reshape(batch, height, width, -1)


class FlowAdapter(nn.Module):
  """3x3 patches of a frame pair plus Fourier position features; see the module docstring."""
  out_channels: Optional[int] = 64  # None keeps the raw 2*9*C patch features.
  num_frequency_bands: int = 64
  max_resolution: Optional[Sequence[int]] = None  # Defaults to (H, W).
  concat_pos: bool = True
  sine_only: bool = False
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32

  def __post_init__(self):
    check_positive(self, "out_channels", "num_frequency_bands")
    if self.max_resolution is not None and len(self.max_resolution) != 2:
      raise ValueError(
          f"FlowAdapter.max_resolution must have two entries (H, W), got {self.max_resolution}.")
    super().__post_init__()

  @nn.compact
  def __call__(self, inputs, deterministic: bool = True) -> jnp.ndarray:
    del deterministic  # No dropout.
    if inputs.ndim != 5:
      raise ValueError(
          f"FlowAdapter expects frames [batch, 2, H, W, C], got shape {inputs.shape}.")
    x = extract_patches_3x3(inputs.astype(self.dtype))
    if self.out_channels is not None:
      x = nn.Dense(self.out_channels, dtype=self.dtype, param_dtype=self.param_dtype,
                   name="patches_linear")(x)
    return concat_fourier_features(x, self.num_frequency_bands, self.max_resolution,
                                   self.concat_pos, self.sine_only, self.dtype)

  @nn.nowrap
  def stats(self, input_shape) -> Stats:
    """Frames [T, H, W, C] -> [H * W, channels] (3x3 patches, optional projection, Fourier)."""
    num_frames, height, width, channels = input_shape
    tokens, features = height * width, num_frames * 9 * channels
    total = Stats(0, 0, (tokens, features))
    if self.out_channels is not None:
      total = dense_stats(features, self.out_channels, tokens)
    channels = total.output_shape[-1] + fourier_num_channels(
        2, self.num_frequency_bands, self.concat_pos, self.sine_only)
    return Stats(total.params, total.flops, (tokens, channels))
