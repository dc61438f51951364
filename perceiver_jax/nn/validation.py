"""Build-time checks of hyper-parameters: each error names the module, the field and the fix."""


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
