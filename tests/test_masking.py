"""mask_tokens: BERT 80/10/10 masking of byte ids, special ids never chosen."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver_jax.data.masking import mask_tokens
from perceiver_jax.data.tokenizer import MASK


def _random_bytes(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(6, 262, shape), jnp.int32)


def test_special_ids_are_never_chosen_or_changed():
  ids = jnp.tile(jnp.arange(6, dtype=jnp.int32), (64, 50))
  inputs, labels, weights = mask_tokens(jax.random.PRNGKey(0), ids, mask_prob=0.9)
  assert float(weights.sum()) == 0.0
  np.testing.assert_array_equal(inputs, ids)
  np.testing.assert_array_equal(labels, ids)


def test_proportions_are_15_percent_then_80_10_10():
  ids = _random_bytes((256, 1024))
  inputs, labels, weights = map(np.asarray, mask_tokens(jax.random.PRNGKey(1), ids))
  ids = np.asarray(ids)
  chosen = weights == 1.0
  assert set(np.unique(weights)) <= {0.0, 1.0}
  n, k = ids.size, chosen.sum()
  assert abs(k / n - 0.15) < 4 * np.sqrt(0.15 * 0.85 / n)
  masked = chosen & (inputs == MASK)
  changed = chosen & (inputs != MASK) & (inputs != ids)
  # Random replacements equal the original id with probability 1/256.
  expected = {"mask": 0.8, "random": 0.1 * 255 / 256, "kept": 0.1 + 0.1 / 256}
  observed = {"mask": masked.sum() / k, "random": changed.sum() / k,
              "kept": (chosen & (inputs == ids)).sum() / k}
  for name, p in expected.items():
    assert abs(observed[name] - p) < 4 * np.sqrt(p * (1 - p) / k), (name, observed[name])
  assert np.all((inputs[chosen] == MASK) | ((inputs[chosen] >= 6) & (inputs[chosen] < 262)))
  np.testing.assert_array_equal(inputs[~chosen], ids[~chosen])
  np.testing.assert_array_equal(labels, ids)
  replaced = inputs[changed]
  assert replaced.min() >= 6 and replaced.max() < 262 and len(np.unique(replaced)) > 200


def test_mixed_specials_and_bytes():
  ids = _random_bytes((32, 64)).at[:, :8].set(0).at[:, 0].set(1).at[:, -1].set(2)
  _, _, weights = mask_tokens(jax.random.PRNGKey(2), ids, mask_prob=0.5)
  assert float(weights[:, :8].sum()) == 0.0 and float(weights[:, -1].sum()) == 0.0
  assert float(weights[:, 8:-1].mean()) > 0.4


def test_deterministic_for_fixed_rng_and_varies_with_rng():
  ids = _random_bytes((8, 128))
  a = mask_tokens(jax.random.PRNGKey(3), ids)
  b = mask_tokens(jax.random.PRNGKey(3), ids)
  c = mask_tokens(jax.random.PRNGKey(4), ids)
  chex.assert_trees_all_equal(a, b)
  assert not np.array_equal(a[2], c[2])


def test_jit_matches_eager():
  ids = _random_bytes((4, 64))
  rng = jax.random.PRNGKey(5)
  eager = mask_tokens(rng, ids, mask_prob=0.3)
  jitted = jax.jit(lambda r, x: mask_tokens(r, x, mask_prob=0.3))(rng, ids)
  chex.assert_trees_all_equal(eager, jitted)
  assert jitted[0].dtype == ids.dtype and jitted[2].dtype == jnp.float32


@pytest.mark.parametrize("kwargs", [dict(mask_prob=1.5), dict(mask_token_prob=0.95),
                                    dict(random_token_prob=-0.1)])
def test_bad_probabilities_raise(kwargs):
  with pytest.raises(ValueError, match="mask_tokens"):
    mask_tokens(jax.random.PRNGKey(0), _random_bytes((2, 4)), **kwargs)
