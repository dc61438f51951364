"""Image augmentations against numpy references and invariants; all randomness from the seed."""

import numpy as np
import pytest
import tensorflow as tf

from perceiver_jax.data import image_ops

OPS = image_ops.RANDAUGMENT_OPS


def _image(h=12, w=12, c=3, seed=0, low=0, high=256):
  return np.random.default_rng(seed).integers(low, high, (h, w, c)).astype(np.uint8)


def _seed(i):
  return tf.constant([i, 7], tf.int32)


def _round_half_away(x):
  return np.sign(x) * np.floor(np.abs(x) + 0.5)


def _np_sample(image, x_in, y_in):
  """Nearest-pixel sampling at input coordinates [h, w], grey (128) outside the image."""
  h, w = image.shape[:2]
  xi, yi = _round_half_away(x_in).astype(int), _round_half_away(y_in).astype(int)
  inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
  return np.where(inside[..., None], image[np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)], 128)


def _one_of_signs(out, reference_for_sign, atol=0):
  """Asserts out equals the reference for sign +1 or -1; returns that sign."""
  out = np.asarray(out, np.float64)
  for sign in (1.0, -1.0):
    if np.abs(out - reference_for_sign(sign)).max() <= atol:
      return sign
  raise AssertionError("output matches neither sign's reference")


def _both_signs(op, image, magnitude, reference_for_sign, atol=0):
  """Over 8 seeds, every output matches one sign's reference, and both signs occur."""
  signs = {_one_of_signs(op(image, magnitude, _seed(i)), reference_for_sign, atol)
           for i in range(8)}
  assert signs == {1.0, -1.0}


# --- resize, crop, flip, normalize -------------------------------------------------------------


def test_resize_is_antialiased_bilinear():
  x = np.random.default_rng(0).uniform(0, 255, (8, 8, 2)).astype(np.float32)
  out = image_ops.resize(x, (4, 4)).numpy()
  assert out.dtype == np.float32 and out.shape == (4, 4, 2)
  # Downscaling by 2: the triangle filter widens to taps [1, 3, 3, 1] / 8 (interior pixels).
  taps = np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64
  for i in (1, 2):
    for j in (1, 2):
      ref = np.einsum("hw,hwc->c", taps, x[2 * i - 1:2 * i + 3, 2 * j - 1:2 * j + 3])
      np.testing.assert_allclose(out[i, j], ref, rtol=1e-5)
  np.testing.assert_allclose(image_ops.resize(x, (8, 8)), x, atol=1e-4)
  np.testing.assert_allclose(image_ops.resize(np.full((5, 7, 1), 9, np.uint8), (3, 2)), 9.0,
                             rtol=1e-6)
  with pytest.raises(ValueError, match="size"):
    image_ops.resize(x, (4, 0))
  with pytest.raises(ValueError, match="one image"):
    image_ops.resize(x[None], (4, 4))


def test_inception_crop():
  image = _image(16, 16)
  full = image_ops.inception_crop(image, _seed(0), (6, 6), area_range=(1, 1), aspect_range=(1, 1))
  np.testing.assert_allclose(full, image_ops.resize(image, (6, 6)), atol=1e-4)
  # A quarter-area square crop resized to its own size is a window of the image.
  windows = set()
  for i in range(6):
    out = image_ops.inception_crop(image, _seed(i), (8, 8), (0.25, 0.25), (1, 1)).numpy()
    assert out.dtype == np.float32
    matches = [(y, x) for y in range(9) for x in range(9)
               if np.abs(out - image[y:y + 8, x:x + 8]).max() < 1e-3]
    assert len(matches) == 1
    windows.add(matches[0])
  assert len(windows) > 1
  first = image_ops.inception_crop(image, _seed(3), (5, 7))
  assert first.shape == (5, 7, 3)
  np.testing.assert_array_equal(first, image_ops.inception_crop(image, _seed(3), (5, 7)))
  with pytest.raises(ValueError, match="area_range"):
    image_ops.inception_crop(image, _seed(0), (5, 5), area_range=(0.0, 1.0))
  with pytest.raises(ValueError, match="aspect_range"):
    image_ops.inception_crop(image, _seed(0), (5, 5), aspect_range=(2.0, 1.0))
  with pytest.raises(ValueError, match="seed"):
    image_ops.inception_crop(image, tf.constant([1, 2, 3]), (5, 5))


def test_random_flip_is_seeded_reverse_or_identity():
  image = _image(5, 6)
  flipped = set()
  for i in range(10):
    out = image_ops.random_flip(image, _seed(i)).numpy()
    np.testing.assert_array_equal(out, image_ops.random_flip(image, _seed(i)))
    is_flipped = np.array_equal(out, image[:, ::-1])
    assert is_flipped or np.array_equal(out, image)
    flipped.add(is_flipped)
  assert flipped == {True, False}


def test_normalize():
  image = _image(4, 5)
  mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
  out = image_ops.normalize(image, mean, std).numpy()
  assert out.dtype == np.float32
  np.testing.assert_allclose(out, (image / 255.0 - np.array(mean)) / np.array(std), rtol=1e-5)
  np.testing.assert_allclose(image_ops.normalize(image.astype(np.float32)), image / 255.0,
                             rtol=1e-6)
  np.testing.assert_allclose(image_ops.normalize(image, mean=mean), image / 255.0 - mean,
                             atol=1e-6)
  with pytest.raises(ValueError, match="mean"):
    image_ops.normalize(image, mean=(0.5,))
  with pytest.raises(ValueError, match="std"):
    image_ops.normalize(image, std=(1.0, 0.0, 1.0))


# --- RandAugment ops ---------------------------------------------------------------------------


def test_every_op_is_uint8_to_uint8_and_magnitude_zero_changes_nothing():
  assert len(OPS) == 14
  image = _image(9, 11)
  for name, op in OPS.items():
    for magnitude in (0.0, 7.0):
      out = op(tf.constant(image), magnitude, _seed(1))
      assert out.dtype == tf.uint8 and out.shape == image.shape, name
    if name not in ("autocontrast", "equalize"):
      np.testing.assert_array_equal(op(image, 0.0, _seed(1)), image, err_msg=name)


def test_autocontrast_stretches_each_channel_to_full_range():
  image = np.stack([_image(8, 8, 1, 0, 50, 151)[..., 0], _image(8, 8, 1, 1, 3, 40)[..., 0],
                    np.full((8, 8), 77, np.uint8)], -1)
  out = OPS["autocontrast"](image, 5.0, _seed(0)).numpy()
  x = image[..., :2].astype(np.float64)
  low, high = x.min((0, 1)), x.max((0, 1))
  np.testing.assert_allclose(out[..., :2], (x - low) * 255 / (high - low), atol=0.5 + 1e-6)
  np.testing.assert_array_equal(out[..., :2].min((0, 1)), 0)
  np.testing.assert_array_equal(out[..., :2].max((0, 1)), 255)
  np.testing.assert_array_equal(out[..., 2], 77)  # Constant channel kept.


def _np_equalize(channel):
  histogram = np.bincount(channel.ravel(), minlength=256)
  step = (histogram.sum() - histogram[np.nonzero(histogram)[0][-1]]) // 255
  if step == 0:
    return channel
  lut = np.minimum(np.concatenate([[0], (np.cumsum(histogram) + step // 2) // step])[:256], 255)
  return lut[channel]


def test_equalize_matches_reference_and_spreads_values():
  image = np.concatenate([_image(32, 32, 2, 0, 100, 121), _image(32, 32, 1, 1)], -1)
  image[0, 0, 0] = 250  # A lone bright pixel keeps the top of the range.
  out = OPS["equalize"](image, 5.0, _seed(0)).numpy()
  for c in range(3):
    np.testing.assert_array_equal(out[..., c], _np_equalize(image[..., c]))
  assert out[..., 1].min() == 0 and out[..., 1].max() >= 240  # Was [100, 120].
  order = np.argsort(image[..., 1].ravel(), kind="stable")
  assert np.all(np.diff(out[..., 1].ravel()[order].astype(int)) >= 0)  # Monotone.
  constant = np.full((4, 4, 3), 9, np.uint8)
  np.testing.assert_array_equal(OPS["equalize"](constant, 5.0, _seed(0)), constant)


def test_rotate_matches_nearest_neighbour_reference():
  image = _image(11, 11)
  y, x = np.mgrid[0:11, 0:11].astype(np.float64)

  def reference(sign):
    angle = np.deg2rad(sign * 30.0)
    cos, sin = np.cos(angle), np.sin(angle)
    return _np_sample(image, 5 + cos * (x - 5) + sin * (y - 5), 5 - sin * (x - 5) + cos * (y - 5))

  _both_signs(OPS["rotate"], image, 10.0, reference)
  for i in range(4):
    np.testing.assert_array_equal(OPS["rotate"](image, 10.0, _seed(i))[5, 5], image[5, 5])


def test_solarize_inverts_above_threshold():
  image = _image(8, 8)
  out = OPS["solarize"](image, 5.0, _seed(0)).numpy()  # Threshold 128.
  np.testing.assert_array_equal(out, np.where(image >= 128, 255 - image, image))
  np.testing.assert_array_equal(OPS["solarize"](image, 10.0, _seed(0)), 255 - image)


def test_posterize_keeps_top_bits():
  image = _image(8, 8)
  np.testing.assert_array_equal(OPS["posterize"](image, 10.0, _seed(0)), image & 0xF0)
  np.testing.assert_array_equal(OPS["posterize"](image, 5.0, _seed(0)), image & 0xFC)


def _np_blend(degenerate, image, factor):
  return np.clip(np.round(degenerate + factor * (image - degenerate)), 0, 255)


def test_color_contrast_brightness_blend_formulas():
  image = _image(6, 7, seed=3).astype(np.float64)
  gray = (image @ np.array([0.299, 0.587, 0.114]))[..., None]
  degenerates = {"color": gray, "contrast": gray.mean(), "brightness": 0.0}
  for name, degenerate in degenerates.items():
    _both_signs(OPS[name], image.astype(np.uint8), 6.0,
                lambda s, d=degenerate: _np_blend(d, image, 1 + s * 0.54), atol=1)


def test_sharpness_blends_with_smoothed_interior():
  image = _image(7, 9, seed=4).astype(np.float64)
  smooth = image.copy()
  kernel = np.ones((3, 3)) / 13
  kernel[1, 1] = 5 / 13
  for i in range(1, 6):
    for j in range(1, 8):
      smooth[i, j] = np.einsum("hw,hwc->c", kernel, image[i - 1:i + 2, j - 1:j + 2])
  _both_signs(OPS["sharpness"], image.astype(np.uint8), 10.0,
              lambda s: _np_blend(smooth, image, 1 + s * 0.9), atol=1)
  constant = np.full((5, 5, 3), 200, np.uint8)
  np.testing.assert_array_equal(OPS["sharpness"](constant, 10.0, _seed(0)), constant)


def test_shear_matches_reference_rows():
  image = _image(8, 10)
  y, x = np.mgrid[0:8, 0:10].astype(np.float64)
  rows = [r for r in range(8) if abs((0.3 * r) % 1 - 0.5) > 0.01]  # No float rounding ties.
  _both_signs(lambda *a: OPS["shear_x"](*a).numpy()[rows], image, 10.0,
              lambda s: _np_sample(image, x + s * 0.3 * y, y)[rows])
  image_t = np.ascontiguousarray(image.transpose(1, 0, 2))
  _both_signs(lambda *a: OPS["shear_y"](*a).numpy()[:, rows], image_t, 10.0,
              lambda s: _np_sample(image_t, y.T, x.T + s * 0.3 * y.T)[:, rows])


def test_translate_shifts_pixels():
  image = _image(20, 20)
  # 0.45 * 20 = 9 pixels at magnitude 10; grey fills the uncovered side.
  def shifted(s, axis):
    out = np.roll(image, int(s) * 9, axis).astype(np.float64)
    index = [slice(None)] * 3
    index[axis] = slice(0, 9) if s > 0 else slice(11, 20)
    out[tuple(index)] = 128
    return out
  _both_signs(OPS["translate_x"], image, 10.0, lambda s: shifted(s, 1))
  _both_signs(OPS["translate_y"], image, 10.0, lambda s: shifted(s, 0))


def test_randaugment_is_seeded_and_runs_in_tf_data():
  image = _image(10, 10)
  outs = [image_ops.randaugment(image, _seed(i), 2, 9.0).numpy() for i in range(6)]
  assert all(o.dtype == np.uint8 and o.shape == image.shape for o in outs)
  np.testing.assert_array_equal(outs[0], image_ops.randaugment(image, _seed(0), 2, 9.0))
  assert len({o.tobytes() for o in outs}) > 3
  np.testing.assert_array_equal(image_ops.randaugment(image, _seed(0), 0, 9.0), image)
  mapped = tf.data.Dataset.from_tensors(image).map(
      lambda x: image_ops.randaugment(x, _seed(0), 2, 9.0))
  np.testing.assert_array_equal(next(iter(mapped)), outs[0])
  with pytest.raises(ValueError, match="uint8"):
    image_ops.randaugment(image.astype(np.float32), _seed(0), 2, 9.0)
  with pytest.raises(ValueError, match="magnitude"):
    image_ops.randaugment(image, _seed(0), 2, 11.0)
  with pytest.raises(ValueError, match="channels"):
    image_ops.randaugment(_image(4, 4, 2), _seed(0), 2, 9.0)


# --- mixup / cutmix ----------------------------------------------------------------------------


def test_inception_crop_keeps_the_static_shape_inside_tf_data():
  crop = tf.function(lambda x: image_ops.inception_crop(x, tf.constant([1, 2]), (4, 4)),
                     input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
  out = crop.get_concrete_function().structured_outputs
  assert out.shape.as_list() == [4, 4, 3]
