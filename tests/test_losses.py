"""Losses against numpy references; the MLM loss sees only masked positions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver_jax.train import losses
from perceiver_jax.data.masking import mask_tokens
from random_params import random_data


def _log_softmax(x):
  x = np.asarray(x, np.float64)
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_softmax_cross_entropy_plain_weighted_and_smoothed():
  logits, labels = random_data(0, 3, 4, 5), jnp.array([[0, 1, 2, 3], [4, 0, 1, 2], [3, 4, 0, 1]])
  nll = -np.take_along_axis(_log_softmax(logits), np.asarray(labels)[..., None], -1)[..., 0]
  np.testing.assert_allclose(losses.softmax_cross_entropy(logits, labels), nll.mean(), rtol=1e-5)
  weights = jnp.asarray(np.random.default_rng(1).uniform(size=(3, 4)), jnp.float32)
  np.testing.assert_allclose(losses.softmax_cross_entropy(logits, labels, weights),
                             (nll * weights).sum() / weights.sum(), rtol=1e-5)
  smooth = 0.9 * nll - 0.1 * _log_softmax(logits).mean(-1)
  np.testing.assert_allclose(losses.softmax_cross_entropy(logits, labels, label_smoothing=0.1),
                             smooth.mean(), rtol=1e-5)
  assert losses.softmax_cross_entropy(logits.astype(jnp.bfloat16), labels).dtype == jnp.float32
  assert float(losses.softmax_cross_entropy(logits, labels, jnp.zeros((3, 4)))) == 0.0


def test_masked_lm_loss_ignores_unmasked_positions():
  ids = jnp.asarray(np.random.default_rng(0).integers(6, 262, (4, 32)), jnp.int32)
  _, labels, weights = mask_tokens(jax.random.PRNGKey(0), ids, mask_prob=0.3)
  weights_np = np.asarray(weights)
  assert 0 < weights_np.sum() < weights_np.size
  logits = random_data(1, 4, 32, 262)
  grads = jax.grad(losses.masked_lm_loss)(logits, labels, weights)
  unmasked = weights_np == 0
  assert np.all(np.asarray(grads)[unmasked] == 0)
  assert np.all(np.abs(np.asarray(grads)[~unmasked]).sum(-1) > 0)
  # Changing labels and logits where nothing is masked changes nothing.
  other_labels = jnp.where(unmasked, (labels + 1) % 262, labels)
  other_logits = jnp.where(unmasked[..., None], 0.0, logits)
  np.testing.assert_allclose(losses.masked_lm_loss(other_logits, other_labels, weights),
                             losses.masked_lm_loss(logits, labels, weights), rtol=1e-6)


def test_regression_and_multilabel_losses():
  a, b = random_data(0, 2, 3, 4, 2), random_data(1, 2, 3, 4, 2)
  np.testing.assert_allclose(losses.end_point_error(a, b),
                             np.linalg.norm(np.asarray(a) - np.asarray(b), axis=-1).mean(), rtol=1e-5)
  np.testing.assert_allclose(losses.l1_loss(a, b.reshape(2, 24)),
                             np.abs(np.asarray(a) - np.asarray(b)).mean(), rtol=1e-5)
  logits, targets = random_data(2, 3, 5), (random_data(3, 3, 5) > 0).astype(jnp.float32)
  p = 1 / (1 + np.exp(-np.asarray(logits, np.float64)))
  t = np.asarray(targets)
  np.testing.assert_allclose(losses.sigmoid_cross_entropy(logits, targets),
                             -(t * np.log(p) + (1 - t) * np.log(1 - p)).mean(), rtol=1e-5)


def test_loss_errors():
  with pytest.raises(ValueError, match="labels of shape"):
    losses.softmax_cross_entropy(jnp.zeros((2, 3, 5)), jnp.zeros((2,), jnp.int32))
  with pytest.raises(ValueError, match="weights"):
    losses.softmax_cross_entropy(jnp.zeros((2, 5)), jnp.zeros((2,), jnp.int32), jnp.zeros((3,)))
  with pytest.raises(ValueError, match="label_smoothing"):
    losses.softmax_cross_entropy(jnp.zeros((2, 5)), jnp.zeros((2,), jnp.int32), label_smoothing=1.0)
