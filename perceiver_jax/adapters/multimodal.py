"""MultimodalAdapter: several modalities in one input array, as Perceiver IO's multimodal model.

inputs {modality: raw input} -> each modality's adapter -> [batch, n_m, c_m]; every modality
is padded to C = max_m(c_m) + min_padding_size channels with a learned padding vector
[C - c_m] (truncated normal, std-before-truncation 0.02) that also tells the modalities
apart; the modalities are concatenated in sorted-name order -> [batch, sum_m n_m, C].
`split_modalities` undoes the concatenation given each modality's size.
"""

from typing import Dict, Mapping

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from perceiver_jax.model_stats import Stats, stats
from perceiver_jax.typing import DType
from perceiver_jax.validation import check_positive


def split_modalities(x: jnp.ndarray, sizes: Mapping[str, int]) -> Dict[str, jnp.ndarray]:
  """[batch, sum(sizes), C] -> {modality: [batch, size, C]}, modalities in sorted order."""
  names = sorted(sizes)
  total = sum(sizes[name] for name in names)
  if x.shape[1] != total:
    raise ValueError(
        f"split_modalities: index dim {x.shape[1]} != sum of sizes {total} {dict(sizes)}.")
  bounds = np.cumsum([0] + [sizes[name] for name in names])
  return {name: x[:, start:end] for name, start, end in zip(names, bounds[:-1], bounds[1:])}


class MultimodalAdapter(nn.Module):
  """Per-modality adapters, padded to common channels and concatenated; see the docstring."""
  adapters: Mapping[str, nn.Module]
  min_padding_size: int = 2
  init_scale: float = 0.02
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32

  def __post_init__(self):
    if not self.adapters:
      raise ValueError("MultimodalAdapter.adapters must name at least one modality.")
    check_positive(self, "min_padding_size")
    super().__post_init__()

  @nn.compact
  def __call__(self, inputs: Mapping[str, jnp.ndarray], deterministic: bool = True) -> jnp.ndarray:
    if set(inputs) != set(self.adapters):
      raise ValueError(
          f"MultimodalAdapter got modalities {sorted(inputs)} but has adapters for "
          f"{sorted(self.adapters)}.")
    adapted = {name: self.adapters[name](inputs[name], deterministic=deterministic)
               for name in sorted(self.adapters)}
    channels = max(x.shape[-1] for x in adapted.values()) + self.min_padding_size
    padded = []
    for name, x in adapted.items():
      padding = self.param(f"{name}_padding", nn.initializers.truncated_normal(self.init_scale),
                           (channels - x.shape[-1],), self.param_dtype)
      padding = jnp.broadcast_to(padding.astype(self.dtype), x.shape[:-1] + padding.shape)
      padded.append(jnp.concatenate([x.astype(self.dtype), padding], axis=-1))
    return jnp.concatenate(padded, axis=1)


@stats.register
def _(module: MultimodalAdapter, input_shapes) -> Stats:
  per_modality = {name: stats(module.adapters[name], tuple(input_shapes[name]))
                  for name in sorted(module.adapters)}
  channels = max(s.output_shape[-1] for s in per_modality.values()) + module.min_padding_size
  params = sum(s.params + channels - s.output_shape[-1] for s in per_modality.values())
  tokens = sum(s.output_shape[0] for s in per_modality.values())
  return Stats(params, sum(s.flops for s in per_modality.values()), (tokens, channels))
