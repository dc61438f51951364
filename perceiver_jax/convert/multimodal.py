"""transformers multimodal heads: not converted yet."""

CONVERTERS = {}
