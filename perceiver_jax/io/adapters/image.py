"""ImageAdapter and space_to_depth: images [batch, H, W, C] -> [batch, h * w, channels].

`space_to_depth(x, s, t)`: [b, H, W, C] -> [b, H/s, W/s, s*s*C] and [b, T, H, W, C] ->
  [b, T/t, H/s, W/s, t*s*s*C]; each output channel vector is its block in (dt, dh, dw, c) order.

`ImageAdapter` featurises with `prep_type` (s = spatial_downsample):
- 'pixels':  x[:, ::s, ::s]                                -> [b, ceil(H/s), ceil(W/s), C]
- 'patches': space_to_depth(x, s), then Dense(out_channels) if conv_after_patching
                                                             -> [b, H/s, W/s, s*s*C or out_channels]
- 'conv1x1': 1x1 conv, stride s, with bias                  -> [b, ceil(H/s), ceil(W/s), out_channels]
- 'conv':    7x7 stride-2 conv without bias -> BatchNorm -> ReLU -> 3x3 stride-2 max-pool
             (s must be 4), padded as `stem_padding` says:
             'same' (DeepMind): SAME conv and pool -> [b, ceil(H/4), ceil(W/4), out_channels];
             'transformers': conv zero-padded by 3 on every side, pool unpadded (224 -> 112 -> 55)
             -> [b, (ceil(H/2) - 1) // 2, (ceil(W/2) - 1) // 2, out_channels], H and W >= 5.
  BatchNorm normalises with batch statistics and updates the 'batch_stats' collection (mark it
  mutable) when deterministic=False, and uses the running averages when deterministic=True.
Then a position encoding of the (h, w) grid: 'fourier' (fourier_features, max_resolution
defaults to (h, w)), 'trainable' (num_position_channels, default the feature channels) or
'none', optionally projected by Dense(project_pos_dim) (the official learned-position ImageNet
model), concatenated to or added to ('add' needs equal channels) the flattened features.
"""

from typing import Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from perceiver_jax.nn.model_stats import Stats, dense_stats
from perceiver_jax.nn.position_encoding import (TrainablePositionEncoding, batched_fourier_features,
                                                fourier_num_channels)
from perceiver_jax.nn.typing import DType
from perceiver_jax.nn.validation import check_choice, check_positive, check_rate

PREP_TYPES = ("pixels", "patches", "conv1x1", "conv")
POSITION_ENCODINGS = ("fourier", "trainable", "none")
STEM_PADDINGS = ("same", "transformers")


def space_to_depth(x, spatial_block: int, temporal_block: Optional[int] = None):
  """Moves s x s (x t) blocks into channels; see the module docstring for shapes and order."""
  if x.ndim == 4 and temporal_block in (None, 1):
    blocks = (spatial_block, spatial_block)
  elif x.ndim == 5:
    blocks = (temporal_block or 1, spatial_block, spatial_block)
  else:
    raise ValueError(
        f"space_to_depth expects [b, H, W, C] or [b, T, H, W, C] (temporal_block only with "
        f"the latter), got shape {x.shape} and temporal_block={temporal_block}.")
  batch, dims = x.shape[0], x.shape[1:-1]
  grid = block_grid(dims, blocks)
  split = [batch] + [v for n, k in zip(grid, blocks) for v in (n, k)] + [x.shape[-1]]
  d = len(dims)
  order = [0] + [1 + 2 * i for i in range(d)] + [2 + 2 * i for i in range(d)] + [1 + 2 * d]
  return x.reshape(split).transpose(order).reshape(
      [batch] + grid + [int(np.prod(blocks)) * x.shape[-1]])


def block_grid(dims: Sequence[int], blocks: Sequence[int]) -> list:
  """dims // blocks, raising ValueError unless every block is >= 1 and divides its dim."""
  if any(k < 1 or n % k for n, k in zip(dims, blocks)):
    raise ValueError(
        f"space_to_depth blocks {tuple(blocks)} must be >= 1 and divide the dims {tuple(dims)}.")
  return [n // k for n, k in zip(dims, blocks)]


class ImageAdapter(nn.Module):
  """Image featurisation plus a position encoding; see the module docstring."""
  prep_type: str = "pixels"
  spatial_downsample: Optional[int] = None  # Defaults to 4 for 'conv', else 1.
  out_channels: int = 64  # Channels of 'conv', 'conv1x1' and conv_after_patching.
  conv_after_patching: bool = False
  position_encoding: str = "fourier"
  concat_or_add: str = "concat"
  num_frequency_bands: int = 64
  max_resolution: Optional[Sequence[int]] = None  # Defaults to the featurised (h, w) grid.
  concat_pos: bool = True
  sine_only: bool = False
  num_position_channels: Optional[int] = None  # Trainable; defaults to the feature channels.
  project_pos_dim: Optional[int] = None  # Dense projection of the position encoding.
  batch_norm_momentum: float = 0.9
  batch_norm_epsilon: float = 1e-5
  stem_padding: str = "same"  # 'conv' only: 'same' (DeepMind) or 'transformers' (PyTorch port).
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32

  def __post_init__(self):
    check_choice(self, "prep_type", PREP_TYPES)
    check_choice(self, "position_encoding", POSITION_ENCODINGS)
    check_choice(self, "concat_or_add", ("concat", "add"))
    check_choice(self, "stem_padding", STEM_PADDINGS)
    if self.stem_padding != "same" and self.prep_type != "conv":
      raise ValueError(f"ImageAdapter.stem_padding={self.stem_padding!r} only applies to "
                       f"prep_type='conv', got prep_type={self.prep_type!r}; leave it 'same'.")
    check_positive(self, "spatial_downsample", "out_channels", "num_frequency_bands",
                   "num_position_channels", "project_pos_dim")
    if self.project_pos_dim is not None and self.position_encoding == "none":
      raise ValueError("ImageAdapter.project_pos_dim needs a position encoding; "
                       "position_encoding='none' has none to project.")
    check_rate(self, "batch_norm_momentum")
    if self.prep_type == "conv" and self.spatial_downsample not in (None, 4):
      raise ValueError(
          f"ImageAdapter.spatial_downsample must be 4 (or None) for prep_type='conv', which "
          f"downsamples 4x; got {self.spatial_downsample}.")
    if self.max_resolution is not None and len(self.max_resolution) != 2:
      raise ValueError(
          f"ImageAdapter.max_resolution must have two entries (h, w), got {self.max_resolution}.")
    super().__post_init__()

  @property
  def downsample(self) -> int:
    """The spatial downsampling factor in effect."""
    return self.spatial_downsample or (4 if self.prep_type == "conv" else 1)

  @nn.compact
  def __call__(self, inputs, deterministic: bool = True) -> jnp.ndarray:
    if inputs.ndim != 4:
      raise ValueError(f"ImageAdapter expects images [batch, H, W, C], got shape {inputs.shape}.")
    x, s = inputs.astype(self.dtype), self.downsample
    dense = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    if self.prep_type == "pixels":
      x = x[:, ::s, ::s]
    elif self.prep_type == "patches":
      x = space_to_depth(x, s)
      if self.conv_after_patching:
        x = nn.Dense(self.out_channels, name="patches_linear", **dense)(x)
    elif self.prep_type == "conv1x1":
      x = nn.Conv(self.out_channels, (1, 1), strides=s, name="conv1x1", **dense)(x)
    else:
      _conv_grid(self, x.shape[1:3])  # Checks the image is large enough before any work.
      same = self.stem_padding == "same"
      x = nn.Conv(self.out_channels, (7, 7), strides=2, padding="SAME" if same else 3,
                  use_bias=False, name="conv", **dense)(x)
      x = nn.BatchNorm(use_running_average=deterministic, momentum=self.batch_norm_momentum,
                       epsilon=self.batch_norm_epsilon, name="batch_norm", **dense)(x)
      x = nn.max_pool(nn.relu(x), (3, 3), strides=(2, 2), padding="SAME" if same else "VALID")
    batch, grid, channels = x.shape[0], x.shape[1:3], x.shape[-1]
    _position_channels(self, channels)  # Checks 'add' before any work.
    x = x.reshape(batch, -1, channels)
    if self.position_encoding == "none":
      return x
    if self.position_encoding == "fourier":
      positions = batched_fourier_features(grid, batch, self.num_frequency_bands,
                                           self.max_resolution, self.concat_pos, self.sine_only,
                                           self.dtype)
    else:
      positions = TrainablePositionEncoding(grid, self.num_position_channels or channels,
                                            name="position_encoding", **dense)(batch)
    if self.project_pos_dim is not None:
      positions = nn.Dense(self.project_pos_dim, name="position_projection", **dense)(positions)
    return x + positions if self.concat_or_add == "add" else jnp.concatenate([x, positions], -1)

  @nn.nowrap
  def stats(self, input_shape) -> Stats:
    """Images [H, W, C] -> [tokens, channels]: the prep_type's features plus positions."""
    height, width, channels = input_shape
    s = self.downsample
    if self.prep_type in ("pixels", "conv1x1"):
      grid = (_ceil_div(height, s), _ceil_div(width, s))
    elif self.prep_type == "patches":
      grid = block_grid((height, width), (s, s))
    else:
      grid = _conv_grid(self, (height, width))
    tokens = int(np.prod(grid))
    features = Stats(0, 0, (tokens, channels))
    if self.prep_type == "patches":
      features = Stats(0, 0, (tokens, s * s * channels))
      if self.conv_after_patching:
        features = dense_stats(s * s * channels, self.out_channels, tokens)
    elif self.prep_type == "conv1x1":
      features = dense_stats(channels, self.out_channels, tokens)
    elif self.prep_type == "conv":
      conv_tokens = _ceil_div(height, 2) * _ceil_div(width, 2)
      features = Stats(49 * channels * self.out_channels + 2 * self.out_channels,
                       2 * conv_tokens * 49 * channels * self.out_channels,
                       (tokens, self.out_channels))
    feature_channels = features.output_shape[-1]
    num_positions = _position_channels(self, feature_channels)
    encoding = _encoding_channels(self, feature_channels)
    params = features.params + (tokens * encoding if self.position_encoding == "trainable" else 0)
    flops = features.flops
    if self.project_pos_dim is not None:
      projection = dense_stats(encoding, self.project_pos_dim, tokens)
      params, flops = params + projection.params, flops + projection.flops
    out = feature_channels + (num_positions if self.concat_or_add == "concat" else 0)
    return Stats(params, flops, (tokens, out))


def _encoding_channels(module: ImageAdapter, feature_channels: int) -> int:
  """Channels of the position encoding before any projection."""
  if module.position_encoding == "none":
    return 0
  if module.position_encoding == "fourier":
    return fourier_num_channels(2, module.num_frequency_bands, module.concat_pos, module.sine_only)
  return module.num_position_channels or feature_channels


def _position_channels(module: ImageAdapter, feature_channels: int) -> int:
  """Channels of the (projected) position encoding; checks that 'add' sees equal widths."""
  num = module.project_pos_dim or _encoding_channels(module, feature_channels)
  if module.concat_or_add == "add" and num != feature_channels:
    raise ValueError(
        f"ImageAdapter.concat_or_add='add' needs position channels equal to the feature channels "
        f"({feature_channels}), but the {module.position_encoding!r} encoding has {num}; use "
        f"'concat', or match num_frequency_bands/concat_pos/sine_only, num_position_channels "
        f"or project_pos_dim.")
  return num


def _ceil_div(n: int, k: int) -> int:
  return -(-n // k)


def _conv_grid(module: ImageAdapter, image_dims: Sequence[int]) -> tuple:
  """The (h, w) grid the 'conv' stem makes of an image (H, W); see the module docstring."""
  if module.stem_padding == "same":
    return tuple(_ceil_div(n, 4) for n in image_dims)
  if min(image_dims) < 5:
    raise ValueError(
        f"ImageAdapter with stem_padding='transformers' needs images of at least 5x5 (its "
        f"unpadded 3x3 max-pool needs a 3x3 conv output), got {tuple(image_dims)}; use larger "
        f"images or stem_padding='same'.")
  return tuple((_ceil_div(n, 2) - 1) // 2 for n in image_dims)
