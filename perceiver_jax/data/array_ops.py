"""The `array` data task: tf.data ops on one array [*index_dims, channels] and its preprocess.

Ops take ONE array of any rank >= 2 (index dims, then channels) and, where random, a stateless
`seed` (int32/int64 [2]): the output is a pure function of the array and the seed.

- `normalize`     (x - mean) / std per channel -> float32 (no rescaling of the values first)
- `center_crop`   the centred window of `size` (one size per index dim)
- `random_crop`   a window of `size` at a uniform random offset per index dim
- `shift`         moves the array by `shifts` [d] (one per index dim): out[i + s] = x[i],
                  circular ('roll') or with zeros shifted in ('zeros')
- `random_shift`  `shift` by integers uniform in [-max_shift, max_shift] per index dim
- `random_scale`  multiplies by a factor uniform in [low, high)
- `add_noise`     adds Gaussian noise of std `std`
- `patch`         [*index_dims, c] -> [*(index_dims / size), prod(size) * c]: each patch of
                  `size` samples becomes one position whose channels are its samples (in
                  row-major patch order, channels last)

`fields(config)` and `preprocess(builder, config, train)` are the task's `RecordTask` parts
(input_pipeline.py): rows {'array': float32 [*index_dims, channels], 'label': int32 [] or
'target': float32 [k], 'mask': 1.0}. Training crops, shifts, scales, normalises and adds
noise as `config.array` says; evaluation only centre-crops and normalises; both then cut
patches when `config.array.patch_size` is set.
"""

from typing import Optional, Sequence

import numpy as np

from perceiver_jax.data.tensorflow_cpu import tf, tfds


def _index_rank(array, op: str) -> int:
  if array.shape.rank is None or array.shape.rank < 2:
    raise ValueError(f"{op}: array must be [*index_dims, channels] (rank >= 2), got shape "
                     f"{array.shape}.")
  return array.shape.rank - 1


def _check_per_dim(values, rank: int, op: str, name: str):
  if len(values) != rank:
    raise ValueError(f"{op}: {name} needs one entry per index dim ({rank}), got {values}.")


def normalize(array, mean: Optional[Sequence[float]], std: Optional[Sequence[float]]):
  """(array - mean) / std per channel (None: 0 and 1) -> float32 [*index_dims, channels]."""
  array = tf.cast(array, tf.float32)
  if mean is not None:
    array = array - tf.constant(mean, tf.float32)
  if std is not None:
    array = array / tf.constant(std, tf.float32)
  return array


def _crop(array, offsets, size: Sequence[int]):
  rank = len(size)
  begin = tf.concat([tf.cast(offsets, tf.int32), tf.zeros([1], tf.int32)], 0)
  cropped = tf.slice(array, begin, list(size) + [-1])
  return tf.ensure_shape(cropped, list(size) + array.shape[rank:].as_list())


def center_crop(array, size: Sequence[int]):
  """The centred window [*size, channels]; offsets (n - size) // 2 per index dim."""
  array = tf.convert_to_tensor(array)
  _check_per_dim(size, _index_rank(array, "center_crop"), "center_crop", "size")
  index_dims = tf.shape(array)[:len(size)]
  return _crop(array, (index_dims - tf.constant(size, tf.int32)) // 2, size)


def random_crop(array, size: Sequence[int], seed):
  """A window [*size, channels] at offsets uniform in [0, n - size] per index dim."""
  array = tf.convert_to_tensor(array)
  _check_per_dim(size, _index_rank(array, "random_crop"), "random_crop", "size")
  room = tf.shape(array)[:len(size)] - tf.constant(size, tf.int32) + 1
  uniform = tf.random.stateless_uniform([len(size)], seed)
  offsets = tf.cast(tf.floor(uniform * tf.cast(room, tf.float32)), tf.int32)
  return _crop(array, tf.minimum(offsets, room - 1), size)


def shift(array, shifts, mode: str = "roll"):
  """out[i + shifts] = array[i] per index dim: circular ('roll') or zero-filled ('zeros')."""
  array = tf.convert_to_tensor(array)
  rank = _index_rank(array, "shift")
  shifts = tf.cast(tf.convert_to_tensor(shifts), tf.int32)
  if shifts.shape != (rank,):
    raise ValueError(f"shift: shifts needs one entry per index dim ({rank}), got shape "
                     f"{shifts.shape}.")
  if mode == "roll":
    return tf.roll(array, shifts, tf.range(rank))
  if mode != "zeros":
    raise ValueError(f"shift: mode must be 'roll' or 'zeros', got {mode!r}.")
  index_dims = tf.shape(array)[:rank]
  moved = array
  for axis in range(rank):  # Pad n zeros on both sides, then take the window at n - shift.
    n = index_dims[axis]
    padding = [[0, 0]] * (rank + 1)
    padding[axis] = [n, n]
    begin = [0] * (rank + 1)
    begin[axis] = n - tf.clip_by_value(shifts[axis], -n, n)
    size = [-1] * (rank + 1)
    size[axis] = n
    moved = tf.slice(tf.pad(moved, padding), tf.stack(begin), tf.stack(size))
  return tf.ensure_shape(moved, array.shape)


def random_shift(array, max_shift: Sequence[int], seed, mode: str = "roll"):
  """`shift` by integers uniform in [-max_shift, max_shift] per index dim."""
  array = tf.convert_to_tensor(array)
  _check_per_dim(max_shift, _index_rank(array, "random_shift"), "random_shift", "max_shift")
  limit = tf.constant(max_shift, tf.float32)
  uniform = tf.random.stateless_uniform([len(max_shift)], seed)
  shifts = tf.minimum(tf.floor(uniform * (2 * limit + 1)), 2 * limit) - limit
  return shift(array, shifts, mode)


def random_scale(array, scale_range: Sequence[float], seed):
  """array times a factor uniform in [low, high)."""
  low, high = scale_range
  factor = tf.random.stateless_uniform([], seed, minval=low, maxval=high)
  return tf.cast(array, tf.float32) * factor


def add_noise(array, std: float, seed):
  """array plus Gaussian noise of standard deviation `std`."""
  array = tf.cast(array, tf.float32)
  return array + std * tf.random.stateless_normal(tf.shape(array), seed)


def patch(array, size: Sequence[int]):
  """[*index_dims, c] -> [*(index_dims // size), prod(size) * c]; size divides index_dims."""
  array = tf.convert_to_tensor(array)
  rank = _index_rank(array, "patch")
  _check_per_dim(size, rank, "patch", "size")
  dims, channels = array.shape[:-1].as_list(), array.shape[-1]
  if None in dims or any(n % p for n, p in zip(dims, size)):
    raise ValueError(f"patch: size {tuple(size)} must divide the index dims {tuple(dims)}.")
  grid = [n // p for n, p in zip(dims, size)]
  split = tf.reshape(array, [v for n, p in zip(grid, size) for v in (n, p)] + [channels])
  order = list(range(0, 2 * rank, 2)) + list(range(1, 2 * rank, 2)) + [2 * rank]
  return tf.reshape(tf.transpose(split, order), grid + [int(np.prod(size)) * channels])


def fields(config):
  """The features an `array` record must have: the array and its label or target."""
  return [("array.feature", config.array.feature), ("label_feature", config.label_feature)]


def _fail(field: str, value, problem: str) -> ValueError:
  return ValueError(f"config.data.{field}={value!r} {problem}")


def _check(builder, config):
  """ValueError naming the config.data field that does not fit the dataset's features."""
  settings = config.array
  feature = builder.info.features[settings.feature]
  shape = tuple(feature.shape) if isinstance(feature, tfds.features.Tensor) else ()
  if len(shape) < 2 or None in shape or not np.issubdtype(feature.np_dtype, np.number):
    raise _fail("array.feature", settings.feature, "is not an array [*index_dims, channels] "
                f"of numbers of fixed shape in {config.name!r} ({feature!r}).")
  index_dims, channels = shape[:-1], shape[-1]
  for field in ("mean", "std"):
    if settings[field] is not None and len(settings[field]) != channels:
      raise _fail(f"array.{field}", settings[field],
                  f"needs one value per channel ({channels} in {config.name!r}).")
  for field in ("crop_size", "max_shift", "patch_size"):
    if settings[field] is not None and len(settings[field]) != len(index_dims):
      raise _fail(f"array.{field}", settings[field], "needs one entry per index dim of the "
                  f"arrays {shape} ({len(index_dims)}).")
  if settings.crop_size is not None and any(
      c > n for c, n in zip(settings.crop_size, index_dims)):
    raise _fail("array.crop_size", settings.crop_size, f"exceeds the index dims {index_dims} "
                f"of the arrays in {config.name!r}; set it to at most these sizes.")
  sizes = settings.crop_size or index_dims
  if settings.patch_size is not None and any(n % p for n, p in zip(sizes, settings.patch_size)):
    raise _fail("array.patch_size", settings.patch_size, f"must divide the index dims {sizes} "
                "(after config.data.array.crop_size).")
  target = builder.info.features[config.label_feature]
  target_shape = tuple(getattr(target, "shape", ()) or ())
  if settings.target == "label" and (target_shape
                                     or not np.issubdtype(target.np_dtype, np.integer)):
    raise _fail("label_feature", config.label_feature, "is not an integer class label; set it "
                "to the label feature, or config.data.array.target='regression' for a float "
                "target.")
  if settings.target == "regression" and (len(target_shape) > 1 or None in target_shape):
    raise _fail("label_feature", config.label_feature, f"has shape {target_shape}; regression "
                "targets are scalars or vectors [k] of fixed size.")


def preprocess(builder, config, train: bool):
  """fn(record, seed) -> the row of one record (module docstring); eval ignores the seed."""
  _check(builder, config)
  settings = config.array
  crop_size = None if settings.crop_size is None else tuple(settings.crop_size)

  def row(record, seed):
    array = tf.cast(record[settings.feature], tf.float32)
    crop_seed, shift_seed, scale_seed, noise_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 4))
    if crop_size is not None:
      array = random_crop(array, crop_size, crop_seed) if train else center_crop(array,
                                                                                 crop_size)
    if train and settings.max_shift is not None:
      array = random_shift(array, tuple(settings.max_shift), shift_seed, settings.shift_mode)
    if train and settings.scale_range is not None:
      array = random_scale(array, tuple(settings.scale_range), scale_seed)
    array = normalize(array, settings.mean, settings.std)
    if train and settings.noise_std > 0:
      array = add_noise(array, settings.noise_std, noise_seed)
    if settings.patch_size is not None:
      array = patch(array, tuple(settings.patch_size))
    out = {"array": array, "mask": tf.constant(1.0)}
    target = record[config.label_feature]
    if settings.target == "label":
      out["label"] = tf.cast(target, tf.int32)
    else:
      out["target"] = tf.reshape(tf.cast(target, tf.float32), [-1])
    return out

  return row
