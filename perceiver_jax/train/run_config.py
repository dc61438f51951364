"""The config a run trains with, kept in its workdir (workdir/config.json).

- `record(config, workdir, resuming)`: the trainer's step before it restores a checkpoint. When
  the workdir holds checkpoints (`resuming`) and a saved config whose model differs from
  `config.model`, ValueError naming each differing field (the checkpoints would not restore
  into this model); otherwise process 0 writes `config` as JSON (to a temporary name, then
  renamed: never half written), replacing a saved one (a resumed run may change run settings
  such as num_train_steps; the changed fields are logged).
- `load(workdir)`: the saved config as a ConfigDict (JSON lists back to tuples, as configs
  write sequences), or None when there is none.
- `resolve(workdir, given=None, overrides=None, defaults=None)`: the config the eval, plot and
  sample launchers use: the saved one, with the fields it lacks (added to the code after the
  run saved it) taken from `defaults` (the launchers pass configs/common.py's get_config()),
  and the `overrides` ({dotted path: value}, the explicit --config.x=y flags) applied on top; a warning names each model field where `given` (the
  --config file with its overrides) differs from the saved model. Without a saved config,
  `given`; without either, ValueError.
- `differences(a, b, prefix)`: [(dotted path, value in a, value in b)] of the fields that
  differ between two configs (compared as JSON).
"""

import json
import os
from typing import Any, List, Mapping, Optional, Tuple

from absl import logging
import jax
import ml_collections

from perceiver_jax.convert.pretrained import read_config_json

FILE_NAME = "config.json"


def path(workdir: str) -> str:
  """Where the config of the run in `workdir` is saved."""
  return os.path.join(workdir, FILE_NAME)


def _as_json(config) -> Any:
  return json.loads(config.to_json()) if isinstance(config, ml_collections.ConfigDict) else config


def _flatten(tree, prefix: str) -> dict:
  if not isinstance(tree, dict):
    return {prefix: tree}
  flat = {}
  for key, value in tree.items():
    flat.update(_flatten(value, f"{prefix}.{key}" if prefix else key))
  return flat


def differences(a, b, prefix: str = "config") -> List[Tuple[str, Any, Any]]:
  """[(dotted path, value in a, value in b)] of the fields where configs a and b differ
  (a field only one has is None in the other)."""
  flat_a, flat_b = _flatten(_as_json(a), prefix), _flatten(_as_json(b), prefix)
  return [(key, flat_a.get(key), flat_b.get(key)) for key in sorted(flat_a.keys() | flat_b.keys())
          if flat_a.get(key) != flat_b.get(key)]


def _listing(diffs, first: str, second: str) -> str:
  return "\n  ".join(f"{key}: {a!r} {first}, {b!r} {second}" for key, a, b in diffs)


def load(workdir: str) -> Optional[ml_collections.ConfigDict]:
  """The config saved in `workdir`, or None."""
  if not os.path.exists(path(workdir)):
    return None
  return read_config_json(path(workdir))


def record(config, workdir: str, resuming: bool):
  """Checks `config` against the saved one and saves it; see the module docstring."""
  saved = load(workdir)
  if saved is not None:
    model = differences(config.model, saved.model, "config.model")
    if model and resuming:
      raise ValueError(
          f"{workdir} holds checkpoints of a model with other settings (saved in "
          f"{path(workdir)}):\n  {_listing(model, 'given', 'saved')}\nResume with the saved "
          "model settings, or train into a new workdir.")
    changed = differences(config, saved)
    if changed:
      logging.info("The run's config differs from %s, which it replaces:\n  %s", path(workdir),
                   _listing(changed, "now", "before"))
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    temporary = path(workdir) + ".tmp"
    with open(temporary, "w", encoding="utf-8") as f:
      f.write(config.to_json(indent=1, sort_keys=True))
    os.replace(temporary, path(workdir))


def _fill_missing(config, defaults, prefix: str) -> List[str]:
  """Copies into `config` every field of `defaults` it lacks (recursively); their paths."""
  filled = []
  for key in defaults.keys():
    if key not in config:
      config[key] = json.loads(json.dumps(_as_json(defaults[key])))
      filled.append(f"{prefix}.{key}")
    elif (isinstance(config[key], ml_collections.ConfigDict)
          and isinstance(defaults[key], ml_collections.ConfigDict)):
      filled += _fill_missing(config[key], defaults[key], f"{prefix}.{key}")
  return filled


def resolve(workdir: str, given=None, overrides: Optional[Mapping[str, Any]] = None,
            defaults=None) -> ml_collections.ConfigDict:
  """The config of the run in `workdir` for a launcher; see the module docstring."""
  saved = load(workdir)
  if saved is not None and defaults is not None:
    filled = _fill_missing(saved, defaults, "config")
    if filled:
      logging.info("%s predates the fields %s; they take today's defaults.", path(workdir),
                   filled)
  if saved is None:
    if given is None:
      raise ValueError(f"{path(workdir)} does not exist (a run saves its config there when it "
                       "starts training; older runs did not): pass the run's --config, with "
                       "the overrides it was trained with.")
    return given
  if given is None:
    return saved
  model = differences(given.model, saved.model, "config.model")
  if model:
    logging.warning(
        "The model of --config differs from the one the run in %s was trained with (%s); the "
        "saved settings are used, explicit --config.model.* overrides on top:\n  %s", workdir,
        path(workdir), _listing(model, "given", "saved"))
  config = saved.copy_and_resolve_references()
  with config.ignore_type():
    config.update_from_flattened_dict(dict(overrides or {}))
  overridden = differences(config.model, saved.model, "config.model")
  if overridden:
    logging.warning("Explicit overrides change the saved model; its checkpoints may not "
                    "restore:\n  %s", _listing(overridden, "now", "saved"))
  return config
