"""Takes transformers Perceiver weights by name and lays them out as perceiver_jax parameters.

`WeightReader` hands out each weight once (torch Linear [out, in] -> flax Dense kernel
[in, out]; attention projections split into [in, heads, head_channels]) and `check_all_used`
names any weight no converter placed, so a checkpoint is never half-loaded silently. The
layer helpers map transformers' `PerceiverLayer` / `PerceiverEncoder` onto
`CrossAttentionLayer`, `SelfAttentionBlock`, `PerceiverDecoder` and `PerceiverEncoder`, and
`encoder_settings` reads the matching `PerceiverEncoder` fields from config.json.
`attention` also reads krasserm's MultiHeadAttention (`KRASSERM_PROJECTIONS`), and
`check_variables` checks that converted variables have exactly the built model's names and shapes;
`run_converter` does the three steps every checkpoint format shares.
"""

import difflib
from typing import Dict, Mapping, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util

from perceiver_jax import tasks

# transformers' `hidden_act` -> layers.ACTIVATIONS ('gelu' there is the exact erf GELU).
ACTIVATIONS = {"gelu": "gelu_exact", "gelu_new": "gelu", "gelu_pytorch_tanh": "gelu",
               "relu": "relu"}
# MultiHeadAttention projection -> its torch Linear under an attention prefix, in transformers'
# PerceiverAttention and in krasserm's MultiHeadAttention.
TRANSFORMERS_PROJECTIONS = {"query": "self.query", "key": "self.key", "value": "self.value",
                            "out": "output.dense"}
KRASSERM_PROJECTIONS = {"query": "q_proj", "key": "k_proj", "value": "v_proj", "out": "o_proj"}


class WeightReader:
  """Weights {transformers name: array}; each taken at most once."""

  def __init__(self, weights: Dict[str, np.ndarray], source: str):
    self._weights = dict(weights)
    self._source = source

  def has(self, name: str) -> bool:
    return name in self._weights

  def shape(self, name: str) -> tuple:
    """The shape of the weight `name` (not taken)."""
    if name not in self._weights:
      raise ValueError(f"{self._source} has no weight {name!r}.")
    return tuple(self._weights[name].shape)

  def take(self, name: str, shape: Optional[tuple] = None) -> np.ndarray:
    """The weight `name` (removed from the pool); `shape` is checked when given."""
    if name not in self._weights:
      near = difflib.get_close_matches(name, list(self._weights), n=3)
      raise ValueError(f"{self._source} has no weight {name!r}"
                       + (f"; close names: {near}." if near else "."))
    array = self._weights.pop(name)
    if shape is not None and tuple(array.shape) != tuple(shape):
      raise ValueError(f"{self._source}: weight {name!r} has shape {tuple(array.shape)}, "
                       f"expected {tuple(shape)}.")
    return array

  def dense(self, prefix: str) -> dict:
    """torch Linear `prefix` -> {'kernel': [in, out], 'bias': [out]}."""
    return {"kernel": self.take(f"{prefix}.weight").T, "bias": self.take(f"{prefix}.bias")}

  def layer_norm(self, prefix: str) -> dict:
    return {"scale": self.take(f"{prefix}.weight"), "bias": self.take(f"{prefix}.bias")}

  def attention(self, prefix: str, num_heads: int,
                projections: Mapping[str, str] = TRANSFORMERS_PROJECTIONS) -> dict:
    """Attention `prefix` (transformers' PerceiverAttention by default; `projections` names
    the query, key, value and out Linears under it) -> MultiHeadAttention params."""
    params = {}
    for name in ("query", "key", "value"):
      linear = f"{prefix}.{projections[name]}"
      dense = self.dense(linear)
      channels = dense["bias"].shape[0]
      if channels % num_heads:
        raise ValueError(f"{self._source}: {linear} has {channels} channels, not "
                         f"divisible by {num_heads} heads; check the head counts in config.json.")
      params[name] = {"kernel": dense["kernel"].reshape(-1, num_heads, channels // num_heads),
                      "bias": dense["bias"].reshape(num_heads, channels // num_heads)}
    out = self.dense(f"{prefix}.{projections['out']}")
    params["out"] = {"kernel": out["kernel"].reshape(num_heads, -1, out["kernel"].shape[-1]),
                     "bias": out["bias"]}
    return params

  def mlp(self, prefix: str) -> dict:
    return {"Dense_0": self.dense(f"{prefix}.dense1"), "Dense_1": self.dense(f"{prefix}.dense2")}

  def cross_attention_layer(self, prefix: str, num_heads: int) -> dict:
    """transformers PerceiverLayer (cross-attention) -> CrossAttentionLayer params."""
    return {"query_norm": self.layer_norm(f"{prefix}.attention.self.layernorm1"),
            "input_norm": self.layer_norm(f"{prefix}.attention.self.layernorm2"),
            "attention": self.attention(f"{prefix}.attention", num_heads),
            "mlp_norm": self.layer_norm(f"{prefix}.layernorm"),
            "mlp": self.mlp(f"{prefix}.mlp")}

  def self_attention_layer(self, prefix: str, num_heads: int) -> dict:
    """transformers PerceiverLayer (self-attention) -> SelfAttentionLayer params."""
    return {"attention_norm": self.layer_norm(f"{prefix}.attention.self.layernorm1"),
            "attention": self.attention(f"{prefix}.attention", num_heads),
            "mlp_norm": self.layer_norm(f"{prefix}.layernorm"),
            "mlp": self.mlp(f"{prefix}.mlp")}

  def decoder(self, prefix: str, num_heads: int, final_layer: Optional[str] = None) -> dict:
    """transformers PerceiverLayer (decoding cross-attention) [+ final Linear] ->
    PerceiverDecoder params (its `output` Dense from `final_layer`)."""
    params = self.cross_attention_layer(prefix, num_heads)
    params["latent_norm"] = params.pop("input_norm")
    if final_layer is not None:
      params["output"] = self.dense(final_layer)
    return params

  def encoder(self, config: dict, prefix: str = "perceiver") -> dict:
    """transformers PerceiverEmbeddings + PerceiverEncoder -> PerceiverEncoder params."""
    layers = {f"layer_{i}": self.self_attention_layer(f"{prefix}.encoder.self_attends.{i}",
                                                      config["num_self_attention_heads"])
              for i in range(config["num_self_attends_per_block"])}
    return {"latents": self.take(f"{prefix}.embeddings.latents"),
            "cross_attention_first": self.cross_attention_layer(
                f"{prefix}.encoder.cross_attention", config["num_cross_attention_heads"]),
            "self_attention_block_shared": layers}

  def check_all_used(self):
    """ValueError naming every weight that no converter placed."""
    if self._weights:
      raise ValueError(f"{self._source}: {len(self._weights)} weights were not placed in the "
                       f"perceiver_jax model: {sorted(self._weights)}.")


def activation(config: dict) -> str:
  """The layers.ACTIVATIONS name of config.json's `hidden_act`."""
  act = config.get("hidden_act", "gelu")
  if act not in ACTIVATIONS:
    raise ValueError(f"config.json hidden_act={act!r} has no perceiver_jax equivalent; "
                     f"supported: {sorted(ACTIVATIONS)}.")
  return ACTIVATIONS[act]


def attention_settings(config: dict) -> dict:
  """The `attention` sub-dict (AttentionConfig fields) of config.json: its attention dropout."""
  return dict(dropout_rate=config.get("attention_probs_dropout_prob", 0.0))


def encoder_settings(config: dict, weights: WeightReader, prefix: str = "perceiver") -> dict:
  """PerceiverEncoder fields of config.json; channel widths read off the weights' shapes."""
  def width(name):
    return weights.shape(f"{prefix}.encoder.{name}.bias")[0]
  cross, self_attend = "cross_attention.attention.self", "self_attends.0.attention.self"
  return dict(
      num_latents=config["num_latents"], num_latent_channels=config["d_latents"],
      num_cross_attention_layers=1, num_self_attention_blocks=config["num_blocks"],
      num_self_attention_layers_per_block=config["num_self_attends_per_block"],
      first_self_attention_block_shared=True,
      num_cross_attention_heads=config["num_cross_attention_heads"],
      num_self_attention_heads=config["num_self_attention_heads"],
      cross_attention_qk_channels=width(f"{cross}.query"),
      cross_attention_v_channels=width(f"{cross}.value"),
      self_attention_qk_channels=width(f"{self_attend}.query"),
      self_attention_v_channels=width(f"{self_attend}.value"),
      cross_attention_widening_factor=config["cross_attention_widening_factor"],
      self_attention_widening_factor=config["self_attention_widening_factor"],
      use_query_residual=config["use_query_residual"],
      dropout_rate=0.0, attention=attention_settings(config), activation=activation(config))


def decoder_settings(config: dict, weights: WeightReader, prefix: str, num_heads: int,
                     use_query_residual: bool) -> dict:
  """PerceiverDecoder fields of transformers' decoding cross-attention `prefix` (a
  PerceiverLayer): widths read off the weights; the head count and query residual, which the
  transformers heads fix in code, given."""
  def width(name):
    return weights.shape(f"{prefix}.attention.self.{name}.bias")[0]
  hidden, channels = weights.shape(f"{prefix}.mlp.dense1.weight")
  if hidden % channels:
    raise ValueError(f"{prefix}.mlp.dense1 maps {channels} to {hidden} channels, not a whole "
                     "widening factor; the checkpoint is not a transformers Perceiver head.")
  return dict(num_heads=num_heads, qk_channels=width("query"), v_channels=width("value"),
              widening_factor=hidden // channels, use_query_residual=use_query_residual,
              dropout_rate=0.0, attention=attention_settings(config), activation=activation(config))


def check_variables(model_config: ml_collections.ConfigDict, variables: dict, source: str):
  """ValueError naming every variable of the converted `variables` that is missing from,
  extra to, or shaped unlike those the model of `model_config` initialises."""
  model = tasks.build(model_config)
  expected = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                            tasks.example_inputs(model_config, 1))
  want = {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(expected, sep="/").items()}
  got = {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(variables, sep="/").items()}
  problems = [f"missing {k} {s}" for k, s in sorted(want.items()) if k not in got]
  problems += [f"unexpected {k} {s}" for k, s in sorted(got.items()) if k not in want]
  problems += [f"{k} has shape {got[k]}, the model's is {s}" for k, s in sorted(want.items())
               if k in got and got[k] != s]
  if problems:
    raise ValueError(f"converting {source} gave variables that do not fit the "
                     f"{model_config.task} model: " + "; ".join(problems))


def run_converter(converter, config: dict, weights: Mapping[str, np.ndarray], source: str,
                  path: str):
  """(task config, variables as jax arrays) of converter(config, WeightReader(weights)); a
  ValueError names any weight left unplaced (`source` in the message) or any variable that
  does not fit the built model (`path` in the message)."""
  reader = WeightReader(weights, source)
  model_config, variables = converter(config, reader)
  reader.check_all_used()
  variables = jax.tree_util.tree_map(jnp.asarray, variables)
  check_variables(model_config, variables, path)
  return model_config, variables
