"""OneHotAdapter: a label (one-hot or soft) as a single input token, [batch, C] -> [batch, 1, C].

The official multimodal autoencoder's label modality. No parameters.
"""

import flax.linen as nn
import jax.numpy as jnp

from perceiver_jax.nn.model_stats import Stats
from perceiver_jax.nn.typing import DType


class OneHotAdapter(nn.Module):
  """Labels [batch, num_classes] -> one token [batch, 1, num_classes] in `dtype`."""
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32  # The adapter protocol's field; there are no parameters.

  def __call__(self, inputs, deterministic: bool = True) -> jnp.ndarray:
    del deterministic  # No dropout.
    if inputs.ndim != 2:
      raise ValueError(
          f"OneHotAdapter expects labels [batch, num_classes], got shape {inputs.shape}; "
          "one-hot encode integer labels with jax.nn.one_hot first.")
    return inputs[:, None, :].astype(self.dtype)

  @nn.nowrap
  def stats(self, input_shape) -> Stats:
    """One-hot labels [classes] -> one token [1, classes]."""
    return Stats(0, 0, (1, input_shape[-1]))
