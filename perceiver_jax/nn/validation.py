"""Build-time checks of hyper-parameters, and of a model's inputs at trace time (static shapes
only): each error names the module, the field or the expected shape, and the fix."""

import contextlib
import re

import flax
import jax


def check_positive(module, *fields: str):
  """Raises ValueError unless every named integer field of `module` is >= 1."""
  for field in fields:
    value = getattr(module, field)
    if value is not None and value < 1:
      raise ValueError(f"{type(module).__name__}.{field} must be >= 1, got {value}.")


def check_rate(module, *fields: str):
  """Raises ValueError unless every named dropout-rate field of `module` is in [0, 1)."""
  for field in fields:
    value = getattr(module, field)
    if not 0.0 <= value < 1.0:
      raise ValueError(f"{type(module).__name__}.{field} must be in [0, 1), got {value}.")


def check_choice(module, field: str, choices):
  """Raises ValueError unless the named string field of `module` is one of `choices`."""
  value = getattr(module, field)
  if value not in choices:
    raise ValueError(f"{type(module).__name__}.{field} must be one of {tuple(choices)}, got {value!r}.")


def check_index_dims(module, field: str):
  """Raises ValueError unless the named field of `module` is a non-empty sequence of ints >= 1."""
  dims = getattr(module, field)
  if len(dims) == 0 or any(int(n) < 1 for n in dims):
    raise ValueError(
        f"{type(module).__name__}.{field} must be a non-empty sequence of ints >= 1, got {dims}.")


def check_batch(model: str, inputs):
  """Raises ValueError unless every input array has a batch dim of size >= 1."""
  shapes = [tuple(x.shape) for x in jax.tree_util.tree_leaves(inputs)]
  if any(not shape or shape[0] == 0 for shape in shapes):
    raise ValueError(f"{model} got an empty batch (inputs of shapes {shapes}); pass at least one "
                     "example along the leading batch dim.")


_FLAX_SHAPE_ERROR = re.compile(
    r'For parameter "(?P<name>[^"]*)" in "(?P<scope>[^"]*)", the given initializer is expected to '
    r"generate shape (?P<needed>\([^)]*\)), but the existing parameter it received has shape "
    r"(?P<existing>\([^)]*\))")


@contextlib.contextmanager
def params_fit_inputs(model: str, inputs, expected: str):
  """Turns flax's ScopeParamShapeError (inputs whose shape differs from those the parameters
  were initialised for) into a ValueError naming the inputs' and the `expected` shape."""
  try:
    yield
  except flax.errors.ScopeParamShapeError as e:
    shapes = jax.tree_util.tree_map(lambda x: tuple(x.shape), inputs)
    match = _FLAX_SHAPE_ERROR.match(str(e))
    detail = (f"parameter {match['scope']}/{match['name']} has shape {match['existing']}, these "
              f"inputs need {match['needed']}" if match else str(e))
    raise ValueError(f"{model} expects inputs {expected} with the channels (and patch or frame "
                     f"sizes) its parameters were initialised for, got shape {shapes}: "
                     f"{detail}.") from None
