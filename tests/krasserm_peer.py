"""Imports krasserm's `perceiver-io` 0.11.0 (the `perceiver` package) for parity tests.

The wheel declares Python < 3.11, so `make test` installs it with `--no-deps
--ignore-requires-python` (plus fairscale); its backend models are plain torch modules, but
the package's `__init__` files also import its training wrappers (pytorch-lightning,
torchmetrics, jsonargparse) and MIDI tools (pretty_midi). Those are stood in by empty modules
here, before the first import of `perceiver`, so only the backends are real.
"""

import importlib.abc
import importlib.machinery
import sys
import types

_STAND_INS = ("pytorch_lightning", "torchmetrics", "lightning_utilities", "jsonargparse",
              "pretty_midi")


class _EmptyModule(types.ModuleType):
  """A module whose every public attribute is a do-nothing class."""
  __path__ = []

  def __getattr__(self, name):
    if name.startswith("__"):
      raise AttributeError(name)
    return type(name, (), {"__init__": lambda self, *args, **kwargs: None})


class _StandInFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):

  def find_spec(self, name, path, target=None):
    del path, target
    if name.split(".")[0] in _STAND_INS:
      return importlib.machinery.ModuleSpec(name, self, is_package=True)
    return None

  def create_module(self, spec):
    return _EmptyModule(spec.name)

  def exec_module(self, module):
    del module


def install_stand_ins():
  """Stands in the training-only imports (idempotent); call before importing `perceiver`."""
  if not any(isinstance(finder, _StandInFinder) for finder in sys.meta_path):
    sys.meta_path.insert(0, _StandInFinder())


install_stand_ins()
