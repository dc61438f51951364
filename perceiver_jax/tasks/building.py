"""Config -> module helpers shared by the task models.

A task config (ml_collections.ConfigDict) names module settings by the modules' own field
names, e.g. `config.encoder.num_latents`, so any field can be overridden from the command
line (`--config.model.encoder.num_latents=128`). `make` builds a module from such a section
and turns a misspelt or unknown key into a ValueError naming the config path and the valid
fields; `config.dtype` / `config.param_dtype` ('float32', 'bfloat16', 'float16') reach every
module that has those fields.
"""

from typing import Any, Mapping

import jax.numpy as jnp

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def dtype_from_name(name: str, path: str):
  """The jnp dtype called `name`; ValueError naming `path` otherwise."""
  if name not in DTYPES:
    raise ValueError(f"{path} must be one of {tuple(DTYPES)}, got {name!r}.")
  return DTYPES[name]


def dtypes(config) -> dict:
  """{'dtype': ..., 'param_dtype': ...} from config.dtype and config.param_dtype."""
  return {"dtype": dtype_from_name(config.dtype, "config.dtype"),
          "param_dtype": dtype_from_name(config.param_dtype, "config.param_dtype")}


def _fields(cls) -> set:
  return set(cls.__dataclass_fields__) - {"parent", "name"}


def make(cls, section: Mapping[str, Any], path: str, config=None, **fixed):
  """cls(**section, **fixed), plus config's dtypes where cls has those fields.

  `path` is the section's place in the config (e.g. 'config.encoder'), used in errors.
  """
  settings = dict(section.to_dict() if hasattr(section, "to_dict") else section)
  fields = _fields(cls)
  unknown = sorted(set(settings) - fields)
  if unknown:
    raise ValueError(f"{path} has {unknown}, not fields of {cls.__name__}; its fields are "
                     f"{sorted(fields)}.")
  clash = sorted(set(settings) & set(fixed))
  if clash:
    raise ValueError(f"{path} sets {clash}, which the task model fixes; remove them.")
  if config is not None:
    settings.update({k: v for k, v in dtypes(config).items() if k in fields})
  settings.update(fixed)
  return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()})
