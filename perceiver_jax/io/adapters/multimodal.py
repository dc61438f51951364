"""MultimodalAdapter: several modalities in one input array, as Perceiver IO's multimodal model.

inputs {modality: raw input} -> each modality's adapter -> [batch, n_m, c_m]; every modality
is padded to C = max_m(c_m) + min_padding_size channels with a learned padding vector
[C - c_m] (truncated normal, std-before-truncation 0.02) that also tells the modalities
apart; the modalities are concatenated in sorted-name order -> [batch, sum_m n_m, C].
`split_modalities` undoes the concatenation given each modality's size.

`mask_probs` {modality: p} (as the official multimodal autoencoder, which masks the label
with p = 1 so the model must infer it): each of the modality's tokens is replaced by a
learned mask token [C] with probability p, in training and evaluation alike. 0 < p < 1 draws
from the 'masking' rng stream (`apply(..., rngs={'masking': key})`). `masked` {modality: bool
[batch]} given at call time decides instead of the draw for those modalities: True replaces all
of that example's tokens of the modality (e.g. evaluation masks the label always).
"""

from typing import Dict, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from perceiver_jax.nn import model_stats
from perceiver_jax.nn.model_stats import Stats
from perceiver_jax.nn.typing import DType
from perceiver_jax.nn.validation import check_positive


def pad_to_common_channels(module: nn.Module, parts: Mapping[str, jnp.ndarray],
                           min_padding_size: int) -> Dict[str, jnp.ndarray]:
  """{name: [b, n, c_name]} -> {name: [b, n, C]}, C = max(c) + min_padding_size, each padded
  with `module`'s learned vector '<name>_padding' [C - c_name] (truncated normal,
  module.init_scale); in module.dtype. Call from `module`'s compact method."""
  channels = max(x.shape[-1] for x in parts.values()) + min_padding_size
  padded = {}
  for name, x in parts.items():
    padding = module.param(f"{name}_padding",
                           nn.initializers.truncated_normal(module.init_scale),
                           (channels - x.shape[-1],), module.param_dtype)
    padding = jnp.broadcast_to(padding.astype(module.dtype), x.shape[:-1] + padding.shape)
    padded[name] = jnp.concatenate([x.astype(module.dtype), padding], axis=-1)
  return padded


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
  mask_probs: Optional[Mapping[str, float]] = None
  init_scale: float = 0.02
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32

  def __post_init__(self):
    if not self.adapters:
      raise ValueError("MultimodalAdapter.adapters must name at least one modality.")
    check_positive(self, "min_padding_size")
    if self.mask_probs is not None:
      if not set(self.mask_probs) <= set(self.adapters):
        raise ValueError(f"MultimodalAdapter.mask_probs names {sorted(self.mask_probs)}, not all "
                         f"of them modalities {sorted(self.adapters)}.")
      if any(not 0.0 <= p <= 1.0 for p in self.mask_probs.values()):
        raise ValueError(
            f"MultimodalAdapter.mask_probs must be in [0, 1], got {dict(self.mask_probs)}.")
    super().__post_init__()

  @nn.compact
  def __call__(self, inputs: Mapping[str, jnp.ndarray], deterministic: bool = True,
               masked: Optional[Mapping[str, jnp.ndarray]] = None) -> jnp.ndarray:
    if set(inputs) != set(self.adapters):
      raise ValueError(
          f"MultimodalAdapter got modalities {sorted(inputs)} but has adapters for "
          f"{sorted(self.adapters)}.")
    adapted = {name: self.adapters[name](inputs[name], deterministic=deterministic)
               for name in sorted(self.adapters)}
    masked = dict(masked or {})
    if not set(masked) <= set(self.mask_probs or {}):
      raise ValueError(f"MultimodalAdapter got masked={sorted(masked)} but has mask tokens only "
                       f"for the modalities of mask_probs {sorted(self.mask_probs or {})}.")
    padded = pad_to_common_channels(self, adapted, self.min_padding_size)
    for name in padded:
      if self.mask_probs is not None and name in self.mask_probs:
        padded[name] = self._mask(name, padded[name], masked.get(name))
    return jnp.concatenate(list(padded.values()), axis=1)

  def _mask(self, name: str, x: jnp.ndarray, masked=None) -> jnp.ndarray:
    """Replaces each token of x [b, n, C] by the mask token with probability mask_probs[name],
    or every token of the examples where `masked` (bool [b]) is True when it is given."""
    token = self.param(f"{name}_mask_token", nn.initializers.truncated_normal(self.init_scale),
                       (x.shape[-1],), self.param_dtype).astype(self.dtype)
    if masked is not None:
      return jnp.where(jnp.reshape(masked, (x.shape[0], 1, 1)), token, x)
    prob = self.mask_probs[name]
    if prob == 0.0:
      return x
    if prob == 1.0:
      return jnp.broadcast_to(token, x.shape)
    masked = jax.random.bernoulli(self.make_rng("masking"), prob, x.shape[:2])
    return jnp.where(masked[..., None], token, x)

  @nn.nowrap
  def stats(self, input_shapes) -> Stats:
    """{modality: shape} -> [sum of tokens, common channels]: the adapters plus padding."""
    per_modality = {name: model_stats.stats(self.adapters[name], tuple(input_shapes[name]))
                    for name in sorted(self.adapters)}
    channels = max(s.output_shape[-1] for s in per_modality.values()) + self.min_padding_size
    params = sum(s.params + channels - s.output_shape[-1] for s in per_modality.values())
    params += channels * len(self.mask_probs or {})
    tokens = sum(s.output_shape[0] for s in per_modality.values())
    return Stats(params, sum(s.flops for s in per_modality.values()), (tokens, channels))


def modality_points(subsampled_points, modalities, owner: str) -> dict:
  """Multimodal subsampled_points as {modality: points}; ValueError unless a mapping over
  (a subset of) `modalities`. None gives {} (every modality decoded in full)."""
  if subsampled_points is None:
    return {}
  if not isinstance(subsampled_points, Mapping) or not set(subsampled_points) <= set(modalities):
    raise ValueError(
        f"{owner} needs subsampled_points as a {{modality: indices}} mapping over "
        f"{sorted(modalities)}, got {subsampled_points!r}.")
  return dict(subsampled_points)
