"""Subsampled decoding: pick k of a decoder's n output queries.

`subsampled_points` are int indices into the flattened output axis, [k] (shared by the batch)
or [batch, k]; Perceiver IO decodes a random subset of a large output (flow, video, audio) in
training and every point in evaluation. `subsample(queries [b, n, c], points) -> [b, k, c]`;
`random_points(rng, n, k, batch_size=None)` draws k distinct points for a training step.
"""

from typing import Mapping

import jax
import jax.numpy as jnp


def check_points(subsampled_points, batch_size: int) -> jnp.ndarray:
  """subsampled_points as an int array [k] or [batch_size, k]; ValueError otherwise."""
  points = jnp.asarray(subsampled_points)
  if not jnp.issubdtype(points.dtype, jnp.integer) or points.ndim not in (1, 2):
    raise ValueError("subsampled_points must be int indices [k] or [batch, k], got "
                     f"{points.dtype} {points.shape}.")
  if points.ndim == 2 and points.shape[0] != batch_size:
    raise ValueError(f"subsampled_points [batch, k] has batch {points.shape[0]}, "
                     f"queries have batch {batch_size}.")
  return points


def subsample(queries: jnp.ndarray, subsampled_points) -> jnp.ndarray:
  """queries [b, n, c] at indices [k] or [b, k] -> [b, k, c]; None returns queries."""
  if subsampled_points is None:
    return queries
  points = check_points(subsampled_points, queries.shape[0])
  if points.ndim == 1:
    return jnp.take(queries, points, axis=1)
  return jnp.take_along_axis(queries, points[:, :, None], axis=1)


def random_points(rng, num_outputs: int, num_points: int, batch_size: int = None) -> jnp.ndarray:
  """Distinct random indices into num_outputs: [num_points], or [batch_size, num_points]."""
  if not 1 <= num_points <= num_outputs:
    raise ValueError(f"random_points: num_points must be in [1, num_outputs={num_outputs}], "
                     f"got {num_points}.")
  if batch_size is None:
    return jax.random.choice(rng, num_outputs, (num_points,), replace=False)
  return jax.vmap(lambda key: jax.random.choice(key, num_outputs, (num_points,), replace=False))(
      jax.random.split(rng, batch_size))


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
