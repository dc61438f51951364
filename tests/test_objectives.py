"""Objectives: weighted sums against numpy, MLM scoring only masked real bytes, mixup targets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

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


def _lm_batch(config, rows, seed=0):
  context = config.model.perceiver_ar.max_context
  ids = np.random.default_rng(seed).integers(6, 262, (rows, context + 1))
  return {"ids": jnp.asarray(ids, jnp.int32), "mask": jnp.ones(rows)}


def test_language_modeling_crops_cover_every_length_in_training_only():
  config = _config("language_modeling", lm={"minimum_crop_length": 10})
  context = config.model.perceiver_ar.max_context  # 32, with 8 latents.
  objective = make_objective(config)
  batch = _lm_batch(config, 64)
  lengths = set()
  for seed in range(4):
    inputs, kwargs, targets = objective.prepare(batch, jax.random.PRNGKey(seed), True)
    inputs, pad_mask = np.asarray(inputs), np.asarray(kwargs["pad_mask"])
    kept = pad_mask.sum(1)
    # Left-padded rows: PAD first, then the row's last `kept` inputs unchanged.
    np.testing.assert_array_equal(pad_mask, np.arange(context) >= context - kept[:, None])
    np.testing.assert_array_equal(np.where(pad_mask, np.asarray(batch["ids"])[:, :-1], PAD),
                                  inputs)
    np.testing.assert_array_equal(targets["labels"], batch["ids"][:, 1:])  # Targets unchanged.
    lengths |= set(kept.tolist())
  assert lengths == set(range(10, context + 1))
  inputs, kwargs, _ = objective.prepare(batch, jax.random.PRNGKey(0), False)
  np.testing.assert_array_equal(inputs, batch["ids"][:, :-1])  # Evaluation is never cropped.
  assert np.asarray(kwargs["pad_mask"]).all()


def test_language_modeling_without_crops_prepares_the_rows_as_they_come():
  config = _config("language_modeling")  # lm.minimum_crop_length = 0.
  objective = make_objective(config)
  batch = _lm_batch(config, 4)
  batch["ids"] = batch["ids"].at[1, :5].set(PAD)
  inputs, kwargs, targets = objective.prepare(batch, jax.random.PRNGKey(0), True)
  np.testing.assert_array_equal(inputs, batch["ids"][:, :-1])
  np.testing.assert_array_equal(kwargs["pad_mask"], batch["ids"][:, :-1] != PAD)
  np.testing.assert_array_equal(targets["weights"], batch["ids"][:, 1:] != PAD)


@pytest.mark.parametrize("absolute_positions", [False, True])
def test_a_cropped_row_scores_as_the_model_on_its_kept_suffix(absolute_positions):
  """The cropped inputs carry no weight and no information: each row's loss equals the model's
  loss on the row's last c inputs alone (with absolute positions too: a cropped row's first
  kept input is position 0, as the suffix's)."""
  config = _config("language_modeling", lm={"minimum_crop_length": 8})
  config.model.perceiver_ar.absolute_positions = absolute_positions
  context = config.model.perceiver_ar.max_context
  model = tasks.build(config.model)
  objective = make_objective(config)
  batch = _lm_batch(config, 4, seed=1)
  variables = model.init(jax.random.PRNGKey(0), batch["ids"][:, :-1])
  # A non-zero logits layer, so the loss depends on the inputs.
  variables = jax.tree_util.tree_map(lambda x: x + 0.05 * random_data(2, *x.shape), variables)
  inputs, kwargs, targets = objective.prepare(batch, jax.random.PRNGKey(5), True)
  logits = model.apply(variables, inputs, **kwargs)
  for row in range(4):
    kept = int(np.asarray(kwargs["pad_mask"][row]).sum())
    assert kept < context
    one = lambda x: jax.tree_util.tree_map(lambda y: y[row:row + 1], x)
    loss, weight, _ = objective.score(logits[row:row + 1], one(targets))
    suffix = batch["ids"][row:row + 1, context - kept:]
    short = model.apply(variables, suffix[:, :-1])
    labels = suffix[:, 1:][:, -short.shape[1]:]
    expected = _nll_sum(short, labels)
    np.testing.assert_allclose(loss, expected, rtol=2e-5)
    assert float(weight) == short.shape[1]


def _nll_sum(logits, labels):
  """Summed cross-entropy of logits [b, n, V] at integer labels [b, n], in float64."""
  nll = -np.take_along_axis(_log_softmax(logits), np.asarray(labels)[..., None], -1)[..., 0]
  return nll.sum()


def test_eval_target_mask_selects_the_scored_targets():
  config = _config("language_modeling")
  context = config.model.perceiver_ar.max_context
  objective = make_objective(config)
  batch = _lm_batch(config, 2)
  target_mask = np.zeros((2, context), np.float32)
  target_mask[0, -3:] = 1
  target_mask[1, -8:] = 1
  batch["target_mask"] = jnp.asarray(target_mask)
  batch["mask"] = jnp.array([1.0, 0.0])
  _, _, targets = objective.prepare(batch, jax.random.PRNGKey(0), False)
  logits = random_data(3, 2, 8, 262)
  loss, weight, metrics = objective.score(logits, targets)
  assert float(weight) == 3.0
  expected = _nll_sum(logits[:1, -3:], batch["ids"][:1, -3:])
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  np.testing.assert_allclose(metrics["bits_per_byte"], expected / np.log(2), rtol=1e-5)


@pytest.mark.parametrize("field, value, match", [
    ("lm.minimum_crop_length", 7, r"minimum_crop_length=7 must be 0 .*num_latents=8"),
    ("lm.minimum_crop_length", 33, r"minimum_crop_length=33 .*max_context=32"),
    ("data.eval_block_size", 9, r"eval_block_size=9 .*num_latents=8")])
def test_crop_and_block_sizes_outside_the_model_name_the_field(field, value, match):
  config = _config("language_modeling")
  section, name = field.split(".")
  config[section][name] = value
  with pytest.raises(ValueError, match=match):
    make_objective(config)
