"""BERT-style masking of byte ids for masked-language-model pre-training.

`mask_tokens(rng, ids)`: each non-special id (>= num_special) is chosen with probability
mask_prob; a chosen id becomes MASK with probability mask_token_prob, a uniformly random byte
id in [num_special, vocab_size) with probability random_token_prob, and stays unchanged
otherwise (80/10/10 by default). Returns (inputs, labels, weights): the corrupted ids, the
original ids, and float32 weights that are 1.0 exactly at chosen positions (where the loss is
taken) and 0.0 elsewhere; all with the shape of `ids`. Pure jax.numpy, so it jits; the
probabilities are Python floats (static under jit).
"""

from typing import Tuple

import jax
import jax.numpy as jnp

from perceiver_jax.data.tokenizer import MASK, NUM_SPECIAL, VOCAB_SIZE


def mask_tokens(rng: jax.Array, ids: jnp.ndarray, mask_prob: float = 0.15,
                mask_token_prob: float = 0.8, random_token_prob: float = 0.1,
                mask_id: int = MASK, num_special: int = NUM_SPECIAL,
                vocab_size: int = VOCAB_SIZE) -> Tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """(inputs, labels, weights) for ids of any shape; see the module docstring."""
  if not 0.0 <= mask_prob <= 1.0:
    raise ValueError(f"mask_tokens: mask_prob must be in [0, 1], got {mask_prob}.")
  if min(mask_token_prob, random_token_prob) < 0.0 or mask_token_prob + random_token_prob > 1.0:
    raise ValueError(
        "mask_tokens: mask_token_prob and random_token_prob must be >= 0 with a sum <= 1, got "
        f"{mask_token_prob} and {random_token_prob}.")
  ids = jnp.asarray(ids)
  choose_rng, action_rng, random_rng = jax.random.split(rng, 3)
  chosen = (ids >= num_special) & (jax.random.uniform(choose_rng, ids.shape) < mask_prob)
  action = jax.random.uniform(action_rng, ids.shape)
  to_mask = chosen & (action < mask_token_prob)
  to_random = chosen & (action >= mask_token_prob) & (
      action < mask_token_prob + random_token_prob)
  random_ids = jax.random.randint(random_rng, ids.shape, num_special, vocab_size, ids.dtype)
  inputs = jnp.where(to_mask, jnp.asarray(mask_id, ids.dtype), ids)
  inputs = jnp.where(to_random, random_ids, inputs)
  return inputs, ids, chosen.astype(jnp.float32)
