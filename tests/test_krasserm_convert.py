"""convert.from_krasserm: krasserm/perceiver-io's Perceiver IO models load with numerical parity.

Small krasserm models (perceiver-io 0.11, every parameter redrawn so no LayerNorm or bias keeps
its default) are saved by krasserm's own Hugging Face wrappers (`save_pretrained`: config.json
with model_type and model_config, model.safetensors), converted, and run on the same inputs on
both sides; `python -m perceiver_jax.convert --krasserm` writes a pretrained directory that
loads and fine-tunes; malformed checkpoints raise errors naming the problem.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch

import krasserm_peer  # pylint: disable=unused-import  # Before `perceiver`.
import transformers_parity
from perceiver.model.core.config import ClassificationDecoderConfig
from perceiver.model.text.classifier.backend import TextClassifierConfig
from perceiver.model.text.classifier.huggingface import (PerceiverTextClassifier,
                                                         PerceiverTextClassifierConfig)
from perceiver.model.text.mlm.backend import (MaskedLanguageModelConfig, TextDecoderConfig,
                                              TextEncoderConfig)
from perceiver.model.text.mlm.huggingface import (PerceiverMaskedLanguageModel,
                                                  PerceiverMaskedLanguageModelConfig)
from perceiver.model.vision.image_classifier.backend import (ImageClassifierConfig,
                                                             ImageEncoderConfig)
from perceiver.model.vision.image_classifier.huggingface import (
    PerceiverImageClassifier, PerceiverImageClassifierConfig)
from transformers_parity import edited_copy
from perceiver_jax import convert, load_pretrained, tasks
from perceiver_jax.convert import pretrained

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB, MAX_SEQ_LEN = 30, 8
IMAGE_SHAPE = (4, 5, 3)  # Not square, so a swapped height and width shows.


def _saved(model, directory) -> str:
  """`model` (a krasserm HF wrapper) with every parameter drawn from N(0, 0.2^2), saved by
  its save_pretrained into `directory`."""
  with torch.no_grad():
    for param in model.parameters():
      param.copy_(torch.randn_like(param) * 0.2)
  model.eval().save_pretrained(str(directory))
  return str(directory)


def _mlm_config(**decoder):
  """Distinct widths everywhere: cross-attention qk 8 != v 16, widening 2 / 3, two
  cross-attentions and two blocks of two layers, none shared (krasserm's cross_attn_n and
  self_attn_n), no decoder query residual, 10 decoder queries for 8 input positions."""
  encoder = TextEncoderConfig(
      vocab_size=VOCAB, max_seq_len=MAX_SEQ_LEN, num_input_channels=8,
      num_cross_attention_heads=2, num_cross_attention_qk_channels=8,
      num_cross_attention_v_channels=16, num_cross_attention_layers=2,
      cross_attention_widening_factor=2, num_self_attention_heads=2,
      num_self_attention_qk_channels=8, num_self_attention_v_channels=16,
      num_self_attention_layers_per_block=2, num_self_attention_blocks=2,
      first_self_attention_block_shared=False, self_attention_widening_factor=3)
  decoder = TextDecoderConfig(**dict(dict(
      vocab_size=VOCAB, max_seq_len=10, num_cross_attention_heads=2,
      num_cross_attention_qk_channels=8, cross_attention_widening_factor=2,
      cross_attention_residual=False), **decoder))
  return MaskedLanguageModelConfig(encoder, decoder, num_latents=3, num_latent_channels=16)


def _converted(model, path):
  """(krasserm model, checkpoint directory, converted task config, variables)."""
  return (model, path) + convert.convert_krasserm(path)


def _ours(config, variables, inputs, pad_mask=None):
  """Our outputs, jitted (one compile beats op-by-op dispatch on CPU)."""
  model = tasks.build(config)
  return jax.jit(lambda v, x, m: model.apply(v, x, pad_mask=m))(variables, inputs, pad_mask)


@pytest.fixture(scope="module")
def mlm(tmp_path_factory):
  """A krasserm MaskedLanguageModel wrapper, as `_converted`."""
  torch.manual_seed(0)
  model = PerceiverMaskedLanguageModel(PerceiverMaskedLanguageModelConfig(_mlm_config()))
  return _converted(model, _saved(model, tmp_path_factory.mktemp("mlm")))


@pytest.fixture(scope="module")
def untied_mlm(tmp_path_factory):
  """A MaskedLanguageModel whose 12-channel queries decode through its own output Linear
  (TokenOutputAdapter), as `_converted`."""
  torch.manual_seed(3)
  model = PerceiverMaskedLanguageModel(PerceiverMaskedLanguageModelConfig(
      _mlm_config(num_output_query_channels=12)))
  return _converted(model, _saved(model, tmp_path_factory.mktemp("untied_mlm")))


@pytest.fixture(scope="module")
def text_classifier(tmp_path_factory):
  """A TextClassifier whose first cross-attention is shared with the second (krasserm's
  cross_attn_1 only) and whose two blocks share one set of layers; 3 classes."""
  torch.manual_seed(1)
  encoder = TextEncoderConfig(
      vocab_size=VOCAB, max_seq_len=MAX_SEQ_LEN, num_input_channels=8,
      num_cross_attention_heads=1, num_cross_attention_layers=2,
      first_cross_attention_layer_shared=True, num_self_attention_heads=4,
      num_self_attention_layers_per_block=1, num_self_attention_blocks=2)
  decoder = ClassificationDecoderConfig(num_output_query_channels=12, num_classes=3,
                                        num_cross_attention_heads=2)
  model = PerceiverTextClassifier(PerceiverTextClassifierConfig(TextClassifierConfig(
      encoder, decoder, num_latents=4, num_latent_channels=16)))
  return _converted(model, _saved(model, tmp_path_factory.mktemp("text_classifier")))


@pytest.fixture(scope="module")
def image_classifier(tmp_path_factory):
  """An ImageClassifier of 4x5 RGB images, 3 Fourier bands, 5 classes."""
  torch.manual_seed(2)
  encoder = ImageEncoderConfig(
      image_shape=IMAGE_SHAPE, num_frequency_bands=3, num_cross_attention_heads=1,
      num_self_attention_heads=2, num_self_attention_layers_per_block=2,
      cross_attention_widening_factor=2)
  decoder = ClassificationDecoderConfig(num_output_query_channels=12, num_classes=5,
                                        num_cross_attention_heads=1)
  model = PerceiverImageClassifier(PerceiverImageClassifierConfig(ImageClassifierConfig(
      encoder, decoder, num_latents=3, num_latent_channels=16)))
  return _converted(model, _saved(model, tmp_path_factory.mktemp("image_classifier")))


def _ids_and_mask(length, real_in_row_0):
  """Random ids [2, length] and an attention mask (1 = token) padding row 0 after
  `real_in_row_0` tokens."""
  ids = np.random.default_rng(length).integers(0, VOCAB, (2, length)).astype(np.int64)
  mask = np.ones((2, length), np.int64)
  mask[0, real_in_row_0:] = 0
  return ids, mask


@pytest.mark.parametrize("length, real_in_row_0", [(MAX_SEQ_LEN, 5), (5, 2)])
def test_masked_language_model_matches_krasserm_with_padding(mlm, length, real_in_row_0):
  """Ours gives logits at all 8 positions; krasserm's are the first `length` of them."""
  model, _, config, variables = mlm
  ids, mask = _ids_and_mask(length, real_in_row_0)
  ours = _ours(config, variables, ids, mask.astype(bool))
  assert ours.shape == (2, MAX_SEQ_LEN, VOCAB)
  theirs = transformers_parity.run(model, input_ids=ids, attention_mask=mask)
  transformers_parity.assert_parity(ours[:, :length], theirs)
  # The mask matters: row 0 attends to only its first tokens.
  unmasked = transformers_parity.run(model, input_ids=ids)
  assert np.abs(unmasked[0] - theirs[0]).max() > 1e-3


def test_untied_masked_language_model_matches_krasserm(untied_mlm):
  model, _, config, variables = untied_mlm
  assert config.output_query_channels == 12
  assert "embedding" not in variables["params"]["output_adapter"]
  ids, mask = _ids_and_mask(MAX_SEQ_LEN, 6)
  ours = _ours(config, variables, ids, mask.astype(bool))
  transformers_parity.assert_parity(
      ours, transformers_parity.run(model, input_ids=ids, attention_mask=mask))


@pytest.mark.parametrize("value", [0, 2.5, "12"])
def test_a_bad_output_query_channels_is_named(value):
  config = tasks.tiny_config("masked_language_modeling")
  config.output_query_channels = value
  with pytest.raises(ValueError, match="config.output_query_channels must be a positive int"):
    tasks.build(config)


def test_mlm_config_records_krasserm_settings(mlm):
  _, _, config, variables = mlm
  assert config.task == "masked_language_modeling"
  assert (config.max_seq_len, config.vocab_size) == (MAX_SEQ_LEN, VOCAB)
  assert config.encoder.activation == config.decoder.activation == "gelu_exact"
  assert not config.decoder.use_query_residual
  assert (config.encoder.cross_attention_qk_channels,
          config.encoder.cross_attention_v_channels) == (8, 16)
  assert config.output_query_channels is None  # Logits tied to the input embedding.
  # krasserm's 10 decoder queries, of which the 8 of the input positions are kept.
  assert variables["params"]["output_query"]["queries"]["embeddings"].shape == (8, 8)
  assert {"cross_attention_first", "cross_attention_shared", "self_attention_block_first",
          "self_attention_block_shared"} <= set(variables["params"]["encoder"])


def test_text_classifier_matches_krasserm(text_classifier):
  model, _, config, variables = text_classifier
  ids, mask = _ids_and_mask(MAX_SEQ_LEN, 3)
  ours = _ours(config, variables, ids, mask.astype(bool))
  transformers_parity.assert_parity(ours, transformers_parity.run(model, input_ids=ids,
                                                                  attention_mask=mask))
  assert set(variables["params"]["encoder"]) == {"latents", "cross_attention_shared",
                                                 "self_attention_block_shared"}


def test_image_classifier_matches_krasserm(image_classifier):
  model, _, config, variables = image_classifier
  assert config.task == "image_classification" and config.variant == "fourier"
  assert tuple(config.image_shape) == IMAGE_SHAPE
  images = np.random.default_rng(0).normal(size=(2,) + IMAGE_SHAPE).astype(np.float32)
  ours = _ours(config, variables, images)
  transformers_parity.assert_parity(ours, transformers_parity.run(model, inputs=images))


def test_a_fourier_encoding_other_than_ours_is_refused(image_classifier, tmp_path):
  def transposed(weights):
    name = "backend_model.0.input_adapter.position_encoding.position_encoding"
    encoding = weights[name].reshape(4, 5, -1)
    weights[name] = np.ascontiguousarray(encoding[::-1]).reshape(20, -1)
  path = edited_copy(image_classifier[1], tmp_path / "edited", edit_weights=transposed)
  with pytest.raises(ValueError, match="Fourier position encoding differs from perceiver_jax's"):
    convert.convert_krasserm(path)


def test_pytorch_model_bin_converts_like_safetensors(mlm, tmp_path):
  model, path, _, expected = mlm
  os.makedirs(tmp_path / "bin")
  with open(os.path.join(path, "config.json")) as f:
    config = f.read()
  with open(tmp_path / "bin" / "config.json", "w") as f:
    f.write(config)
  torch.save(model.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
  _, variables = convert.convert_krasserm(str(tmp_path / "bin"))
  jax.tree_util.tree_map(np.testing.assert_array_equal, variables, expected)


def test_cli_writes_a_pretrained_model_that_loads_and_fine_tunes(mlm, tmp_path):
  _, path, config, expected = mlm
  output = str(tmp_path / "converted")
  result = subprocess.run(
      [sys.executable, "-m", "perceiver_jax.convert", "--krasserm", path, "--output", output],
      cwd=REPO, capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "masked_language_modeling model" in result.stdout
  model, variables = load_pretrained(output)
  converted_model, converted = convert.from_krasserm(path)
  assert type(model) is type(converted_model)
  assert pretrained.load_model_config(output).to_dict() == config.to_dict()
  jax.tree_util.tree_map(np.testing.assert_array_equal, variables, converted)
  jax.tree_util.tree_map(np.testing.assert_array_equal, variables, expected)
  # What `--config.init_from=OUT` does: a sequence classifier (of the MLM's vocabulary and
  # length) takes the MLM's encoder and embeddings.
  run_config = tasks.tiny_config("sequence_classification")
  run_config.vocab_size, run_config.max_seq_len = VOCAB, MAX_SEQ_LEN
  merged, modules = pretrained.inherit_model_config(run_config,
                                                    pretrained.load_model_config(output))
  shapes = jax.eval_shape(tasks.build(merged).init, jax.random.PRNGKey(0),
                          tasks.example_inputs(merged, 1))
  fresh = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes)
  loaded, report = pretrained.overlay(fresh, variables, modules)
  assert {p.split("/")[1] for p in report["loaded"]} == {"encoder", "input_adapter"}
  assert not report["mismatched"]
  np.testing.assert_array_equal(loaded["params"]["encoder"]["latents"],
                                variables["params"]["encoder"]["latents"])


def test_cli_takes_exactly_one_checkpoint(mlm, tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "perceiver_jax.convert", "--krasserm", mlm[1], "--transformers",
       mlm[1], "--output", str(tmp_path / "out")],
      cwd=REPO, capture_output=True, text=True, check=False)
  assert result.returncode != 0
  assert "Exactly one of (krasserm, transformers)" in result.stderr.replace(
      "(transformers, krasserm)", "(krasserm, transformers)")
  assert not os.path.exists(tmp_path / "out")


def _edit_model_config(edit):
  def edit_config(config):
    edit(config["model_config"])
  return edit_config


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["encoder"].update(rotary=True),
     r"model_config.encoder has \['rotary'\], which the converter does not know"),
    (lambda c: c.update(num_heads=4),
     r"model_config has \['num_heads'\], which the converter does not know"),
    (lambda c: c["decoder"].update(num_output_query_channels=8),
     r"has no weight 'backend_model.1.output_adapter.linear.weight'"),
    (lambda c: c["decoder"].update(max_seq_len=6),
     r"decoder.max_seq_len=6 is below model_config.encoder.max_seq_len=8"),
    (lambda c: c["decoder"].update(vocab_size=31),
     r"decoder.vocab_size=31 differs from model_config.encoder.vocab_size=30"),
    (lambda c: c["encoder"].update(num_self_attention_layers_per_block=1),
     r"weights were not placed in the perceiver_jax model: .*self_attn_1.1.0"),
    (lambda c: c["encoder"].update(cross_attention_widening_factor=3),
     r"do not fit the masked_language_modeling model: .*mlp/Dense_0/kernel has shape"),
])
def test_configs_we_cannot_honour_are_named(mlm, tmp_path, edit, message):
  path = edited_copy(mlm[1], tmp_path / "edited", edit_config=_edit_model_config(edit))
  with pytest.raises(ValueError, match=message):
    convert.convert_krasserm(path)


def test_classifier_with_several_output_queries_is_refused(text_classifier, tmp_path):
  path = edited_copy(text_classifier[1], tmp_path / "edited", edit_config=_edit_model_config(
      lambda c: c["decoder"].update(num_output_queries=2)))
  with pytest.raises(ValueError, match="num_output_queries=2: krasserm then returns logits"):
    convert.convert_krasserm(path)


def test_unknown_model_types_list_the_known_ones(mlm, tmp_path):
  def edit(config):
    config["model_type"] = "perceiver-io-optical-flow"
  path = edited_copy(mlm[1], tmp_path / "edited", edit_config=edit)
  with pytest.raises(ValueError, match="model_type 'perceiver-io-optical-flow'; perceiver_jax "
                                       r"converts the krasserm/perceiver-io models \[.*"
                                       "'perceiver-io-image-classifier', "
                                       "'perceiver-io-masked-language-model', "
                                       r"'perceiver-io-text-classifier'.*\]\.$"):
    convert.convert_krasserm(path)


def test_an_unplaced_weight_is_named(mlm, tmp_path):
  def edit(weights):
    weights["backend_model.1.extra.weight"] = np.ones(3, np.float32)
  path = edited_copy(mlm[1], tmp_path / "edited", edit_weights=edit)
  with pytest.raises(ValueError, match=r"1 weights were not placed .*"
                                       r"\['backend_model.1.extra.weight'\]"):
    convert.convert_krasserm(path)


def test_a_transformers_checkpoint_is_not_taken_for_a_krasserm_one(mlm, tmp_path):
  def edit(config):
    del config["model_config"]
  path = edited_copy(mlm[1], tmp_path / "edited", edit_config=edit)
  with pytest.raises(ValueError, match="has no 'model_config'"):
    convert.convert_krasserm(path)
  with open(os.path.join(path, "config.json")) as f:
    assert json.load(f)["model_type"] == "perceiver-io-masked-language-model"


def test_the_transformers_converter_points_krasserm_checkpoints_to_their_converter(mlm):
  with pytest.raises(ValueError, match="architecture 'PerceiverMaskedLanguageModel'; .*it holds "
                                       "a krasserm/perceiver-io model_config: convert it with "
                                       "convert_krasserm / --krasserm"):
    convert.convert(mlm[1])
