"""Optical-flow preprocessing (tf.data, stateless seeded): the `optical_flow` data task.

A record holds two frames (uint8 [H, W, 3] images) and a flow field float32 [H, W, 2], the
(x, y) displacement in pixels of each pixel of the first frame. `preprocess(builder, config,
train)` makes one row {'frames': float32 [2, h, w, 3] in [-1, 1] (the official Perceiver IO
flow preprocessing), 'flow': float32 [h, w, 2], 'mask': 1.0} with the settings of
`config.flow` (data_config.py):
- train: an optional random scale s of frames and flow (flow vectors times s), a random crop
  of `crop_size` from both frames and the flow, random horizontal / vertical flips (the flow's
  x / y component negated), brightness and contrast jitter applied to both frames alike;
- eval: the centre crop of `crop_size`, or the full frames when it is None.
Every random choice is a stateless op of the row's seed, so a resumed run is exact.
"""

from typing import Optional, Sequence, Tuple

from perceiver_jax.data.tensorflow_cpu import tf


def fields(config):
  """[(data field, feature name)] a record must have."""
  flow = config.flow
  return ([("flow.frame_features", name) for name in flow.frame_features]
          + [("flow.flow_feature", flow.flow_feature)])


def random_scale(frames, flow, seed, max_scale: float, min_size: Sequence[int]):
  """frames [2, H, W, C] and flow [H, W, 2] resized by s, log-uniform in [1 / (1 + max_scale),
  1 + max_scale] but at least big enough to hold min_size (h, w); flow vectors scaled alike."""
  shape = tf.cast(tf.shape(flow)[:2], tf.float32)
  bound = tf.math.log(1.0 + max_scale)
  scale = tf.exp(tf.random.stateless_uniform([], seed, -bound, bound))
  scale = tf.maximum(scale, tf.reduce_max(tf.constant(min_size, tf.float32) / shape))
  size = tf.cast(tf.math.ceil(shape * scale), tf.int32)
  factors = tf.cast(size, tf.float32) / shape  # Per axis (y, x), after rounding.
  frames = tf.image.resize(frames, size, method="bilinear")
  flow = tf.image.resize(flow, size, method="bilinear") * tf.stack([factors[1], factors[0]])
  return frames, flow


def random_crop(frames, flow, seed, size: Sequence[int]):
  """The same random (h, w) = size window of frames [2, H, W, C] and flow [H, W, 2]."""
  shape = tf.shape(flow)
  top = tf.random.stateless_uniform([], seed, 0, shape[0] - size[0] + 1, dtype=tf.int32)
  left = tf.random.stateless_uniform([], tf.random.experimental.stateless_fold_in(seed, 1), 0,
                                     shape[1] - size[1] + 1, dtype=tf.int32)
  return (frames[:, top:top + size[0], left:left + size[1]],
          flow[top:top + size[0], left:left + size[1]])


def centre_crop(frames, flow, size: Sequence[int]):
  """The central (h, w) = size window of frames [2, H, W, C] and flow [H, W, 2]."""
  shape = tf.shape(flow)
  top, left = (shape[0] - size[0]) // 2, (shape[1] - size[1]) // 2
  return (frames[:, top:top + size[0], left:left + size[1]],
          flow[top:top + size[0], left:left + size[1]])


def random_flip(frames, flow, seed, axis: int):
  """With probability 1/2, frames [2, H, W, C] and flow [H, W, 2] mirrored along `axis` (0:
  vertical, rows reversed, y negated; 1: horizontal, columns reversed, x negated)."""
  flip = tf.random.stateless_uniform([], seed) < 0.5
  sign = tf.constant([1.0, -1.0] if axis == 0 else [-1.0, 1.0])
  flipped = (tf.reverse(frames, [axis + 1]), tf.reverse(flow, [axis]) * sign)
  return tf.cond(flip, lambda: flipped, lambda: (frames, flow))


def photometric_jitter(frames, seed, brightness: float, contrast: float):
  """frames [2, H, W, C] in [0, 1]: both shifted by one delta uniform in [-brightness,
  brightness], their contrast about the pair's mean scaled by one factor uniform in
  [1 - contrast, 1 + contrast]; clipped to [0, 1]."""
  brightness_seed, contrast_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  delta = tf.random.stateless_uniform([], brightness_seed, -brightness, brightness)
  factor = tf.random.stateless_uniform([], contrast_seed, 1.0 - contrast, 1.0 + contrast)
  mean = tf.reduce_mean(frames)
  return tf.clip_by_value((frames - mean) * factor + mean + delta, 0.0, 1.0)


def _sizes(builder, config) -> Tuple[Optional[Tuple[int, int]], Optional[Tuple[int, int]]]:
  """(stored (H, W) or None when it varies, size the model sees (h, w)); ValueError naming
  config.data.flow.crop_size when it does not fit."""
  stored = tuple(builder.info.features[config.flow.flow_feature].shape[:2])
  stored = None if None in stored else stored
  crop = None if config.flow.crop_size is None else tuple(int(n) for n in config.flow.crop_size)
  if crop is None and stored is None:
    raise ValueError(f"{config.name!r} frames vary in size; set config.data.flow.crop_size to "
                     "the (height, width) the model sees.")
  if crop is not None and stored is not None and (crop[0] > stored[0] or crop[1] > stored[1]):
    raise ValueError(f"config.data.flow.crop_size={crop} is larger than {config.name!r}'s "
                     f"frames {stored}; set it to at most {stored} (or None: full frames).")
  return stored, crop or stored


def preprocess(builder, config, train: bool):
  """fn(record, seed) -> {'frames': float32 [2, h, w, 3] in [-1, 1], 'flow': float32 [h, w, 2],
  'mask': 1.0} (module docstring)."""
  flow_config = config.flow
  stored, size = _sizes(builder, config)
  crops = stored is None or size != stored

  def row(record, seed):
    frames = tf.stack([tf.cast(record[name], tf.float32) / 255.0
                       for name in flow_config.frame_features])
    flow = tf.cast(record[flow_config.flow_feature], tf.float32)
    if train:
      scale_seed, crop_seed, flip_seed, flip_seed_2, jitter_seed = tf.unstack(
          tf.random.experimental.stateless_split(seed, 5))
      if flow_config.max_scale:
        frames, flow = random_scale(frames, flow, scale_seed, flow_config.max_scale, size)
      if flow_config.max_scale or crops:
        frames, flow = random_crop(frames, flow, crop_seed, size)
      if flow_config.flip_horizontal:
        frames, flow = random_flip(frames, flow, flip_seed, axis=1)
      if flow_config.flip_vertical:
        frames, flow = random_flip(frames, flow, flip_seed_2, axis=0)
      if flow_config.brightness or flow_config.contrast:
        frames = photometric_jitter(frames, jitter_seed, flow_config.brightness,
                                    flow_config.contrast)
    elif crops:
      frames, flow = centre_crop(frames, flow, size)
    frames = tf.ensure_shape(frames * 2.0 - 1.0, [2, size[0], size[1], 3])
    return {"frames": frames, "flow": tf.ensure_shape(flow, [size[0], size[1], 2]),
            "mask": tf.constant(1.0)}

  return row
