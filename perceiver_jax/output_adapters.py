"""Perceiver IO output adapters: decoded [b, o, c] -> task outputs.

- `ClassificationOutput`: [b, 1, classes] -> logits [b, classes].
- `GridOutput`: [b, prod(output_index_dims), c] -> [b, *output_index_dims, c] * scale; after
  subsampled decoding (PerceiverIO passes `subsampled=True`) [b, k, c] * scale, not reshaped.
- `FlowOutput`: GridOutput with scale 1/100, as the official optical-flow decoder.
- `EmbeddingOutput`: MLM logits tied to the input embedding, input_adapter.attend(decoded) +
  bias -> [b, o, vocab_size]; PerceiverIO hands it its input adapter (`uses_input_adapter`).
"""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from perceiver_jax.model_stats import Stats, stats
from perceiver_jax.typing import DType
from perceiver_jax.validation import check_index_dims, check_positive


class ClassificationOutput(nn.Module):
  """Decoded [b, 1, classes] (one query) -> logits [b, classes]."""

  def __call__(self, decoded, deterministic: bool = True) -> jnp.ndarray:
    del deterministic  # No dropout.
    if decoded.ndim != 3 or decoded.shape[1] != 1:
      raise ValueError(f"ClassificationOutput expects [batch, 1, classes], got {decoded.shape}.")
    return decoded[:, 0]


class GridOutput(nn.Module):
  """Decoded [b, prod(output_index_dims), c] -> [b, *output_index_dims, c] * scale."""
  output_index_dims: Sequence[int]
  scale: float = 1.0

  def __post_init__(self):
    check_index_dims(self, "output_index_dims")
    super().__post_init__()

  def __call__(self, decoded, deterministic: bool = True, subsampled: bool = False):
    del deterministic  # No dropout.
    decoded = decoded * jnp.asarray(self.scale, decoded.dtype)
    if subsampled:
      return decoded
    num = int(np.prod(self.output_index_dims))
    if decoded.ndim != 3 or decoded.shape[1] != num:
      raise ValueError(
          f"{type(self).__name__} expects [batch, {num}, channels] for output_index_dims="
          f"{tuple(self.output_index_dims)}, got {decoded.shape}.")
    return decoded.reshape((decoded.shape[0],) + tuple(self.output_index_dims) + decoded.shape[2:])


class FlowOutput(GridOutput):
  """Optical flow [b, *output_index_dims, 2]: GridOutput divided by 100 (official FlowDecoder)."""
  scale: float = 0.01


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
  def __call__(self, decoded, deterministic: bool = True, input_adapter=None) -> jnp.ndarray:
    del deterministic  # No dropout.
    if input_adapter is None or not hasattr(input_adapter, "attend"):
      raise ValueError("EmbeddingOutput needs an input_adapter with an `attend` method "
                       "(e.g. TextAdapter) to tie its logits to the input embedding.")
    logits = input_adapter.attend(decoded.astype(self.dtype))
    if logits.shape[-1] != self.vocab_size:
      raise ValueError(f"EmbeddingOutput.vocab_size={self.vocab_size} differs from the input "
                       f"embedding's vocabulary {logits.shape[-1]}.")
    bias = self.param("bias", nn.initializers.zeros, (self.vocab_size,), self.param_dtype)
    return logits.astype(self.dtype) + bias.astype(self.dtype)


@stats.register
def _(module: ClassificationOutput, decoded_shape) -> Stats:
  return Stats(0, 0, (decoded_shape[-1],))


@stats.register
def _(module: GridOutput, decoded_shape) -> Stats:
  return Stats(0, 0, tuple(module.output_index_dims) + (decoded_shape[-1],))


@stats.register
def _(module: EmbeddingOutput, decoded_shape) -> Stats:
  outputs, channels = decoded_shape
  return Stats(module.vocab_size, 2 * outputs * channels * module.vocab_size,
               (outputs, module.vocab_size))
