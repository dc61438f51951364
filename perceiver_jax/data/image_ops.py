"""Image augmentations for the input pipeline: tf.data ops on one image.

TF ops take ONE image [h, w, c] (uint8, or float with values in [0, 255]) and, where random, a
stateless `seed` (int32/int64 tensor of shape [2]): the output is a pure function of the image
and the seed, so a run's data depends only on its seed and the example index.

- `resize`          bilinear, antialiased -> float32 [size[0], size[1], c]
- `inception_crop`  random area/aspect crop, then `resize` -> float32 [size[0], size[1], c]
- `random_flip`     left-right flip with probability 1/2
- `randaugment`     `num_layers` ops drawn from `RANDAUGMENT_OPS` at one `magnitude`; uint8 -> uint8
- `normalize`       [0, 255] -> [0, 1], then (x - mean) / std per channel -> float32

`RANDAUGMENT_OPS` maps each op name to fn(image uint8 [h, w, c], magnitude, seed) -> uint8.
Magnitudes run from 0 (no change, except autocontrast and equalize, which take none) to 10
(strongest): rotate +-30 degrees, shear +-0.3, translate +-0.45 of the side, solarize threshold
256 -> 0, posterize 8 -> 4 bits, color/contrast/brightness/sharpness factor 1 +- 0.9. The sign of
signed ops comes from the seed. Geometric ops sample nearest pixels and fill with grey (128).

Batch-level mixup / cutmix runs on the device, in JAX: `perceiver_jax.data.mixup`.
"""

import functools
import math
from typing import Optional, Sequence, Tuple

from perceiver_jax.data.data_config import MAX_MAGNITUDE
from perceiver_jax.data.tensorflow_cpu import tf

_FILL = 128.0
_LUMA = (0.299, 0.587, 0.114)


# --- checks ------------------------------------------------------------------------------------


def _check_image(image, op: str):
  if image.shape.rank != 3:
    raise ValueError(f"{op}: image must be one image [h, w, c], got shape {image.shape}; "
                     "map the op over the batch instead.")


def _check_seed(seed, op: str):
  seed = tf.convert_to_tensor(seed)
  if seed.dtype not in (tf.int32, tf.int64) or seed.shape != (2,):
    raise ValueError(f"{op}: seed must be an int32/int64 tensor of shape [2], got {seed.dtype} "
                     f"{seed.shape}; split one with tf.random.experimental.stateless_split.")
  return seed


def _check_size(size, op: str):
  if len(size) != 2 or any(int(n) < 1 for n in size):
    raise ValueError(f"{op}: size must be (height, width) with both >= 1, got {size}.")
  return int(size[0]), int(size[1])


def _check_range(name: str, value, low_bound: float, high_bound: float):
  if len(value) != 2 or not low_bound < value[0] <= value[1] <= high_bound:
    raise ValueError(f"inception_crop: {name} must be (low, high) with "
                     f"{low_bound} < low <= high <= {high_bound}, got {value}.")


def _check_magnitude(magnitude):
  if not 0.0 <= magnitude <= MAX_MAGNITUDE:
    raise ValueError(f"randaugment: magnitude must be in [0, {MAX_MAGNITUDE}], got {magnitude}.")


# --- resize, crop, flip, normalize -------------------------------------------------------------


def resize(image, size: Tuple[int, int]):
  """Bilinear antialiased resize: [h, w, c] -> float32 [size[0], size[1], c], values kept."""
  image = tf.convert_to_tensor(image)
  _check_image(image, "resize")
  size = _check_size(size, "resize")
  return tf.cast(tf.image.resize(image, size, method="bilinear", antialias=True), tf.float32)


def inception_crop(image, seed, size: Tuple[int, int],
                   area_range: Tuple[float, float] = (0.08, 1.0),
                   aspect_range: Tuple[float, float] = (3 / 4, 4 / 3)):
  """Random crop covering `area_range` of the image with width/height in `aspect_range`,
  resized to `size`: [h, w, c] -> float32 [size[0], size[1], c]. The whole image when no crop
  fits in 10 attempts."""
  image = tf.convert_to_tensor(image)
  _check_image(image, "inception_crop")
  seed = _check_seed(seed, "inception_crop")
  _check_range("area_range", area_range, 0.0, 1.0)
  _check_range("aspect_range", aspect_range, 0.0, math.inf)
  begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.shape(image), bounding_boxes=tf.zeros([1, 0, 4]), seed=seed, min_object_covered=0.0,
      aspect_ratio_range=aspect_range, area_range=area_range, max_attempts=10,
      use_image_if_no_bounding_boxes=True)
  crop = tf.slice(image, begin, crop_size)
  crop.set_shape([None, None, image.shape[-1]])  # The slice loses the static channel count.
  return resize(crop, size)


def random_flip(image, seed):
  """Left-right flip of [h, w, c] with probability 1/2, decided by `seed`."""
  image = tf.convert_to_tensor(image)
  _check_image(image, "random_flip")
  return tf.image.stateless_random_flip_left_right(image, _check_seed(seed, "random_flip"))


def normalize(image, mean: Optional[Sequence[float]] = None,
              std: Optional[Sequence[float]] = None):
  """[h, w, c] with values in [0, 255] -> float32 x / 255, then (x - mean) / std per channel
  (mean and std on the [0, 1] scale, c values each; either may be left out)."""
  image = tf.convert_to_tensor(image)
  _check_image(image, "normalize")
  channels = image.shape[-1]
  for name, values in (("mean", mean), ("std", std)):
    if values is not None and channels is not None and len(values) != channels:
      raise ValueError(f"normalize: {name} needs one value per channel ({channels}), "
                       f"got {values}.")
  if std is not None and min(std) <= 0:
    raise ValueError(f"normalize: std values must be > 0, got {std}.")
  image = tf.cast(image, tf.float32) / 255.0
  if mean is not None:
    image = image - tf.constant(mean, tf.float32)
  if std is not None:
    image = image / tf.constant(std, tf.float32)
  return image


# --- RandAugment ops: uint8 [h, w, c] -> uint8 [h, w, c] ---------------------------------------


def _random_sign(seed):
  return tf.where(tf.random.stateless_uniform([], seed) < 0.5, -1.0, 1.0)


def _to_uint8(image):
  return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def _blend(degenerate, image, factor):
  """degenerate + factor * (image - degenerate), rounded and clipped to uint8."""
  image = tf.cast(image, tf.float32)
  return _to_uint8(degenerate + factor * (image - degenerate))


def _grayscale(image):
  """Luminance [h, w, 1] float32 (the image itself when it has one channel)."""
  channels = image.shape[-1]
  if channels == 1:
    return tf.cast(image, tf.float32)
  if channels != 3:
    raise ValueError(f"randaugment: images need 1 or 3 (static) channels, got {channels}; "
                     "call image.set_shape([h, w, c]) after decoding.")
  return tf.tensordot(tf.cast(image, tf.float32), tf.constant(_LUMA), 1)[..., None]


def _enhance_factor(magnitude, seed):
  return 1.0 + _random_sign(seed) * 0.9 * magnitude / MAX_MAGNITUDE


def _transform(image, matrix):
  """Samples input pixel round(matrix (x, y, 1)) for each output pixel (x, y); grey outside."""
  matrix = tf.cast(tf.concat([tf.reshape(matrix, [6]), tf.zeros([2])], 0), tf.float32)
  out = tf.raw_ops.ImageProjectiveTransformV3(
      images=image[None], transforms=matrix[None], output_shape=tf.shape(image)[:2],
      fill_value=_FILL, interpolation="NEAREST", fill_mode="CONSTANT")
  return tf.ensure_shape(out[0], image.shape)


def identity(image, magnitude, seed):
  del magnitude, seed
  return image


def autocontrast(image, magnitude, seed):
  """Per channel, stretches [min, max] to [0, 255]; constant channels are kept."""
  del magnitude, seed
  x = tf.cast(image, tf.float32)
  low = tf.reduce_min(x, axis=[0, 1])
  high = tf.reduce_max(x, axis=[0, 1])
  stretched = (x - low) * (255.0 / tf.maximum(high - low, 1.0))
  return _to_uint8(tf.where(high > low, stretched, x))


def _equalize_channel(channel):
  """Histogram equalization of one uint8 channel [h, w] (PIL's ImageOps.equalize rule)."""
  values = tf.cast(channel, tf.int32)
  histogram = tf.math.bincount(values, minlength=256, maxlength=256)
  last_count = tf.gather(histogram, tf.reduce_max(values))
  step = (tf.reduce_sum(histogram) - last_count) // 255
  lut = (tf.cumsum(histogram) + step // 2) // tf.maximum(step, 1)
  lut = tf.clip_by_value(tf.concat([[0], lut[:-1]], 0), 0, 255)
  return tf.cast(tf.where(step > 0, tf.gather(lut, values), values), tf.uint8)


def equalize(image, magnitude, seed):
  """Histogram equalization per channel."""
  del magnitude, seed
  return tf.stack([_equalize_channel(image[..., i]) for i in range(image.shape[-1])], -1)


def rotate(image, magnitude, seed):
  """Rotation about the image centre by +-30 * magnitude / 10 degrees."""
  radians = _random_sign(seed) * (30.0 * magnitude / MAX_MAGNITUDE) * math.pi / 180.0
  cos, sin = tf.cos(radians), tf.sin(radians)
  height, width = tf.unstack(tf.cast(tf.shape(image)[:2], tf.float32))
  cx, cy = (width - 1) / 2, (height - 1) / 2
  return _transform(image, tf.stack([cos, sin, cx - cos * cx - sin * cy,
                                     -sin, cos, cy + sin * cx - cos * cy]))


def solarize(image, magnitude, seed):
  """Inverts (255 - x) pixels >= 256 * (1 - magnitude / 10)."""
  del seed
  threshold = 256.0 * (1.0 - magnitude / MAX_MAGNITUDE)
  return tf.where(tf.cast(image, tf.float32) >= threshold, 255 - image, image)


def color(image, magnitude, seed):
  """Saturation: blends the luminance with the image by factor 1 +- 0.9 * magnitude / 10."""
  return _blend(_grayscale(image), image, _enhance_factor(magnitude, seed))


def posterize(image, magnitude, seed):
  """Keeps the top 8 - round(4 * magnitude / 10) bits of each value."""
  del seed
  shift = round(4 * magnitude / MAX_MAGNITUDE)
  return tf.bitwise.left_shift(tf.bitwise.right_shift(image, shift), shift)


def contrast(image, magnitude, seed):
  """Blends the mean luminance with the image by factor 1 +- 0.9 * magnitude / 10."""
  return _blend(tf.reduce_mean(_grayscale(image)), image, _enhance_factor(magnitude, seed))


def brightness(image, magnitude, seed):
  """Blends black with the image by factor 1 +- 0.9 * magnitude / 10."""
  return _blend(0.0, image, _enhance_factor(magnitude, seed))


def sharpness(image, magnitude, seed):
  """Blends a 3x3 smoothing ([[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13, border pixels kept) with
  the image by factor 1 +- 0.9 * magnitude / 10."""
  x = tf.cast(image, tf.float32)
  channels = image.shape[-1]
  kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
  kernel = tf.tile(kernel[:, :, None, None], [1, 1, channels, 1])
  smooth = tf.nn.depthwise_conv2d(x[None], kernel, [1, 1, 1, 1], "VALID")[0]
  smooth = tf.pad(smooth, [[1, 1], [1, 1], [0, 0]])
  interior = tf.pad(tf.ones_like(smooth[1:-1, 1:-1]), [[1, 1], [1, 1], [0, 0]]) > 0
  return _blend(tf.where(interior, smooth, x), image, _enhance_factor(magnitude, seed))


def shear_x(image, magnitude, seed):
  """Output (x, y) samples input (x + s * y, y), s = +-0.3 * magnitude / 10."""
  shear = _random_sign(seed) * 0.3 * magnitude / MAX_MAGNITUDE
  return _transform(image, tf.stack([1.0, shear, 0.0, 0.0, 1.0, 0.0]))


def shear_y(image, magnitude, seed):
  """Output (x, y) samples input (x, y + s * x), s = +-0.3 * magnitude / 10."""
  shear = _random_sign(seed) * 0.3 * magnitude / MAX_MAGNITUDE
  return _transform(image, tf.stack([1.0, 0.0, 0.0, shear, 1.0, 0.0]))


def _shift_pixels(image, magnitude, seed, axis):
  size = tf.cast(tf.shape(image)[axis], tf.float32)
  return _random_sign(seed) * tf.round(0.45 * magnitude / MAX_MAGNITUDE * size)


def translate_x(image, magnitude, seed):
  """Moves the content right or left by round(0.45 * magnitude / 10 * width) pixels."""
  shift = _shift_pixels(image, magnitude, seed, axis=1)
  return _transform(image, tf.stack([1.0, 0.0, -shift, 0.0, 1.0, 0.0]))


def translate_y(image, magnitude, seed):
  """Moves the content down or up by round(0.45 * magnitude / 10 * height) pixels."""
  shift = _shift_pixels(image, magnitude, seed, axis=0)
  return _transform(image, tf.stack([1.0, 0.0, 0.0, 0.0, 1.0, -shift]))


RANDAUGMENT_OPS = {
    "identity": identity,
    "autocontrast": autocontrast,
    "equalize": equalize,
    "rotate": rotate,
    "solarize": solarize,
    "color": color,
    "posterize": posterize,
    "contrast": contrast,
    "brightness": brightness,
    "sharpness": sharpness,
    "shear_x": shear_x,
    "shear_y": shear_y,
    "translate_x": translate_x,
    "translate_y": translate_y,
}


def randaugment(image, seed, num_layers: int, magnitude: float):
  """RandAugment: `num_layers` times, an op drawn uniformly from `RANDAUGMENT_OPS` is applied
  at `magnitude` in [0, 10]; uint8 [h, w, c] -> uint8 [h, w, c]."""
  image = tf.convert_to_tensor(image)
  _check_image(image, "randaugment")
  seed = _check_seed(seed, "randaugment")
  if image.dtype != tf.uint8:
    raise ValueError(f"randaugment: image must be uint8, got {image.dtype}; "
                     "apply it before normalize/resize, or tf.cast(tf.round(image), tf.uint8).")
  if num_layers < 0:
    raise ValueError(f"randaugment: num_layers must be >= 0, got {num_layers}.")
  _check_magnitude(magnitude)
  _grayscale(image)  # Checks the channels before any op is drawn.
  ops = list(RANDAUGMENT_OPS.values())
  for layer_seed in tf.unstack(tf.random.experimental.stateless_split(seed, num_layers),
                               num=num_layers):
    choice_seed, op_seed = tf.unstack(tf.random.experimental.stateless_split(layer_seed, 2))
    index = tf.random.stateless_uniform([], choice_seed, 0, len(ops), dtype=tf.int32)
    image = tf.switch_case(index, [functools.partial(op, image, magnitude, op_seed)
                                   for op in ops])
  return image
