"""Losses against numpy references: the flow end-point error and the multimodal autoencoder's
weighted sum."""

import jax.numpy as jnp
import ml_collections
import numpy as np

from perceiver_jax.train import losses
from random_params import random_data


def test_end_point_error_is_the_mean_euclidean_distance():
  a, b = random_data(0, 2, 3, 4, 2), random_data(1, 2, 3, 4, 2)
  np.testing.assert_allclose(losses.end_point_error(a, b),
                             np.linalg.norm(np.asarray(a) - np.asarray(b), axis=-1).mean(),
                             rtol=1e-5)
  assert losses.end_point_error(a.astype(jnp.bfloat16), b).dtype == jnp.float32


def test_multimodal_loss_weights_l1_and_label_cross_entropy():
  weights = ml_collections.ConfigDict(dict(image=0.03, audio=1.0, label=0.5))
  video, audio = random_data(0, 2, 3, 4, 3), random_data(1, 2, 12)
  logits = random_data(2, 2, 5)
  outputs = {"image": video, "audio": audio, "label": logits}
  targets = {"image": random_data(3, 2, 3, 4, 3), "audio": random_data(4, 2, 12, 1),
             "label": jnp.array([1, 4])}
  logits64 = np.asarray(logits, np.float64)
  log_probs = logits64 - np.log(np.exp(logits64).sum(-1, keepdims=True))
  expected = (0.03 * np.abs(np.asarray(video) - np.asarray(targets["image"])).mean()
              + np.abs(np.asarray(audio) - np.asarray(targets["audio"])[..., 0]).mean()
              - 0.5 * log_probs[[0, 1], [1, 4]].mean())
  np.testing.assert_allclose(losses.multimodal_autoencoding_loss(weights, outputs, targets),
                             expected, rtol=1e-5)
