"""Mixup / cutmix: convex combinations with the reversed batch, exact cutmix boxes, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver_jax.data.mixup import mixup_cutmix


def _batch(b=4, h=6, w=8, c=2, num_classes=5):
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.normal(size=(b, h, w, c)), jnp.float32)
  labels = jax.nn.one_hot(jnp.array([0, 1, 2, 3]), num_classes)
  return images, labels


def test_mixup_is_convex_combination_with_reversed_batch():
  images, labels = _batch()
  mix = jax.jit(lambda rng: mixup_cutmix(images, labels, rng, 0.8, 1.0, 0.0))
  lams = []
  for i in range(3):
    out, soft = mix(jax.random.PRNGKey(i))
    np.testing.assert_allclose(soft.sum(-1), 1.0, rtol=1e-6)
    lam = float(soft[0, 0])  # Weight of example 0's own label.
    np.testing.assert_allclose(soft, lam * labels + (1 - lam) * labels[::-1], atol=1e-6)
    np.testing.assert_allclose(out, lam * images + (1 - lam) * images[::-1], atol=1e-5)
    lams.append(lam)
  assert 0 <= min(lams) and max(lams) <= 1 and len(set(lams)) == 3
  again, _ = mix(jax.random.PRNGKey(0))
  np.testing.assert_array_equal(again, mix(jax.random.PRNGKey(0))[0])


def test_cutmix_box_area_equals_label_weight():
  images, labels = _batch()
  mix = jax.jit(lambda rng: mixup_cutmix(images, labels, rng, 0.8, 1.0, 1.0))
  partial = 0
  for i in range(6):
    out, soft = mix(jax.random.PRNGKey(i))
    np.testing.assert_allclose(soft.sum(-1), 1.0, rtol=1e-6)
    pasted = np.asarray(out == images[::-1])
    assert np.array_equal(np.asarray(out == images) | pasted, np.ones_like(pasted))
    box = pasted[0, ..., 0]
    assert np.all(pasted == box[None, ..., None])  # One box for all examples and channels.
    assert np.array_equal(box, np.outer(box.any(1), box.any(0)))  # A rectangle.
    lam = float(soft[0, 0])
    np.testing.assert_allclose(1 - lam, box.mean(), atol=1e-6)
    np.testing.assert_allclose(soft, lam * labels + (1 - lam) * labels[::-1], atol=1e-6)
    partial += 0 < box.mean() < 1
  assert partial >= 3


def test_mixup_cutmix_switch_alphas_and_errors():
  images, labels = _batch()
  mix = jax.jit(lambda rng: mixup_cutmix(images, labels, rng, 0.8, 1.0, 0.5))
  modes = set()
  for i in range(8):
    out, _ = mix(jax.random.PRNGKey(i))
    modes.add(bool(np.any(np.asarray(out == images[::-1]) & np.asarray(out != images))))
  assert modes == {True, False}  # Cutmix pastes exact pixels; mixup blends them.
  out, soft = mixup_cutmix(images, labels.astype(jnp.int32), jax.random.PRNGKey(0), 0.0, 0.0)
  np.testing.assert_array_equal(out, images)
  assert soft.dtype == jnp.float32
  out, _ = mixup_cutmix(images.astype(jnp.bfloat16), labels, jax.random.PRNGKey(0))
  assert out.dtype == jnp.bfloat16
  with pytest.raises(ValueError, match="mixup_alpha"):
    mixup_cutmix(images, labels, jax.random.PRNGKey(0), mixup_alpha=-1.0)
  with pytest.raises(ValueError, match="switch_prob"):
    mixup_cutmix(images, labels, jax.random.PRNGKey(0), switch_prob=1.5)
  with pytest.raises(ValueError, match=r"\[b, h, w, c\]"):
    mixup_cutmix(images[0], labels, jax.random.PRNGKey(0))
