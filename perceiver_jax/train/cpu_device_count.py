"""How many devices JAX's CPU backend starts with, set before JAX starts its backends.

XLA:CPU runs one device's step as one stream of ops that often keeps a single core busy;
splitting each batch over one CPU device per core (data parallel, as over GPUs) keeps every
core busy. The count must be set before the first JAX computation (jax.devices(), an array, a
model init): the backend starts once per process.

  perceiver_jax.set_cpu_device_count()   # one per usable core, right after the imports
  perceiver_jax.set_cpu_device_count(batch_sizes=(64, 120))  # as many as divide both
"""

import numbers
from typing import Optional, Sequence

import jax

from perceiver_jax.train.sharding import usable_cpu_cores


def auto_count(cores: int, batch_sizes: Sequence[int]) -> int:
  """The largest device count <= cores that divides every batch size."""
  return max(n for n in range(1, cores + 1) if all(b % n == 0 for b in batch_sizes))


def set_cpu_device_count(count: Optional[int] = None, batch_sizes: Sequence[int] = ()) -> int:
  """Makes JAX's CPU backend start with `count` devices and returns the count. None: one per
  usable core (sharding.usable_cpu_cores), as many as divide every one of `batch_sizes` (the
  global batches a step splits over the devices, e.g. config.batch_size and
  config.eval_batch_size). GPU and TPU backends are unaffected.

  Calling it again after JAX started is fine when the count is the one JAX runs with; another
  count raises RuntimeError (restart the kernel or process and call it first).
  """
  if count is None:
    count = auto_count(usable_cpu_cores(), batch_sizes)
  if not isinstance(count, numbers.Integral) or isinstance(count, bool) or count < 1:
    raise ValueError(f"set_cpu_device_count: count must be an int >= 1 (None: one per usable "
                     f"core), got {count!r}.")
  count = int(count)
  try:
    jax.config.update("jax_num_cpu_devices", count)
  except RuntimeError:  # JAX's backends have started; keep them if they have the count.
    current = len(jax.devices("cpu"))
    if current != count:
      raise RuntimeError(
          f"JAX has already started its CPU backend with {current} devices, so "
          f"set_cpu_device_count({count}) cannot apply: restart the kernel (or process) and "
          "call it first, before anything uses JAX (jax.devices(), arrays, models).") from None
  return count
