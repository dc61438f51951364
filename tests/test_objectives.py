"""Objectives: weighted sums against numpy, MLM scoring only masked real bytes, mixup targets."""

import jax
import jax.numpy as jnp
import numpy as np

from configs import common
from perceiver_jax import tasks
from perceiver_jax.train.objectives import make_objective
from perceiver_jax.data.tokenizer import PAD
from random_params import random_data


def _config(task, **extra):
  config = common.get_config()
  config.model = tasks.tiny_config(task)
  config.update(extra)
  return config


def _log_softmax(x):
  x = np.asarray(x, np.float64)
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_classification_sums_are_mask_weighted_with_label_smoothing():
  objective = make_objective(_config("perceiver_classification", label_smoothing=0.1))
  batch = {"image": random_data(0, 4, 8, 8, 3), "label": jnp.array([1, 2, 3, 4]),
           "mask": jnp.array([1.0, 1.0, 1.0, 0.0])}
  inputs, kwargs, targets = objective.prepare(batch, jax.random.PRNGKey(0), False)
  assert inputs is batch["image"] and kwargs == {}
  logits = random_data(1, 4, 10)
  loss, weight, metrics = objective.score(logits, targets)
  soft = np.full((4, 10), 0.01) + 0.9 * np.eye(10)[[1, 2, 3, 4]]
  per_example = -(soft * _log_softmax(logits)).sum(-1)
  np.testing.assert_allclose(loss, per_example[:3].sum(), rtol=1e-5)
  assert float(weight) == 3.0
  predicted = np.argmax(np.asarray(logits), -1)
  assert float(metrics["accuracy"]) == float(np.sum(predicted[:3] == [1, 2, 3]))
  ranks = np.argsort(-np.asarray(logits), -1)[:, :5]
  assert float(metrics["top5"]) == float(sum(l in r for l, r in zip([1, 2, 3], ranks[:3])))
  assert objective.metrics == ("loss", *metrics)  # What config.checkpoint.best_metric may name.


def test_mlm_scores_only_masked_bytes_of_real_examples():
  objective = make_objective(_config("masked_language_modeling", mlm={"mask_prob": 0.5}))
  ids = jnp.asarray(np.random.default_rng(0).integers(6, 262, (3, 12)), jnp.int32)
  ids = ids.at[:, 9:].set(PAD)
  batch = {"ids": ids, "mask": jnp.array([1.0, 1.0, 0.0])}
  inputs, kwargs, targets = objective.prepare(batch, jax.random.PRNGKey(0), True)
  np.testing.assert_array_equal(kwargs["pad_mask"], ids != PAD)
  weights = np.asarray(targets["weights"])
  assert weights[2].sum() == 0 and weights[:, 9:].sum() == 0 and weights[:2].sum() > 0
  changed = np.asarray(inputs) != np.asarray(ids)
  # In real examples only the scored (chosen) bytes are corrupted.
  assert not np.any(changed[:2] & (weights[:2] == 0))
  logits = random_data(1, 3, 12, 262)
  loss, weight, metrics = objective.score(logits, targets)
  nll = -np.take_along_axis(_log_softmax(logits), np.asarray(ids)[..., None], -1)[..., 0]
  np.testing.assert_allclose(loss, (nll * weights).sum(), rtol=1e-5)
  assert float(weight) == weights.sum()
  assert 0 <= float(metrics["accuracy"]) <= weights.sum()
  assert objective.metrics == ("loss", *metrics)


def test_language_modeling_reports_its_metrics():
  config = _config("language_modeling")
  objective = make_objective(config)
  context = config.model.perceiver_ar.max_context
  batch = {"ids": jnp.ones((2, context + 1), jnp.int32), "mask": jnp.ones(2)}
  _, _, targets = objective.prepare(batch, jax.random.PRNGKey(0), False)
  _, _, metrics = objective.score(random_data(0, 2, 4, 262), targets)
  assert objective.metrics == ("loss", *metrics)


def test_mixup_in_training_gives_mixed_images_and_soft_targets():
  mixup = {"mixup_alpha": 0.8, "cutmix_alpha": 0.0, "switch_prob": 0.5}
  objective = make_objective(_config("perceiver_classification", mixup=mixup))
  batch = {"image": random_data(0, 4, 8, 8, 3), "label": jnp.array([1, 2, 3, 4]),
           "mask": jnp.ones(4)}
  inputs, _, targets = objective.prepare(batch, jax.random.PRNGKey(3), True)
  soft = np.asarray(targets["targets"])
  np.testing.assert_allclose(soft.sum(-1), 1.0, rtol=1e-6)
  lam = soft[0, 1]
  assert 0 < lam < 1
  expected = lam * np.asarray(batch["image"]) + (1 - lam) * np.asarray(batch["image"])[::-1]
  np.testing.assert_allclose(inputs, expected, rtol=1e-5, atol=1e-6)
  # Evaluation never mixes.
  inputs, _, targets = objective.prepare(batch, jax.random.PRNGKey(3), False)
  assert inputs is batch["image"]
