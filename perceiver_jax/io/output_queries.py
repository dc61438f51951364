"""Perceiver IO output queries for grid-shaped outputs (flow, video, audio, MLM).

Each query module maps `inputs` [batch, ...] (only the batch size is used, except by
`InputQuery`) to decoder queries [batch, num_outputs, channels]. With `subsampled_points`
(see `subsampling.py`) only those queries are returned, [batch, k, channels]: Perceiver IO
decodes a random subset of output points in training.

- `FourierQuery`: Fourier features of the output grid (no parameters); grid point i of n
  along a dim sits at -1 + 2 i / (n - 1) (`grid_positions='linspace'`, the encoder's grid) or
  at -1 + 2 i / n ('cell_start', as the official and transformers decoders place subsampled
  queries, which the released multimodal checkpoint was trained with).
- `TrainableGridQuery`: learned queries, one per grid point.
- `InputQuery`: the adapted inputs themselves (the official optical-flow decoder).
- `MultimodalQuery`: one query module per modality, each padded to C = max_m(c_m) +
  min_padding_size channels with a learned vector [C - c_m] (truncated normal, std 0.02) and
  concatenated in sorted-name order -> [b, sum_m o_m, C]; `subsampled_points` is then a
  {modality: indices} mapping (modalities left out are decoded in full). MultimodalOutput
  splits the decoded array back.
"""

from typing import Mapping, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from perceiver_jax.nn import model_stats
from perceiver_jax.nn.model_stats import Stats
from perceiver_jax.nn.position_encoding import (TrainablePositionEncoding, batched_fourier_features,
                                                fourier_features_at, fourier_num_channels)
from perceiver_jax.io.adapters.multimodal import modality_points, pad_to_common_channels
from perceiver_jax.nn.subsampling import check_points, subsample
from perceiver_jax.nn.typing import DType
from perceiver_jax.nn.validation import check_choice, check_index_dims, check_positive


class FourierQuery(nn.Module):
  """Fourier features of the output grid: [b, prod(output_index_dims), channels].

  Subsampled, only the k requested points' features are computed (a 16x224x224 video grid
  is never materialised). `grid_positions` places the points; see the module docstring.
  """
  output_index_dims: Sequence[int]
  num_frequency_bands: int = 64
  max_resolution: Optional[Sequence[int]] = None  # Defaults to output_index_dims.
  concat_pos: bool = True
  sine_only: bool = False
  grid_positions: str = "linspace"  # Or 'cell_start'.
  dtype: DType = jnp.float32

  def __post_init__(self):
    check_index_dims(self, "output_index_dims")
    check_positive(self, "num_frequency_bands")
    check_choice(self, "grid_positions", ("linspace", "cell_start"))
    if self.max_resolution is not None and len(self.max_resolution) != len(self.output_index_dims):
      raise ValueError(
          f"FourierQuery.max_resolution {tuple(self.max_resolution)} needs one entry per "
          f"output index dim {tuple(self.output_index_dims)}.")
    super().__post_init__()

  def __call__(self, inputs, subsampled_points=None) -> jnp.ndarray:
    batch = inputs.shape[0]
    dims = tuple(self.output_index_dims)
    linspace = self.grid_positions == "linspace"
    if subsampled_points is None and linspace:
      return batched_fourier_features(dims, batch, self.num_frequency_bands,
                                      self.max_resolution, self.concat_pos, self.sine_only,
                                      self.dtype)
    if subsampled_points is None:
      points = jnp.arange(int(np.prod(dims)))
    else:
      points = check_points(subsampled_points, batch)
    coords = jnp.stack(jnp.unravel_index(points, dims), axis=-1).astype(jnp.float32)
    spans = jnp.asarray([max(n - 1, 1) if linspace else n for n in dims], jnp.float32)
    positions = 2.0 * coords / spans - 1.0
    features = fourier_features_at(positions, self.num_frequency_bands,
                                   self.max_resolution or dims, self.concat_pos, self.sine_only)
    features = features.astype(self.dtype)
    return jnp.broadcast_to(features, (batch,) + features.shape[-2:])

  @nn.nowrap
  def stats(self, input_shape) -> Stats:
    """Fourier features of the output grid [prod(output_index_dims), channels]."""
    del input_shape  # Queries depend only on the batch size.
    channels = fourier_num_channels(len(self.output_index_dims), self.num_frequency_bands,
                                    self.concat_pos, self.sine_only)
    return Stats(0, 0, (int(np.prod(self.output_index_dims)), channels))


class TrainableGridQuery(nn.Module):
  """Learned queries, one per output grid point: [b, prod(output_index_dims), num_channels]."""
  output_index_dims: Sequence[int]
  num_channels: int
  init_scale: float = 0.02
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32

  def __post_init__(self):
    check_index_dims(self, "output_index_dims")
    check_positive(self, "num_channels")
    super().__post_init__()

  @nn.compact
  def __call__(self, inputs, subsampled_points=None) -> jnp.ndarray:
    queries = TrainablePositionEncoding(self.output_index_dims, self.num_channels, self.init_scale,
                                        self.dtype, self.param_dtype,
                                        name="queries")(inputs.shape[0])
    return subsample(queries, subsampled_points)

  @nn.nowrap
  def stats(self, input_shape) -> Stats:
    """Learned queries [prod(output_index_dims), num_channels]."""
    del input_shape  # Queries depend only on the batch size.
    shape = (int(np.prod(self.output_index_dims)), self.num_channels)
    return Stats(int(np.prod(shape)), 0, shape)


class InputQuery(nn.Module):
  """The adapted inputs [b, n, c] are the queries (one output per input point)."""

  def __call__(self, inputs, subsampled_points=None) -> jnp.ndarray:
    if inputs.ndim != 3:
      raise ValueError(f"InputQuery expects inputs [batch, index, channels], got {inputs.shape}.")
    return subsample(inputs, subsampled_points)

  @nn.nowrap
  def stats(self, input_shape) -> Stats:
    """The adapted inputs [index, channels] are the queries."""
    return Stats(0, 0, tuple(input_shape))


class MultimodalQuery(nn.Module):
  """Per-modality queries padded to common channels and concatenated; see the docstring."""
  queries: Mapping[str, nn.Module]
  min_padding_size: int = 2
  init_scale: float = 0.02
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32

  def __post_init__(self):
    if not self.queries:
      raise ValueError("MultimodalQuery.queries must name at least one modality.")
    for name, query in self.queries.items():
      if isinstance(query, InputQuery):
        raise ValueError(
            f"MultimodalQuery.queries[{name!r}] is an InputQuery, but the modalities' inputs are "
            "concatenated; use a FourierQuery, TrainableGridQuery or TrainableQuery.")
    check_positive(self, "min_padding_size")
    super().__post_init__()

  @nn.compact
  def __call__(self, inputs, subsampled_points=None) -> jnp.ndarray:
    points = modality_points(subsampled_points, self.queries, "MultimodalQuery")
    queries = {name: self.queries[name](inputs, subsampled_points=points.get(name))
               for name in sorted(self.queries)}
    padded = pad_to_common_channels(self, queries, self.min_padding_size)
    return jnp.concatenate(list(padded.values()), axis=1)

  @nn.nowrap
  def stats(self, input_shape) -> Stats:
    """{modality: queries} -> [sum of queries, common channels], padding included."""
    parts = [model_stats.stats(self.queries[name], input_shape) for name in sorted(self.queries)]
    channels = max(s.output_shape[-1] for s in parts) + self.min_padding_size
    params = sum(s.params + channels - s.output_shape[-1] for s in parts)
    return Stats(params, 0, (sum(s.output_shape[0] for s in parts), channels))
