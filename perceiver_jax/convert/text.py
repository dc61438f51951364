"""transformers' byte-text Perceiver heads -> perceiver_jax task models.

- PerceiverForMaskedLM -> `masked_language_modeling`: ids [batch, length] (+ pad_mask) ->
  logits [batch, max_position_embeddings, vocab_size] (one output per trainable decoder query,
  whatever the input length, as transformers).
- PerceiverForSequenceClassification -> `sequence_classification`: ids [batch, length]
  (+ pad_mask) -> logits [batch, num_labels].

Both embed ids with PerceiverTextPreprocessor (token embedding + the first `length` learned
positions of max_position_embeddings), which is our TextAdapter. The heads' decoders are fixed
in transformers' `__init__`: the MLM decoder has 8 heads, d_model-channel queries, no query
residual and no final projection, and its logits are tied to the token embedding plus a bias
(EmbeddingOutput); the classification decoder has 1 head, one d_latents-channel query, a query
residual and a final Linear to num_labels. Channel widths are read off the weights.
config.json's layer_norm_eps is unused by transformers' Perceiver (its LayerNorms keep
PyTorch's 1e-5, as ours do).
"""

from typing import Tuple

import ml_collections

from perceiver_jax import tasks
from perceiver_jax.convert.weights import WeightReader, decoder_settings, encoder_settings

# Head counts of the decoders, hard-coded in the transformers heads' `__init__`.
MLM_DECODER_HEADS = 8
CLASSIFICATION_DECODER_HEADS = 1


def _text_model(task: str, config: dict, weights: WeightReader):
  """(task config with the input adapter and encoder set, their params) of the byte model."""
  cfg = tasks.default_config(task)
  vocab_size, d_model = config["vocab_size"], config["d_model"]
  cfg.max_seq_len, cfg.vocab_size = config["max_position_embeddings"], vocab_size
  cfg.input_adapter = dict(num_channels=d_model)
  cfg.encoder = encoder_settings(config, weights)
  prep = "perceiver.input_preprocessor"
  params = {
      "input_adapter": {
          "embedding": {"embedding": weights.take(f"{prep}.embeddings.weight",
                                                  (vocab_size, d_model))},
          "position_embeddings": weights.take(f"{prep}.position_embeddings.weight",
                                              (cfg.max_seq_len, d_model))},
      "encoder": weights.encoder(config)}
  return cfg, params


def masked_lm(config: dict, weights: WeightReader) -> Tuple[ml_collections.ConfigDict, dict]:
  """PerceiverForMaskedLM -> (masked_language_modeling config, variables)."""
  cfg, params = _text_model("masked_language_modeling", config, weights)
  decoder = "perceiver.decoder.decoding_cross_attention"
  cfg.decoder = decoder_settings(config, weights, decoder, MLM_DECODER_HEADS,
                                 use_query_residual=False)
  queries = weights.take("perceiver.decoder.output_position_encodings.position_embeddings",
                         (cfg.max_seq_len, config["d_model"]))
  params.update(
      output_query={"queries": {"embeddings": queries}},
      decoder=weights.decoder(decoder, MLM_DECODER_HEADS),
      output_adapter={"bias": weights.take("embedding_decoder.bias", (cfg.vocab_size,))})
  return cfg, {"params": params}


def sequence_classification(config: dict,
                            weights: WeightReader) -> Tuple[ml_collections.ConfigDict, dict]:
  """PerceiverForSequenceClassification -> (sequence_classification config, variables)."""
  cfg, params = _text_model("sequence_classification", config, weights)
  prefix = "perceiver.decoder.decoder"
  decoder = f"{prefix}.decoding_cross_attention"
  num_labels = weights.shape(f"{prefix}.final_layer.bias")[0]
  labels = len(config["id2label"]) if config.get("id2label") else config.get("num_labels")
  if labels is not None and labels != num_labels:
    raise ValueError(f"config.json id2label / num_labels name {labels} labels but the "
                     f"checkpoint's classifier {prefix}.final_layer has {num_labels} outputs; "
                     "fix config.json to match the weights.")
  cfg.num_classes, cfg.query_channels = num_labels, config["d_latents"]
  cfg.decoder = decoder_settings(config, weights, decoder, CLASSIFICATION_DECODER_HEADS,
                                 use_query_residual=True)
  query = weights.take(f"{prefix}.output_position_encodings.position_embeddings",
                       (1, config["d_latents"]))
  params.update(
      output_query={"queries": {"embeddings": query}},
      decoder=weights.decoder(decoder, CLASSIFICATION_DECODER_HEADS,
                              final_layer=f"{prefix}.final_layer"))
  return cfg, {"params": params}


CONVERTERS = {"PerceiverForMaskedLM": masked_lm,
              "PerceiverForSequenceClassification": sequence_classification}
