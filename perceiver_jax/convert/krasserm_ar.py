"""krasserm's perceiver-io Perceiver AR checkpoints -> perceiver_jax 'language_modeling' models.

`CONVERTERS[model_type](model_config, weights)` -> (task config, {'params': ...}) for the
`model_type`s of krasserm's `PerceiverCausalLanguageModel` ('perceiver-ar-causal-language-
model') and `PerceiverSymbolicAudioModel` ('perceiver-ar-symbolic-audio-model'); both wrap the
same `CausalSequenceModel`, so one function converts both. `model_config` is config.json's
`model_config` dict (its `CausalSequenceModelConfig` fields; missing ones take krasserm's
defaults); `weights` is a WeightReader over the state dict that `save_pretrained` writes, whose
keys start with 'backend_model.' (the wrapper's attribute). The result computes
ids [batch, n] (+ pad_mask, True = token) -> logits [batch, min(max_latents, n), vocab_size],
krasserm's logits with prefix_len = n - max_latents (the last max_latents positions are latents).

How krasserm's model maps onto PerceiverAR's fields:
- tied token logits (`TiedTokenOutputAdapter`: tied_embeddings, its `emb_bias` = output_bias),
  `output_norm` = final_norm, exact GELU MLPs, no q/k/v biases, the cross-attention's output
  bias only, no MLP biases (qkv_bias, *_out_bias, mlp_bias);
- the cross-attention's keys are the kv-normed prefix concatenated with the query-normed
  latents (`CrossAttention` with `x_kv_prefix`): latent_kv_query_norm;
- rotary on every head dim, or on its first half with `abs_pos_emb` (rotary_fraction 1 or 0.5);
  krasserm's `rotate_half` turns adjacent channel pairs by frequencies repeated pairwise, which
  is RotaryPositionEmbedding's interleaved layout with the same frequencies, so the q/k
  projections are copied as they are (the stored `inv_freq` is checked against ours);
- positions of left-padded rows shifted so each row's first token is 0, pads clamped to 0, as
  krasserm's `positions(b, n, shift)`; `num_self_attention_rotary_layers` as theirs;
- cross_attention_dropout (prefix dropout), post_attention_dropout (attention.dropout_rate),
  residual_dropout (dropout_rate) and activation_checkpointing (remat) carry over for training;
  max_heads_parallel, activation_offloading and init_scale do not change the function.
Logits agree where a row's padding lies within the prefix; krasserm's self-attention does not
mask padded latents (ours does), so rows padded into the latents differ.
"""

from typing import Tuple

import ml_collections
import numpy as np

from perceiver_jax import tasks
from perceiver_jax.convert.weights import WeightReader

PREFIX = "backend_model."  # save_pretrained's key prefix: the wrapper's `backend_model`.

# krasserm's CausalSequenceModelConfig fields and defaults (perceiver-io 0.11.0).
DEFAULTS = dict(
    num_heads=8, max_heads_parallel=None, num_self_attention_layers=8,
    num_self_attention_rotary_layers=1, self_attention_widening_factor=4,
    cross_attention_widening_factor=4, cross_attention_dropout=0.5, post_attention_dropout=0.0,
    residual_dropout=0.0, activation_checkpointing=False, activation_offloading=False,
    vocab_size=262, max_seq_len=4096, max_latents=512, num_channels=512, output_norm=False,
    output_bias=True, abs_pos_emb=True, init_scale=0.02)

ROTARY_MAX_WAVELENGTH = 10_000.0  # krasserm's FrequencyPositionEncoding, as ours.


def _settings(model_config: dict) -> dict:
  """PerceiverAR fields of krasserm's `model_config`; ValueError for what we cannot honour."""
  unknown = sorted(set(model_config) - set(DEFAULTS))
  if unknown:
    raise ValueError(f"model_config has fields {unknown} that krasserm's CausalSequenceModelConfig"
                     f" (perceiver-io 0.11.0) does not; its fields are {sorted(DEFAULTS)}.")
  c = dict(DEFAULTS, **model_config)
  if c["self_attention_widening_factor"] != c["cross_attention_widening_factor"]:
    raise ValueError(
        f"model_config self_attention_widening_factor={c['self_attention_widening_factor']} and "
        f"cross_attention_widening_factor={c['cross_attention_widening_factor']} differ; "
        "PerceiverAR has one widening_factor for both.")
  if not 0.0 <= c["cross_attention_dropout"] < 1.0:
    raise ValueError(f"model_config cross_attention_dropout={c['cross_attention_dropout']} must "
                     "be in [0, 1) (1 drops the whole prefix).")
  channels, heads = c["num_channels"], c["num_heads"]
  if channels % heads or (channels // heads // (2 if c["abs_pos_emb"] else 1)) % 2:
    raise ValueError(
        f"model_config num_channels={channels} / num_heads={heads} (abs_pos_emb="
        f"{c['abs_pos_emb']}) must leave an even number of rotated channels per head (the "
        "head dim, or half of it with abs_pos_emb); krasserm rotates one more otherwise.")
  layers, rotary_layers = c["num_self_attention_layers"], c["num_self_attention_rotary_layers"]
  # krasserm rotates layer i when i < num_self_attention_rotary_layers or it is -1.
  rotary_layers = -1 if rotary_layers == -1 or rotary_layers >= layers else max(rotary_layers, 0)
  return dict(
      vocab_size=c["vocab_size"], max_context=c["max_seq_len"], num_latents=c["max_latents"],
      num_channels=channels, num_heads=heads, num_layers=layers,
      widening_factor=c["self_attention_widening_factor"], activation="gelu_exact",
      rotary_fraction=0.5 if c["abs_pos_emb"] else 1.0,
      num_self_attention_rotary_layers=rotary_layers, absolute_positions=c["abs_pos_emb"],
      dropout_rate=c["residual_dropout"], cross_attention_dropout=c["cross_attention_dropout"],
      attention=dict(dropout_rate=c["post_attention_dropout"]), tied_embeddings=True,
      output_bias=c["output_bias"], final_norm=c["output_norm"], latent_kv_query_norm=True,
      qkv_bias=False, cross_attention_out_bias=True, self_attention_out_bias=False,
      mlp_bias=False, remat=c["activation_checkpointing"])


def _kernel(weights: WeightReader, name: str, shape: tuple) -> np.ndarray:
  """torch Linear `name`.weight [out, in] -> kernel [in, out], its [in, out] shape checked."""
  return weights.take(f"{name}.weight", shape[::-1]).T


def _norm(weights: WeightReader, name: str, channels: int) -> dict:
  return {"scale": weights.take(f"{name}.weight", (channels,)),
          "bias": weights.take(f"{name}.bias", (channels,))}


def _attention(weights: WeightReader, name: str, channels: int, heads: int,
               out_bias: bool) -> dict:
  """krasserm MultiHeadAttention `name` (q/k/v without bias) -> MultiHeadAttention params."""
  head_channels = channels // heads
  params = {ours: {"kernel": _kernel(weights, f"{name}.{theirs}_proj", (channels, channels))
                   .reshape(channels, heads, head_channels)}
            for ours, theirs in (("query", "q"), ("key", "k"), ("value", "v"))}
  params["out"] = {"kernel": _kernel(weights, f"{name}.o_proj", (channels, channels))
                   .reshape(heads, head_channels, channels)}
  if out_bias:
    params["out"]["bias"] = weights.take(f"{name}.o_proj.bias", (channels,))
  return params


def _mlp(weights: WeightReader, name: str, channels: int, widening: int) -> Tuple[dict, dict]:
  """krasserm MLP `name` (LayerNorm, Linear, GELU, Linear; no biases) -> (norm, MLP) params."""
  hidden = widening * channels
  return _norm(weights, f"{name}.0", channels), {
      "Dense_0": {"kernel": _kernel(weights, f"{name}.1", (channels, hidden))},
      "Dense_1": {"kernel": _kernel(weights, f"{name}.3", (hidden, channels))}}


def _check_rotary(weights: WeightReader, settings: dict):
  """krasserm's stored rotary frequencies (when saved) must be the ones we compute."""
  name = f"{PREFIX}input_adapter.frq_pos_encoding.inv_freq"
  if not weights.has(name):
    return
  head_channels = settings["num_channels"] // settings["num_heads"]
  rotated = int(head_channels * settings["rotary_fraction"])
  ours = ROTARY_MAX_WAVELENGTH ** (-np.arange(0, rotated, 2) / rotated)
  theirs = weights.take(name, ours.shape)
  if not np.allclose(theirs, ours, rtol=1e-6):
    raise ValueError(f"{name} = {theirs} are not the rotary frequencies "
                     f"{ROTARY_MAX_WAVELENGTH}^(-2i/{rotated}) PerceiverAR uses.")


def perceiver_ar(model_config: dict,
                 weights: WeightReader) -> Tuple[ml_collections.ConfigDict, dict]:
  """krasserm CausalSequenceModel (causal LM or symbolic audio) -> ('language_modeling'
  config, variables); see the module docstring."""
  settings = _settings(model_config)
  cfg = tasks.default_config("language_modeling")
  cfg.perceiver_ar.update(settings)
  d, heads, widening = settings["num_channels"], settings["num_heads"], settings["widening_factor"]
  _check_rotary(weights, settings)
  adapter = f"{PREFIX}input_adapter"
  params = {"embedding": {"embedding": weights.take(f"{adapter}.txt_embedding.weight",
                                                    (settings["vocab_size"], d))}}
  if settings["absolute_positions"]:
    params["position_embeddings"] = weights.take(f"{adapter}.pos_embedding.weight",
                                                 (settings["max_context"], d))
  cross = f"{PREFIX}cross_attention"
  params["cross_attention_query_norm"] = _norm(weights, f"{cross}.0.module.q_norm", d)
  params["cross_attention_kv_norm"] = _norm(weights, f"{cross}.0.module.kv_norm", d)
  params["cross_attention"] = _attention(weights, f"{cross}.0.module.attention", d, heads, True)
  params["cross_attention_mlp_norm"], params["cross_attention_mlp"] = _mlp(
      weights, f"{cross}.1.module", d, widening)
  for i in range(settings["num_layers"]):
    layer = f"{PREFIX}self_attention.{i}"
    mlp_norm, mlp = _mlp(weights, f"{layer}.1.module", d, widening)
    params[f"self_attention_{i}"] = {
        "attention_norm": _norm(weights, f"{layer}.0.module.norm", d),
        "attention": _attention(weights, f"{layer}.0.module.attention", d, heads, False),
        "mlp_norm": mlp_norm, "mlp": mlp}
  if settings["final_norm"]:
    params["final_norm"] = _norm(weights, f"{PREFIX}out_norm", d)
  if settings["output_bias"]:
    params["logits_bias"] = weights.take(f"{PREFIX}output_adapter.bias",
                                         (settings["vocab_size"],))
  return cfg, {"params": params}


CONVERTERS = {"perceiver-ar-causal-language-model": perceiver_ar,
              "perceiver-ar-symbolic-audio-model": perceiver_ar}
