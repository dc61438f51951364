"""convert.text: transformers' byte-text Perceiver heads load with numerical parity.

Small random transformers heads (every weight, bias and LayerNorm parameter randomised) are
saved as checkpoints, converted, and run on the same ids and attention masks on both sides.
"""

import functools

import jax
import numpy as np
import pytest
import torch
import transformers

import transformers_parity
from transformers_parity import edited_copy
from perceiver_jax import convert

MAX_POSITIONS = 12
# Tighter than the project's 1e-4 (we measure ~1e-6): the tanh GELU in place of the exact one
# in just the decoder's MLP moves the logits by ~5e-5 of their scale.
TOLERANCE = 1e-5


def _randomised(model):
  """`model` (eval mode) with every parameter drawn from N(0, 0.2^2)."""
  with torch.no_grad():
    for param in model.parameters():
      param.copy_(torch.randn_like(param) * 0.2)
  return model.eval()


@pytest.fixture(scope="module")
def mlm(tmp_path_factory):
  """A PerceiverForMaskedLM with distinct widths everywhere: qk 16 != v 32 in the encoder,
  widening 2 / 3, two blocks of the shared self-attention layers, no cross-attention query
  residual, d_model 24 != d_latents 32. Returns (transformers model, checkpoint directory,
  converted model, variables)."""
  torch.manual_seed(0)
  config = transformers.PerceiverConfig(
      num_latents=6, d_latents=32, d_model=24, num_blocks=2, num_self_attends_per_block=2,
      num_self_attention_heads=2, num_cross_attention_heads=4, qk_channels=16, v_channels=32,
      cross_attention_widening_factor=2, self_attention_widening_factor=3,
      use_query_residual=False, max_position_embeddings=MAX_POSITIONS,
      attention_probs_dropout_prob=0.0)
  hf = _randomised(transformers.PerceiverForMaskedLM(config))
  path = transformers_parity.save(hf, tmp_path_factory.mktemp("mlm"))
  return (hf, path) + convert.from_transformers(path)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
  """A PerceiverForSequenceClassification (3 labels, tanh GELU 'gelu_new', qk/v widths from
  the defaults: cross-attention d_model 16, self-attention d_latents 32), as `mlm`."""
  torch.manual_seed(1)
  config = transformers.PerceiverConfig(
      num_latents=4, d_latents=32, d_model=16, num_blocks=1, num_self_attends_per_block=1,
      num_self_attention_heads=4, num_cross_attention_heads=2, num_labels=3,
      hidden_act="gelu_new", max_position_embeddings=MAX_POSITIONS,
      attention_probs_dropout_prob=0.0)
  hf = _randomised(transformers.PerceiverForSequenceClassification(config))
  path = transformers_parity.save(hf, tmp_path_factory.mktemp("classifier"))
  return (hf, path) + convert.from_transformers(path)


def _ids_and_mask(length, real_in_row_0):
  """Random byte ids [2, length] and a mask whose row 0 is padding after `real_in_row_0`."""
  ids = np.random.default_rng(length).integers(0, 262, (2, length)).astype(np.int64)
  mask = np.ones((2, length), np.int64)
  mask[0, real_in_row_0:] = 0
  return ids, mask


@functools.lru_cache()
def _jitted_apply(model):
  return jax.jit(lambda v, ids, mask: model.apply(v, ids, pad_mask=mask, deterministic=True))


def _ours(model, variables, ids, mask):
  """Our logits, jitted (one compile per shape beats op-by-op dispatch on CPU)."""
  return np.asarray(_jitted_apply(model)(variables, ids.astype(np.int32), mask.astype(bool)))


@pytest.mark.parametrize("length", [7, MAX_POSITIONS])
def test_masked_lm_matches_transformers_with_padding(mlm, length):
  hf, _, model, variables = mlm
  ids, mask = _ids_and_mask(length, 5)
  theirs = transformers_parity.run(hf, inputs=ids, attention_mask=mask)
  # One output per decoder query, whatever the input length.
  assert theirs.shape == (2, MAX_POSITIONS, 262)
  transformers_parity.assert_parity(_ours(model, variables, ids, mask), theirs, TOLERANCE)
  # The mask matters (row 0 changes without it, row 1 does not), so it was checked above.
  unmasked = transformers_parity.run(hf, inputs=ids)
  assert not np.allclose(unmasked[0], theirs[0], atol=1e-3)
  np.testing.assert_allclose(unmasked[1], theirs[1], rtol=1e-5, atol=1e-5)


def test_masked_lm_config_follows_the_checkpoint(mlm):
  hf, path, model, variables = mlm
  config, _ = convert.convert(path)
  assert (config.task, config.max_seq_len, config.vocab_size) == (
      "masked_language_modeling", MAX_POSITIONS, 262)
  assert config.input_adapter.num_channels == 24
  assert (config.encoder.num_self_attention_blocks, config.encoder.use_query_residual) == (2, False)
  assert (config.encoder.self_attention_qk_channels, config.encoder.cross_attention_qk_channels,
          config.encoder.self_attention_widening_factor) == (16, 16, 3)
  assert config.decoder.to_dict() == dict(num_heads=8, qk_channels=256, v_channels=24,
                                          widening_factor=1, dropout_rate=0.0,
                                          attention=dict(dropout_rate=0.0),
                                          activation="gelu_exact", use_query_residual=False)
  assert (model.decoder.num_heads, model.output_query.num_queries) == (8, MAX_POSITIONS)
  embedding = hf.perceiver.input_preprocessor.embeddings.weight.detach().numpy()
  np.testing.assert_array_equal(
      variables["params"]["input_adapter"]["embedding"]["embedding"], embedding)


def test_sequence_classification_matches_transformers_with_padding(classifier):
  hf, _, model, variables = classifier
  assert (model.decoder.output_channels, model.output_query.num_channels,
          model.decoder.activation, model.decoder.use_query_residual) == (3, 32, "gelu", True)
  ids, mask = _ids_and_mask(MAX_POSITIONS, 6)
  theirs = transformers_parity.run(hf, inputs=ids, attention_mask=mask)
  ours = _ours(model, variables, ids, mask)
  assert theirs.shape == (2, 3)
  transformers_parity.assert_parity(ours, theirs, TOLERANCE)
  assert not np.allclose(transformers_parity.run(hf, inputs=ids)[0], theirs[0], atol=1e-3)
  # What sits in the padded positions does not matter.
  junk = ids.copy()
  junk[0, 6:] = (junk[0, 6:] + 1) % 262
  np.testing.assert_allclose(_ours(model, variables, junk, mask), ours, rtol=1e-5, atol=1e-6)


def test_extra_weight_is_named_in_the_error(mlm, tmp_path):
  def add(weights):
    return dict(weights, **{"perceiver.extra.weight": np.ones((2,), np.float32)})
  with pytest.raises(ValueError, match=r"not placed.*perceiver\.extra\.weight"):
    convert.from_transformers(edited_copy(mlm[1], tmp_path / "edited", edit_weights=add))


def test_renamed_weight_is_named_in_the_error(mlm, tmp_path):
  def rename(weights):
    weights["embedding_decoder.logit_bias"] = weights.pop("embedding_decoder.bias")
    return weights
  with pytest.raises(ValueError, match=r"no weight 'embedding_decoder\.bias'"):
    convert.from_transformers(edited_copy(mlm[1], tmp_path / "edited", edit_weights=rename))


def test_unsupported_hidden_act_is_rejected(classifier, tmp_path):
  path = edited_copy(classifier[1], tmp_path / "edited",
                     edit_config=lambda c: dict(c, hidden_act="silu"))
  with pytest.raises(ValueError, match="hidden_act='silu'"):
    convert.from_transformers(path)


def test_num_labels_disagreeing_with_the_classifier_is_rejected(classifier, tmp_path):
  def two_labels(config):
    return dict(config, id2label={"0": "no", "1": "yes"}, label2id={"no": 0, "yes": 1})
  path = edited_copy(classifier[1], tmp_path / "edited", edit_config=two_labels)
  with pytest.raises(ValueError, match="id2label / num_labels name 2 labels.*3 outputs"):
    convert.from_transformers(path)


def test_max_position_embeddings_disagreeing_with_the_weights_is_rejected(mlm, tmp_path):
  path = edited_copy(mlm[1], tmp_path / "edited",
                     edit_config=lambda c: dict(c, max_position_embeddings=16))
  with pytest.raises(ValueError, match=r"position_embeddings\.weight' has shape \(12, 24\), "
                                       r"expected \(16, 24\)"):
    convert.from_transformers(path)
