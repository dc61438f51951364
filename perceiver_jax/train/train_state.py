"""The train state: one typed pytree that jit shards and donates and Orbax saves and restores.

The step's randomness is fold_in(rng, step): a function of the seed and the step only, so a
resumed run draws exactly what an uninterrupted run would.
"""

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  """step: int32 [], the updates applied so far; params and batch_stats ({} for models
  without BatchNorm): the model's variable collections; opt_state: the optax state;
  rng: the run's key."""
  step: jax.Array
  params: Any
  opt_state: optax.OptState
  batch_stats: Any
  rng: jax.Array

  @property
  def variables(self) -> dict:
    """The model's variables: {'params': ...} plus 'batch_stats' when the model has them."""
    if self.batch_stats:
      return {"params": self.params, "batch_stats": self.batch_stats}
    return {"params": self.params}


def init_state(model, tx: optax.GradientTransformation, example_inputs, seed: int) -> TrainState:
  """A fresh state at step 0 for `model` (un-jitted; wrap in jax.jit with out_shardings)."""
  init_rng, state_rng = jax.random.split(jax.random.PRNGKey(seed))
  variables = model.init(init_rng, example_inputs)
  params = variables["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    batch_stats=variables.get("batch_stats", {}), rng=state_rng)
