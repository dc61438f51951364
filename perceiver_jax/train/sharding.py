"""Device mesh and shardings for data-parallel and FSDP training with jit.

The mesh has two axes, ('data', 'fsdp'), over every device of every process. Batches are
split over both axes (each device sees global_batch / num_devices examples). Parameters and
optimizer state are replicated, or with `fsdp=True` each array >= `min_fsdp_size` elements is
split along its largest dimension divisible by the 'fsdp' axis size (XLA gathers them where
needed). The same code runs on 1 CPU, N GPUs, several processes or a TPU pod.

  mesh = make_mesh(data=-1, fsdp=1)             # -1: all remaining devices
  state_shardings(mesh, abstract_state, fsdp)   # a NamedSharding per state leaf
  global_batch(local_batch, mesh)               # per-process numpy -> global jax.Arrays
  usable_cpu_cores()                            # CPUs this process may run on
"""

import os
from typing import Any, Mapping

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

AXES = ("data", "fsdp")
BATCH_AXES = ("data", "fsdp")


def usable_cpu_cores() -> int:
  """The CPUs this process may run on (its affinity mask where the OS has one)."""
  if hasattr(os, "sched_getaffinity"):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1


def make_mesh(data: int = -1, fsdp: int = 1, devices=None) -> Mesh:
  """A ('data', 'fsdp') mesh (jax.make_mesh: devices ordered for the topology); `data=-1`
  takes every device the fsdp axis leaves."""
  devices = jax.devices() if devices is None else list(devices)
  count = len(devices)
  if fsdp < 1 or count % fsdp:
    raise ValueError(f"config.mesh.fsdp={fsdp} must be >= 1 and divide the {count} devices.")
  if data == -1:
    data = count // fsdp
  if data < 1 or data * fsdp != count:
    raise ValueError(f"config.mesh.data * config.mesh.fsdp = {data} * {fsdp} must equal the "
                     f"{count} devices (use data=-1 to fill).")
  # Auto axes: jit places values by the in/out shardings (jax.make_mesh defaults to Explicit).
  return jax.make_mesh((data, fsdp), AXES, (AxisType.Auto,) * len(AXES), devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dim split over every device."""
  return NamedSharding(mesh, P(BATCH_AXES))


def fsdp_spec(shape, fsdp_size: int, min_fsdp_size: int) -> P:
  """Split the largest dim divisible by fsdp_size over 'fsdp'; small arrays replicate."""
  if fsdp_size == 1 or int(np.prod(shape, dtype=np.int64)) < min_fsdp_size:
    return P()
  dims = sorted(range(len(shape)), key=lambda d: -shape[d])
  for d in dims:
    if shape[d] % fsdp_size == 0:
      spec = [None] * len(shape)
      spec[d] = "fsdp"
      return P(*spec)
  return P()


def state_shardings(mesh: Mesh, abstract_state, fsdp: bool, min_fsdp_size: int):
  """A NamedSharding for every leaf of `abstract_state` (ShapeDtypeStructs or arrays)."""
  size = mesh.shape["fsdp"] if fsdp else 1

  def leaf(x):
    return NamedSharding(mesh, fsdp_spec(np.shape(x), size, min_fsdp_size))

  return jax.tree_util.tree_map(leaf, abstract_state)


def global_batch(local_batch: Mapping[str, Any], mesh: Mesh) -> dict:
  """Per-process numpy batches -> global jax.Arrays split over the batch axes."""
  sharding = batch_sharding(mesh)
  num = mesh.devices.size
  out = {}
  for name, x in local_batch.items():
    global_size = x.shape[0] * jax.process_count()
    if global_size % num:
      raise ValueError(f"the global batch {global_size} ('{name}') must be divisible by the "
                       f"{num} devices; change config.batch_size.")
    out[name] = jax.make_array_from_process_local_data(sharding, np.asarray(x))
  return out
