"""--cpu_devices, the launchers' flag: how many JAX CPU devices a CPU run splits its batch over.

XLA:CPU runs one device's step as one stream of ops, and many of them keep a single core
busy: on the project's 2-core machine one core idled through about 60% of a CIFAR-study
train step. Splitting the batch over one CPU device per core (data parallel, as over GPUs)
keeps the cores busy: 1.14x the train-step throughput at cifar10_study (batch 32) and 1.5x
at the digits demo (batch 64) on 2 cores (BENCHMARKS.md). It shapes only the CPU backend,
so GPU and TPU runs are unaffected.
"""

import os
from typing import Optional, Sequence

from absl import flags

from perceiver_jax.train.cpu_device_count import auto_count, set_cpu_device_count

flags.DEFINE_integer("cpu_devices", 0, "JAX CPU devices a CPU run splits its batch over "
                     "(experiments/cpu_devices.py). 0: one per core, as many as divide the "
                     "batch sizes; left to JAX in multi-process runs and when XLA_FLAGS sets "
                     "--xla_force_host_platform_device_count. A count > 0 always applies.")
FORCED_COUNT_FLAG = "xla_force_host_platform_device_count"


def configure(requested: int, batch_sizes: Sequence[int], multi_process: bool = False
              ) -> Optional[int]:
  """Sets JAX's CPU device count (`set_cpu_device_count`, before JAX starts) and returns it.

  requested > 0: that many. requested == 0 (auto): `auto_count(usable_cpu_cores(), batch_sizes)`,
  except that it leaves JAX's default alone (returns None) in a multi-process run or when
  XLA_FLAGS already sets --xla_force_host_platform_device_count.
  """
  if requested < 0:
    raise ValueError(f"--cpu_devices must be >= 0 (0: one per core), got {requested}.")
  if requested == 0:
    if multi_process or FORCED_COUNT_FLAG in os.environ.get("XLA_FLAGS", ""):
      return None
  return set_cpu_device_count(requested or None, batch_sizes)
