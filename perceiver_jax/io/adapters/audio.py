"""AudioAdapter: raw samples grouped into patches, with Fourier features of the patch index.

samples [batch, T] or [batch, T, C] -> patches [batch, T / p, p * C] (p = samples_per_patch,
consecutive samples with their channels interleaved) -> concat 1-D Fourier features of the
patch index (`fourier_features((T / p,), ...)`, max_resolution defaults to T / p) ->
[batch, T / p, p * C + fourier_num_channels(1, num_frequency_bands, concat_pos, sine_only)].
No parameters.
"""

from typing import Optional

import flax.linen as nn
import jax.numpy as jnp

from perceiver_jax.nn.model_stats import Stats
from perceiver_jax.nn.position_encoding import concat_fourier_features, fourier_num_channels
from perceiver_jax.nn.typing import DType
from perceiver_jax.nn.validation import check_positive


class AudioAdapter(nn.Module):
  """Patches of raw audio plus Fourier position features; see the module docstring."""
  samples_per_patch: int = 16
  num_frequency_bands: int = 64
  max_resolution: Optional[int] = None  # Defaults to the number of patches.
  concat_pos: bool = True
  sine_only: bool = False
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32  # The adapter protocol's field; there are no parameters.

  def __post_init__(self):
    check_positive(self, "samples_per_patch", "num_frequency_bands", "max_resolution")
    super().__post_init__()

  def __call__(self, inputs, deterministic: bool = True) -> jnp.ndarray:
    del deterministic  # No dropout.
    if inputs.ndim == 2:
      inputs = inputs[..., None]
    if inputs.ndim != 3:
      raise ValueError(
          f"AudioAdapter expects samples [batch, T] or [batch, T, C], got shape {inputs.shape}.")
    batch, num_samples, channels = inputs.shape
    num_patches = _num_patches(self, num_samples)
    patches = inputs.reshape(batch, num_patches, self.samples_per_patch * channels)
    resolution = None if self.max_resolution is None else (self.max_resolution,)
    return concat_fourier_features(patches, self.num_frequency_bands, resolution,
                                   self.concat_pos, self.sine_only, self.dtype)

  @nn.nowrap
  def stats(self, input_shape) -> Stats:
    """Audio [samples] or [samples, channels] -> patches [patches, channels'] (no parameters)."""
    num_samples, channels = (tuple(input_shape) + (1,))[:2]
    channels = self.samples_per_patch * channels + fourier_num_channels(
        1, self.num_frequency_bands, self.concat_pos, self.sine_only)
    return Stats(0, 0, (_num_patches(self, num_samples), channels))


def _num_patches(module: AudioAdapter, num_samples: int) -> int:
  if num_samples % module.samples_per_patch:
    raise ValueError(
        f"AudioAdapter got {num_samples} samples, not a multiple of AudioAdapter.samples_per_patch"
        f"={module.samples_per_patch}; crop or pad the audio.")
  return num_samples // module.samples_per_patch
