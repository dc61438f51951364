"""Point-cloud preprocessing for the input pipeline (`point_cloud` data task): tf ops on one cloud.

Ops take ONE cloud `points` [n, c] (c = 3: xyz, or 6: xyz then unit normals) and, where
random, a stateless int64 [2] `seed`: the output is a pure function of the cloud and the seed.

- `normalize`       xyz centred on their mean and scaled into the unit sphere (max norm 1)
- `resample_indices` int32 [k] indices into n points: evenly spaced without a seed (eval,
                    deterministic); with one, a random permutation's first k (a subset when
                    n >= k, every point then repeats in permutation order when n < k)
- `rotate`          rotation by `angle` about coordinate axis `axis` (xyz and normals); the
                    axis coordinate is copied unchanged
- `random_scale`    xyz times one factor uniform in [low, high] (normals unchanged)
- `jitter`          xyz plus Gaussian noise (std) clipped to [-clip, clip] per coordinate
- `random_dropout`  a rate r uniform in [0, max_rate]; each point dropped with probability r is
                    replaced by the first point (the PointNet++ practice: the shape stays fixed)

`make_preprocess(builder, config, train)` chains them as config.point_cloud says (the
RecordTask preprocess of input_pipeline.py): fn(record, seed) -> {'points': float32
[num_points, c], 'label': int32, 'mask': 1.0}.
"""

import math

from perceiver_jax.data.tensorflow_cpu import tf


def fields(config):
  """[(data field, feature name)] a point_cloud record must have."""
  settings = config.point_cloud
  names = [("point_cloud.points_feature", settings.points_feature)]
  if settings.use_normals:
    names.append(("point_cloud.normals_feature", settings.normals_feature))
  return names + [("label_feature", config.label_feature)]


def normalize(points):
  """[n, c] -> [n, c]: xyz minus their mean, divided by the largest norm (if > 0)."""
  xyz = points[:, :3] - tf.reduce_mean(points[:, :3], axis=0, keepdims=True)
  radius = tf.reduce_max(tf.norm(xyz, axis=-1))
  xyz = tf.math.divide_no_nan(xyz, radius)
  return tf.concat([xyz, points[:, 3:]], axis=-1)


def resample_indices(num_points: int, n, seed=None):
  """int32 [num_points] indices into n points (module docstring)."""
  n = tf.cast(n, tf.int32)
  position = tf.range(num_points, dtype=tf.int32)
  if seed is None:
    return (position * n) // num_points
  order = tf.argsort(tf.random.stateless_uniform([n], seed))  # int32
  return tf.gather(order, position % n)


def rotate(points, angle, axis: int):
  """[n, c] -> [n, c]: xyz (and normals, channels 3:6) rotated by `angle` about `axis`."""
  first, second = [a for a in range(3) if a != axis]
  cos, sin = tf.cos(angle), tf.sin(angle)

  def turn(vectors):
    a, b = vectors[:, first], vectors[:, second]
    turned = {axis: vectors[:, axis], first: cos * a - sin * b, second: sin * a + cos * b}
    return tf.stack([turned[k] for k in range(3)], axis=-1)

  blocks = [turn(points[:, 3 * k:3 * k + 3]) for k in range(points.shape[-1] // 3)]
  return tf.concat(blocks, axis=-1)


def random_rotation(points, seed, axis: int):
  """`rotate` by an angle uniform in [0, 2 pi)."""
  return rotate(points, tf.random.stateless_uniform([], seed, 0.0, 2 * math.pi), axis)


def random_scale(points, seed, low: float, high: float):
  """xyz times a factor uniform in [low, high]."""
  factor = tf.random.stateless_uniform([], seed, low, high)
  return tf.concat([points[:, :3] * factor, points[:, 3:]], axis=-1)


def jitter(points, seed, std: float, clip: float):
  """xyz plus N(0, std^2) noise clipped to [-clip, clip]."""
  noise = tf.clip_by_value(tf.random.stateless_normal(tf.shape(points[:, :3]), seed) * std,
                           -clip, clip)
  return tf.concat([points[:, :3] + noise, points[:, 3:]], axis=-1)


def random_dropout(points, seed, max_rate: float):
  """Points dropped at a rate uniform in [0, max_rate], each replaced by the first point."""
  rate_seed, drop_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  rate = tf.random.stateless_uniform([], rate_seed, 0.0, max_rate)
  dropped = tf.random.stateless_uniform(tf.shape(points)[:1], drop_seed) < rate
  return tf.where(dropped[:, None], points[:1], points)


def make_preprocess(builder, config, train: bool):
  """fn(record, seed) -> {'points': float32 [num_points, c], 'label': int32, 'mask': 1.0}."""
  del builder  # The features are plain float32 tensors.
  settings = config.point_cloud

  def preprocess(record, seed):
    points = tf.cast(record[settings.points_feature], tf.float32)
    if settings.use_normals:
      points = tf.concat([points, tf.cast(record[settings.normals_feature], tf.float32)], -1)
    if settings.normalize:
      points = normalize(points)
    sample_seed, rotate_seed, scale_seed, jitter_seed, drop_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 5))
    indices = resample_indices(settings.num_points, tf.shape(points)[0],
                               sample_seed if train else None)
    points = tf.gather(points, indices)
    if train:
      if settings.rotate:
        points = random_rotation(points, rotate_seed, settings.up_axis)
      low, high = settings.scale_range
      if (low, high) != (1.0, 1.0):
        points = random_scale(points, scale_seed, low, high)
      if settings.jitter_std > 0:
        points = jitter(points, jitter_seed, settings.jitter_std, settings.jitter_clip)
      if settings.dropout_max_rate > 0:
        points = random_dropout(points, drop_seed, settings.dropout_max_rate)
    return {"points": points, "label": tf.cast(record[config.label_feature], tf.int32),
            "mask": tf.constant(1.0)}

  return preprocess
