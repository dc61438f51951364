"""Perceiver IO output adapters: decoded [b, o, c] -> task outputs.

PerceiverIO calls `output_adapter(decoded, deterministic=..., subsampled_points=...)`, the
latter None unless only some output points were decoded (see `subsampling.py`).

- `ClassificationOutput`: [b, 1, c] -> logits [b, c], or [b, num_classes] through a Dense.
- `GridOutput`: [b, prod(output_index_dims), c] -> optional Dense(num_output_channels) ->
  [b, *output_index_dims, c'] * scale; after subsampled decoding [b, k, c'] * scale, not
  reshaped. Video reconstruction is GridOutput((T, H, W), num_output_channels=3).
- `FlowOutput`: GridOutput with scale 1/100, as the official optical-flow decoder.
- `AudioOutput`: audio reconstruction, [b, patches, c] -> Dense(samples_per_patch) ->
  samples [b, patches * samples_per_patch] (also when subsampled).
- `EmbeddingOutput`: MLM logits tied to the input embedding, input_adapter.attend(decoded) +
  bias -> [b, o, vocab_size]; PerceiverIO hands it its input adapter (`uses_input_adapter`).
- `MultimodalOutput`: splits [b, sum_m o_m, c] into modalities (sorted names, as
  MultimodalQuery concatenates them) and applies each modality's output adapter ->
  {modality: output}.
"""

from typing import Mapping, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from perceiver_jax.io.adapters.multimodal import modality_points, split_modalities
from perceiver_jax.nn import model_stats
from perceiver_jax.nn.model_stats import Stats, dense_stats
from perceiver_jax.nn.typing import DType
from perceiver_jax.nn.validation import check_index_dims, check_positive


def _dense(module, features: int, x):
  return nn.Dense(features, dtype=module.dtype, param_dtype=module.param_dtype,
                  name="projection")(x)


class ClassificationOutput(nn.Module):
  """Decoded [b, 1, c] (one query) -> logits [b, c], or [b, num_classes] via a Dense layer."""
  num_classes: Optional[int] = None  # None: the decoded channels are the logits.
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32

  def __post_init__(self):
    check_positive(self, "num_classes")
    super().__post_init__()

  @nn.compact
  def __call__(self, decoded, deterministic: bool = True, subsampled_points=None) -> jnp.ndarray:
    del deterministic, subsampled_points  # No dropout; one query is never subsampled.
    if decoded.ndim != 3 or decoded.shape[1] != 1:
      raise ValueError(f"ClassificationOutput expects [batch, 1, channels], got {decoded.shape}.")
    logits = decoded[:, 0]
    return logits if self.num_classes is None else _dense(self, self.num_classes, logits)

  @nn.nowrap
  def stats(self, decoded_shape) -> Stats:
    """Decoded [1, c] -> logits [num_classes or c]."""
    projection = _projection((decoded_shape[-1],), self.num_classes)
    return Stats(projection.params, projection.flops, projection.output_shape[-1:])


class GridOutput(nn.Module):
  """Decoded [b, prod(output_index_dims), c] -> [b, *output_index_dims, c'] * scale."""
  output_index_dims: Sequence[int]
  num_output_channels: Optional[int] = None  # Dense projection to c'; None keeps c' = c.
  scale: float = 1.0
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32

  def __post_init__(self):
    check_index_dims(self, "output_index_dims")
    check_positive(self, "num_output_channels")
    super().__post_init__()

  @nn.compact
  def __call__(self, decoded, deterministic: bool = True, subsampled_points=None):
    del deterministic  # No dropout.
    if self.num_output_channels is not None:
      decoded = _dense(self, self.num_output_channels, decoded)
    decoded = decoded * jnp.asarray(self.scale, decoded.dtype)
    if subsampled_points is not None:
      return decoded
    num = int(np.prod(self.output_index_dims))
    if decoded.ndim != 3 or decoded.shape[1] != num:
      raise ValueError(
          f"{type(self).__name__} expects [batch, {num}, channels] for output_index_dims="
          f"{tuple(self.output_index_dims)}, got {decoded.shape}.")
    return decoded.reshape((decoded.shape[0],) + tuple(self.output_index_dims) + decoded.shape[2:])

  @nn.nowrap
  def stats(self, decoded_shape) -> Stats:
    """Decoded [outputs, c] -> [*output_index_dims, num_output_channels or c]."""
    projection = _projection(decoded_shape, self.num_output_channels)
    return Stats(projection.params, projection.flops,
                 tuple(self.output_index_dims) + projection.output_shape[-1:])


class FlowOutput(GridOutput):
  """Optical flow [b, *output_index_dims, 2]: GridOutput divided by 100 (official FlowDecoder)."""
  scale: float = 0.01


class AudioOutput(nn.Module):
  """Decoded [b, patches, c] -> Dense(samples_per_patch) -> samples [b, patches * samples_per_patch]."""
  samples_per_patch: int
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32

  def __post_init__(self):
    check_positive(self, "samples_per_patch")
    super().__post_init__()

  @nn.compact
  def __call__(self, decoded, deterministic: bool = True, subsampled_points=None):
    del deterministic, subsampled_points  # No dropout; subsampled patches flatten the same way.
    if decoded.ndim != 3:
      raise ValueError(f"AudioOutput expects [batch, patches, channels], got {decoded.shape}.")
    samples = _dense(self, self.samples_per_patch, decoded)
    return samples.reshape(samples.shape[0], -1)

  @nn.nowrap
  def stats(self, decoded_shape) -> Stats:
    """Decoded [patches, c] -> samples [patches * samples_per_patch]."""
    projection = _projection(decoded_shape, self.samples_per_patch)
    return Stats(projection.params, projection.flops, (decoded_shape[0] * self.samples_per_patch,))


class EmbeddingOutput(nn.Module):
  """MLM head: logits = input_adapter.attend(decoded) + bias -> [b, o, vocab_size].

  The input adapter (e.g. TextAdapter) holds the one embedding matrix, so its weights are tied;
  the bias [vocab_size] starts at zero.
  """
  vocab_size: int
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32
  uses_input_adapter = True  # PerceiverIO passes input_adapter=...

  def __post_init__(self):
    check_positive(self, "vocab_size")
    super().__post_init__()

  @nn.compact
  def __call__(self, decoded, deterministic: bool = True, subsampled_points=None,
               input_adapter=None) -> jnp.ndarray:
    del deterministic, subsampled_points  # No dropout; logits per decoded position either way.
    if input_adapter is None or not hasattr(input_adapter, "attend"):
      raise ValueError("EmbeddingOutput needs an input_adapter with an `attend` method "
                       "(e.g. TextAdapter) to tie its logits to the input embedding.")
    logits = input_adapter.attend(decoded.astype(self.dtype))
    if logits.shape[-1] != self.vocab_size:
      raise ValueError(f"EmbeddingOutput.vocab_size={self.vocab_size} differs from the input "
                       f"embedding's vocabulary {logits.shape[-1]}.")
    bias = self.param("bias", nn.initializers.zeros, (self.vocab_size,), self.param_dtype)
    return logits.astype(self.dtype) + bias.astype(self.dtype)

  @nn.nowrap
  def stats(self, decoded_shape) -> Stats:
    """Decoded [outputs, c] -> logits [outputs, vocab_size] (tied embedding plus a bias)."""
    outputs, channels = decoded_shape
    return Stats(self.vocab_size, 2 * outputs * channels * self.vocab_size,
                 (outputs, self.vocab_size))


class MultimodalOutput(nn.Module):
  """Decoded [b, sum_m o_m, c] -> {modality: adapters[modality](its [b, o_m, c] slice)}.

  o_m is num_outputs[modality], or the number of points when `subsampled_points` (a
  {modality: int [k] or [b, k] indices} mapping, as given to MultimodalQuery) names the
  modality; modalities are in sorted-name order.
  """
  adapters: Mapping[str, nn.Module]
  num_outputs: Mapping[str, int]

  def __post_init__(self):
    if not self.adapters or set(self.adapters) != set(self.num_outputs):
      raise ValueError(
          f"MultimodalOutput.adapters {sorted(self.adapters)} and MultimodalOutput.num_outputs "
          f"{sorted(self.num_outputs)} must name the same, non-empty set of modalities.")
    if any(n < 1 for n in self.num_outputs.values()):
      raise ValueError(f"MultimodalOutput.num_outputs must be >= 1, got {dict(self.num_outputs)}.")
    super().__post_init__()

  def __call__(self, decoded, deterministic: bool = True, subsampled_points=None):
    points = modality_points(subsampled_points, self.adapters, "MultimodalOutput")
    sizes = {m: self.num_outputs[m] if points.get(m) is None else np.shape(points[m])[-1]
             for m in self.adapters}
    parts = split_modalities(decoded, sizes)
    return {m: self.adapters[m](parts[m], deterministic=deterministic,
                                subsampled_points=points.get(m))
            for m in sorted(self.adapters)}

  @nn.nowrap
  def stats(self, decoded_shape) -> Stats:
    """Decoded [sum of outputs, c] -> {modality: its adapter's output shape}."""
    parts = {m: model_stats.stats(self.adapters[m], (self.num_outputs[m], decoded_shape[-1]))
             for m in sorted(self.adapters)}
    return Stats(sum(s.params for s in parts.values()), sum(s.flops for s in parts.values()),
                 {m: s.output_shape for m, s in parts.items()})


def _projection(shape, features: Optional[int]) -> Stats:
  if features is None:
    return Stats(0, 0, tuple(shape))
  return dense_stats(shape[-1], features, int(np.prod(shape[:-1])))
