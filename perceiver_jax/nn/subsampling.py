"""Subsampled decoding: pick k of a decoder's n output queries.

`subsampled_points` are int indices into the flattened output axis, [k] (shared by the batch)
or [batch, k]; Perceiver IO decodes a random subset of a large output (flow, video, audio) in
training and every point in evaluation. `subsample(queries [b, n, c], points) -> [b, k, c]`.
"""

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

