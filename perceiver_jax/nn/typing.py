"""Type aliases and field helpers shared by the modules."""

from typing import Any, Dict

DType = Any  # A jnp dtype such as jnp.float32 or jnp.bfloat16.


def hyperparameters(module, cls) -> Dict[str, Any]:
  """The values of `cls`'s dataclass fields on `module` (linen's parent/name excluded)."""
  return {f: getattr(module, f) for f in cls.__dataclass_fields__ if f not in ("parent", "name")}
