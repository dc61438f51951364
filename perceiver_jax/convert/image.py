"""transformers image heads: not converted yet."""

CONVERTERS = {}
