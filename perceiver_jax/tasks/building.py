"""Config -> module helpers shared by the task models.

A task config (ml_collections.ConfigDict) names module settings by the modules' own field
names, e.g. `config.encoder.num_latents`, so any field can be overridden from the command
line (`--config.model.encoder.num_latents=128`). `make` builds a module from such a section
and turns a misspelt or unknown key into a ValueError naming the config path and the valid
fields; `config.dtype` / `config.param_dtype` ('float32', 'bfloat16', 'float16') reach every
module that has those fields. `imagenet_encoder` and `classification_model` are the encoder
settings and the composition the classification tasks share. `task_config` starts every
task's config (task, checked variant, float32 dtypes).

A module's AttentionConfig field (`attention`; the encoder's `cross_attention`) is a sub-dict
of AttentionConfig's fields in a config. `expose_attention_settings` writes all of them into a
task config, so any can be overridden (`--config.model.encoder.attention.implementation=cudnn`);
`make` turns the sub-dicts into AttentionConfigs. A `cross_attention` key left None follows
the section's `attention`; all of them None is cross_attention=None.
"""

import dataclasses
from typing import Any, Mapping, Optional, Tuple

import jax.numpy as jnp
import ml_collections
from ml_collections.config_dict import placeholder

from perceiver_jax.nn.attention import AttentionConfig
from perceiver_jax.nn.decoder import PerceiverDecoder, TrainableQuery
from perceiver_jax.nn.encoder import PerceiverEncoder
from perceiver_jax.nn.models import PerceiverIO
from perceiver_jax.io.output_adapters import ClassificationOutput
from perceiver_jax.nn.perceiver_ar import PerceiverAR

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def task_config(task: str, variants: Tuple[str, ...], variant: Optional[str] = None):
  """A ConfigDict with `task`, `variant` (variants[0] when None; ValueError unless one of
  `variants`) and float32 `dtype` and `param_dtype`."""
  variant = variant or variants[0]
  if variant not in variants:
    raise ValueError(f"{task} variant must be one of {variants}, got {variant!r}.")
  c = ml_collections.ConfigDict()
  c.task, c.variant = task, variant
  c.dtype, c.param_dtype = "float32", "float32"
  return c


def dtype_from_name(name: str, path: str):
  """The jnp dtype called `name`; ValueError naming `path` otherwise."""
  if name not in DTYPES:
    raise ValueError(f"{path} must be one of {tuple(DTYPES)}, got {name!r}.")
  return DTYPES[name]


def dtypes(config) -> dict:
  """{'dtype': ..., 'param_dtype': ...} from config.dtype and config.param_dtype."""
  return {"dtype": dtype_from_name(config.dtype, "config.dtype"),
          "param_dtype": dtype_from_name(config.param_dtype, "config.param_dtype")}


# Config section -> its module fields that hold an AttentionConfig.
ATTENTION_SETTINGS = {
    "encoder": ("attention", "cross_attention"),
    "decoder": ("attention",),
    "perceiver_ar": ("attention",),
}


def expose_attention_settings(config):
  """Fills the attention sub-dicts of `config`'s ATTENTION_SETTINGS sections with every
  AttentionConfig field they lack: `attention` with AttentionConfig's defaults,
  `cross_attention` with None placeholders (following `attention`), which the command line
  can set; returns `config`."""
  defaults = dataclasses.asdict(AttentionConfig())
  for section, names in ATTENTION_SETTINGS.items():
    if section not in config:
      continue
    for name in names:
      given = config[section][name].to_dict() if name in config[section] else {}
      if name == "attention":
        config[section][name] = dict(defaults, **given)
      else:
        config[section][name] = dict({k: placeholder(type(v)) for k, v in defaults.items()},
                                     **given)
  return config


def attention_config(section: Mapping[str, Any], path: str,
                     base: Optional[AttentionConfig] = None) -> Optional[AttentionConfig]:
  """The AttentionConfig of a config sub-dict at `path`; with a `base` (cross_attention
  following attention), keys left None take base's values and all of them None is None."""
  fields = {f.name for f in dataclasses.fields(AttentionConfig)}
  unknown = sorted(set(section) - fields)
  if unknown:
    raise ValueError(f"{path} has {unknown}, not fields of AttentionConfig; its fields are "
                     f"{sorted(fields)}.")
  given = {k: v for k, v in section.items() if v is not None}
  if base is not None and not given:
    return None
  try:
    return dataclasses.replace(base or AttentionConfig(), **given)
  except ValueError as error:
    raise ValueError(f"{path}: {error}") from error


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
  if "attention" in settings:
    settings["attention"] = attention_config(settings["attention"], f"{path}.attention")
  if "cross_attention" in settings:
    base = settings["attention"] if "attention" in settings else AttentionConfig()
    settings["cross_attention"] = attention_config(settings["cross_attention"],
                                                   f"{path}.cross_attention", base)
  if config is not None:
    settings.update({k: v for k, v in dtypes(config).items() if k in fields})
  settings.update(fixed)
  return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()})


def imagenet_encoder(**schedule) -> dict:
  """The ImageNet Perceiver (IO) encoder settings: 512 latents x 1024, cross-attention 1 head,
  self-attention 8 heads, widening 1, query residual, no dropout; `schedule` sets the numbers
  of cross-attends, blocks and layers per block."""
  return dict(num_latents=512, num_latent_channels=1024, num_cross_attention_heads=1,
              num_self_attention_heads=8, cross_attention_widening_factor=1,
              self_attention_widening_factor=1, use_query_residual=True, dropout_rate=0.0,
              attention=dict(dropout_rate=0.0), **schedule)


def classification_model(config, input_adapter_cls, **adapter_fixed) -> PerceiverIO:
  """input_adapter -> PerceiverEncoder -> one TrainableQuery [1, config.query_channels] ->
  PerceiverDecoder(output_channels=config.num_classes) -> logits [batch, num_classes]."""
  return PerceiverIO(
      encoder=make(PerceiverEncoder, config.encoder, "config.encoder", config),
      output_query=TrainableQuery(1, config.query_channels, **dtypes(config)),
      decoder=make(PerceiverDecoder, config.decoder, "config.decoder", config,
                   output_channels=config.num_classes),
      input_adapter=make(input_adapter_cls, config.input_adapter, "config.input_adapter", config,
                         **adapter_fixed),
      output_adapter=ClassificationOutput())
