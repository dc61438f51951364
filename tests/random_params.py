"""Test inputs and parameters drawn with numpy, so tests compile no PRNG kernels."""

import jax
import jax.numpy as jnp
import numpy as np


def random_data(seed, *shape):
  """Standard-normal float32 array of `shape`."""
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def param_shapes(module, *args):
  """The 'params' tree `module.init(rng, *args)` would create, as ShapeDtypeStructs."""
  return jax.eval_shape(module.init, jax.random.PRNGKey(0), *args)["params"]


def random_params(module, *args, seed=0):
  """Random params of init's structure: biases and offsets non-zero, LayerNorm scales 1 + noise,
  so every parameter matters in a reference computation."""
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    noise = rng.normal(size=leaf.shape)
    return jnp.asarray((1 + 0.2 * noise) if path[-1].key == "scale" else 0.3 * noise, leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, param_shapes(module, *args))
