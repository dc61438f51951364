"""transformers flow heads: not converted yet."""

CONVERTERS = {}
