"""krasserm/perceiver-io's Perceiver IO models -> perceiver_jax task models.

- 'perceiver-io-masked-language-model' (MaskedLanguageModel) -> `masked_language_modeling`:
  ids [batch, length] (+ pad_mask, True = token; krasserm's is True = pad) -> logits
  [batch, encoder max_seq_len, vocab_size], whose first `length` rows are krasserm's logits
  [batch, length, vocab_size]. Its logits are tied to the input embedding
  (TiedTokenOutputAdapter), or, with decoder.num_output_query_channels set, come from a Linear
  (TokenOutputAdapter; our config.output_query_channels). Decoder queries past the encoder's
  max_seq_len (krasserm's decoder may have more) are dropped: each query decodes independently
  and krasserm never returns more logits than input tokens, so no output changes.
- 'perceiver-io-text-classifier' (TextClassifier) -> `sequence_classification`: ids
  [batch, length] (+ pad_mask) -> logits [batch, num_classes].
- 'perceiver-io-image-classifier' (ImageClassifier) -> `image_classification` 'fourier':
  images [batch, h, w, c] (krasserm's layout too) -> logits [batch, num_classes]; raw pixels
  + Fourier features of the (h, w) grid at max resolution (h, w), checked against the
  checkpoint's stored position encoding.

Each converter takes config.json's `model_config` (the backend config as krasserm's wrapper
saves it) and the weights under `backend_model.` (encoder `0.`, decoder `1.`). Widths are read
off the weights; the schedule, head counts, widening factors and query residual come from
`model_config`, whose every field must be one krasserm 0.11 writes. Fields that only shape
training (initialisation, freezing, activation checkpointing) are accepted and dropped;
`dropout` becomes the attention dropout. krasserm's layers are ours: pre-LayerNorm (PyTorch's
epsilon 1e-5), exact GELU, biases everywhere, a query residual in every encoder cross-attention.
"""

from typing import Optional, Tuple

import ml_collections
import numpy as np

from perceiver_jax import tasks
from perceiver_jax.convert.weights import KRASSERM_PROJECTIONS, WeightReader
from perceiver_jax.nn.position_encoding import fourier_features

ENCODER = "backend_model.0"
DECODER = "backend_model.1"
ACTIVATION = "gelu_exact"  # krasserm's MLP uses torch.nn.GELU().
# model_config fields krasserm 0.11 writes, with its defaults (used when one is absent).
MODEL_FIELDS = dict(encoder=None, decoder=None, num_latents=None, num_latent_channels=None,
                    activation_checkpointing=False, activation_offloading=False)
ENCODER_FIELDS = dict(
    num_cross_attention_heads=8, num_cross_attention_qk_channels=None,
    num_cross_attention_v_channels=None, num_cross_attention_layers=1,
    first_cross_attention_layer_shared=False, cross_attention_widening_factor=1,
    num_self_attention_heads=8, num_self_attention_qk_channels=None,
    num_self_attention_v_channels=None, num_self_attention_layers_per_block=8,
    num_self_attention_blocks=1, first_self_attention_block_shared=True,
    self_attention_widening_factor=1, dropout=0.0, init_scale=0.02, freeze=False)
TEXT_ENCODER_FIELDS = dict(ENCODER_FIELDS, vocab_size=10003, max_seq_len=256,
                           num_input_channels=64, params=None)
IMAGE_ENCODER_FIELDS = dict(ENCODER_FIELDS, image_shape=(224, 224, 3), num_frequency_bands=32)
DECODER_FIELDS = dict(
    num_cross_attention_heads=8, num_cross_attention_qk_channels=None,
    num_cross_attention_v_channels=None, cross_attention_widening_factor=1,
    cross_attention_residual=True, dropout=0.0, init_scale=0.02, freeze=False)
TEXT_DECODER_FIELDS = dict(DECODER_FIELDS, num_output_query_channels=None, vocab_size=10003,
                           max_seq_len=512)
CLASSIFICATION_DECODER_FIELDS = dict(DECODER_FIELDS, num_output_queries=1,
                                     num_output_query_channels=256, num_classes=100)


def _section(config: dict, fields: dict, path: str) -> dict:
  """`config` completed with the krasserm defaults of `fields`; a ValueError naming `path`
  for any field krasserm does not write (a newer or edited config)."""
  if not isinstance(config, dict):
    raise ValueError(f"config.json {path} is a {type(config).__name__}, not an object of "
                     "krasserm config fields.")
  unknown = sorted(set(config) - set(fields))
  if unknown:
    raise ValueError(f"config.json {path} has {unknown}, which the converter does not know "
                     f"(written by a newer perceiver-io?); it reads {sorted(fields)}.")
  return dict(fields, **config)


def _model_config(config: dict, encoder_fields: dict, decoder_fields: dict):
  """(model, encoder, decoder) sections of `model_config`, completed and checked."""
  model = _section(config, MODEL_FIELDS, "model_config")
  for name in ("num_latents", "num_latent_channels", "encoder", "decoder"):
    if model.get(name) is None:
      raise ValueError(f"config.json model_config has no {name!r}; it is not a krasserm "
                       "Perceiver IO config.")
  return (model, _section(model["encoder"], encoder_fields, "model_config.encoder"),
          _section(model["decoder"], decoder_fields, "model_config.decoder"))


def _mlp(reader: WeightReader, prefix: str) -> dict:
  """krasserm Residual(MLP) `prefix` (LayerNorm, Linear, GELU, Linear) -> our MLP residual."""
  return {"mlp_norm": reader.layer_norm(f"{prefix}.module.0"),
          "mlp": {"Dense_0": reader.dense(f"{prefix}.module.1"),
                  "Dense_1": reader.dense(f"{prefix}.module.3")}}


def _cross_attention_layer(reader: WeightReader, prefix: str, num_heads: int,
                           residual: bool = True) -> dict:
  """krasserm CrossAttentionLayer `prefix` -> CrossAttentionLayer params."""
  attention = f"{prefix}.0.module" if residual else f"{prefix}.0"
  return {"query_norm": reader.layer_norm(f"{attention}.q_norm"),
          "input_norm": reader.layer_norm(f"{attention}.kv_norm"),
          "attention": reader.attention(f"{attention}.attention", num_heads,
                                        KRASSERM_PROJECTIONS),
          **_mlp(reader, f"{prefix}.1")}


def _self_attention_block(reader: WeightReader, prefix: str, num_heads: int,
                          num_layers: int) -> dict:
  """krasserm SelfAttentionBlock `prefix` -> SelfAttentionBlock params."""
  return {f"layer_{i}": {
      "attention_norm": reader.layer_norm(f"{prefix}.{i}.0.module.norm"),
      "attention": reader.attention(f"{prefix}.{i}.0.module.attention", num_heads,
                                    KRASSERM_PROJECTIONS),
      **_mlp(reader, f"{prefix}.{i}.1")} for i in range(num_layers)}


def _width(reader: WeightReader, linear: str) -> int:
  return reader.shape(f"{linear}.weight")[0]


def _encoder(model: dict, encoder: dict, reader: WeightReader) -> Tuple[dict, dict]:
  """(PerceiverEncoder settings, params) of krasserm's PerceiverEncoder."""
  cross_heads = encoder["num_cross_attention_heads"]
  self_heads = encoder["num_self_attention_heads"]
  layers = encoder["num_self_attention_layers_per_block"]
  p, l = encoder["num_cross_attention_layers"], encoder["num_self_attention_blocks"]
  cross_shared = encoder["first_cross_attention_layer_shared"]
  block_shared = encoder["first_self_attention_block_shared"]
  cross = f"{ENCODER}.cross_attn_1.0.module.attention"
  block = f"{ENCODER}.self_attn_1.0.0.module.attention"
  settings = dict(
      num_latents=model["num_latents"], num_latent_channels=model["num_latent_channels"],
      num_cross_attention_layers=p, num_self_attention_blocks=l,
      num_self_attention_layers_per_block=layers,
      first_cross_attention_layer_shared=cross_shared,
      first_self_attention_block_shared=block_shared,
      num_cross_attention_heads=cross_heads, num_self_attention_heads=self_heads,
      cross_attention_qk_channels=_width(reader, f"{cross}.q_proj"),
      cross_attention_v_channels=_width(reader, f"{cross}.v_proj"),
      self_attention_qk_channels=_width(reader, f"{block}.q_proj"),
      self_attention_v_channels=_width(reader, f"{block}.v_proj"),
      cross_attention_widening_factor=encoder["cross_attention_widening_factor"],
      self_attention_widening_factor=encoder["self_attention_widening_factor"],
      use_query_residual=True, dropout_rate=0.0,
      attention=dict(dropout_rate=encoder["dropout"]), activation=ACTIVATION)
  # krasserm's cross_attn_1 / self_attn_1 are our shared modules when the first is shared;
  # its cross_attn_n / self_attn_n (present when there are more and the first is not shared)
  # are our shared modules.
  params = {"latents": reader.take(f"{ENCODER}.latent_provider._query",
                                   (model["num_latents"], model["num_latent_channels"]))}
  cross_layer = lambda name: _cross_attention_layer(reader, f"{ENCODER}.{name}", cross_heads)
  params["cross_attention_shared" if cross_shared else "cross_attention_first"] = (
      cross_layer("cross_attn_1"))
  if p > 1 and not cross_shared:
    params["cross_attention_shared"] = cross_layer("cross_attn_n")
  block_params = lambda name: _self_attention_block(reader, f"{ENCODER}.{name}", self_heads,
                                                    layers)
  params["self_attention_block_shared" if block_shared else "self_attention_block_first"] = (
      block_params("self_attn_1"))
  if l > 1 and not block_shared:
    params["self_attention_block_shared"] = block_params("self_attn_n")
  return settings, params


def _decoder(decoder: dict, reader: WeightReader,
             final_layer: Optional[str] = None) -> Tuple[dict, dict]:
  """(PerceiverDecoder settings, params) of krasserm's PerceiverDecoder [+ its output Linear]."""
  heads, residual = decoder["num_cross_attention_heads"], decoder["cross_attention_residual"]
  attention = f"{DECODER}.cross_attn.0{'.module' if residual else ''}.attention"
  settings = dict(
      num_heads=heads, qk_channels=_width(reader, f"{attention}.q_proj"),
      v_channels=_width(reader, f"{attention}.v_proj"),
      widening_factor=decoder["cross_attention_widening_factor"], use_query_residual=residual,
      dropout_rate=0.0, attention=dict(dropout_rate=decoder["dropout"]), activation=ACTIVATION)
  params = _cross_attention_layer(reader, f"{DECODER}.cross_attn", heads, residual)
  params["latent_norm"] = params.pop("input_norm")
  if final_layer is not None:
    params["output"] = reader.dense(final_layer)
  return settings, params


def _text_model(task: str, model: dict, encoder: dict,
                reader: WeightReader) -> Tuple[ml_collections.ConfigDict, dict]:
  """(task config with the TextAdapter and encoder set, their params) of a TextEncoder."""
  cfg = tasks.default_config(task)
  vocab_size, max_seq_len = encoder["vocab_size"], encoder["max_seq_len"]
  channels = encoder["num_input_channels"]
  cfg.max_seq_len, cfg.vocab_size = max_seq_len, vocab_size
  cfg.input_adapter = dict(num_channels=channels)
  cfg.encoder, encoder_params = _encoder(model, encoder, reader)
  adapter = f"{ENCODER}.input_adapter"
  params = {
      "input_adapter": {
          "embedding": {"embedding": reader.take(f"{adapter}.txt_embedding.weight",
                                                 (vocab_size, channels))},
          "position_embeddings": reader.take(f"{adapter}.pos_embedding.weight",
                                             (max_seq_len, channels))},
      "encoder": encoder_params}
  return cfg, params


def masked_language_model(config: dict,
                          reader: WeightReader) -> Tuple[ml_collections.ConfigDict, dict]:
  """krasserm MaskedLanguageModel -> (masked_language_modeling config, variables)."""
  model, encoder, decoder = _model_config(config, TEXT_ENCODER_FIELDS, TEXT_DECODER_FIELDS)
  if decoder["vocab_size"] != encoder["vocab_size"]:
    raise ValueError(f"config.json model_config.decoder.vocab_size={decoder['vocab_size']} "
                     f"differs from model_config.encoder.vocab_size={encoder['vocab_size']}; "
                     "perceiver_jax's masked_language_modeling predicts the input vocabulary, "
                     "so such a model does not convert.")
  if decoder["max_seq_len"] < encoder["max_seq_len"]:
    raise ValueError(
        f"config.json model_config.decoder.max_seq_len={decoder['max_seq_len']} is below "
        f"model_config.encoder.max_seq_len={encoder['max_seq_len']}: krasserm returns fewer "
        "logits than tokens for longer inputs, which the masked_language_modeling task (one "
        "output per input position) cannot; such a model does not convert.")
  cfg, params = _text_model("masked_language_modeling", model, encoder, reader)
  cfg.decoder, params["decoder"] = _decoder(decoder, reader)
  cfg.output_query_channels = decoder["num_output_query_channels"]
  queries = reader.take(f"{DECODER}.output_query_provider._query",
                        (decoder["max_seq_len"],
                         cfg.output_query_channels or encoder["num_input_channels"]))
  params["output_query"] = {"queries": {"embeddings": queries[:cfg.max_seq_len]}}
  if cfg.output_query_channels is None:  # TiedTokenOutputAdapter: a bias on the tied logits.
    params["output_adapter"] = {"bias": reader.take(f"{DECODER}.output_adapter.bias",
                                                    (cfg.vocab_size,))}
  else:  # TokenOutputAdapter: a Linear to the vocabulary.
    params["output_adapter"] = {"projection": reader.dense(f"{DECODER}.output_adapter.linear")}
  return cfg, {"params": params}


def _classification_decoder(cfg: ml_collections.ConfigDict, decoder: dict,
                            reader: WeightReader) -> dict:
  """Sets cfg's classification head from krasserm's ClassificationDecoderConfig; its params."""
  if decoder["num_output_queries"] != 1:
    raise ValueError(f"config.json model_config.decoder.num_output_queries="
                     f"{decoder['num_output_queries']}: krasserm then returns logits per "
                     "query; perceiver_jax's classification heads decode one query. Only "
                     "num_output_queries=1 converts.")
  cfg.num_classes = decoder["num_classes"]
  cfg.query_channels = decoder["num_output_query_channels"]
  cfg.decoder, decoder_params = _decoder(decoder, reader,
                                         final_layer=f"{DECODER}.output_adapter.linear")
  query = reader.take(f"{DECODER}.output_query_provider._query", (1, cfg.query_channels))
  return {"output_query": {"queries": {"embeddings": query}}, "decoder": decoder_params}


def text_classifier(config: dict, reader: WeightReader) -> Tuple[ml_collections.ConfigDict, dict]:
  """krasserm TextClassifier -> (sequence_classification config, variables)."""
  model, encoder, decoder = _model_config(config, TEXT_ENCODER_FIELDS,
                                          CLASSIFICATION_DECODER_FIELDS)
  cfg, params = _text_model("sequence_classification", model, encoder, reader)
  params.update(_classification_decoder(cfg, decoder, reader))
  return cfg, {"params": params}


def image_classifier(config: dict,
                     reader: WeightReader) -> Tuple[ml_collections.ConfigDict, dict]:
  """krasserm ImageClassifier -> (image_classification 'fourier' config, variables)."""
  model, encoder, decoder = _model_config(config, IMAGE_ENCODER_FIELDS,
                                          CLASSIFICATION_DECODER_FIELDS)
  image_shape = tuple(encoder["image_shape"])
  if len(image_shape) != 3:
    raise ValueError(f"config.json model_config.encoder.image_shape={list(image_shape)}: "
                     "perceiver_jax's image classifier takes images (height, width, channels); "
                     "other input ranks do not convert.")
  grid, bands = image_shape[:2], encoder["num_frequency_bands"]
  features = fourier_features(grid, bands, max_resolution=grid)
  stored = reader.take(f"{ENCODER}.input_adapter.position_encoding.position_encoding",
                       features.shape)
  error = float(np.max(np.abs(stored - features)))
  if error > 1e-3:
    raise ValueError(f"the checkpoint's Fourier position encoding differs from perceiver_jax's "
                     f"(max |difference| {error:.3g}) for image_shape {list(image_shape)} and "
                     f"num_frequency_bands={bands}; it was not made by krasserm's "
                     "FourierPositionEncoding, so the model does not convert.")
  cfg = tasks.default_config("image_classification", "fourier")
  cfg.image_shape = image_shape
  cfg.input_adapter = dict(prep_type="pixels", spatial_downsample=1, position_encoding="fourier",
                           num_frequency_bands=bands, max_resolution=grid)
  cfg.encoder, encoder_params = _encoder(model, encoder, reader)
  params = {"encoder": encoder_params, **_classification_decoder(cfg, decoder, reader)}
  return cfg, {"params": params}


CONVERTERS = {"perceiver-io-masked-language-model": masked_language_model,
              "perceiver-io-text-classifier": text_classifier,
              "perceiver-io-image-classifier": image_classifier}
