"""krasserm's Perceiver AR (causal LM, symbolic audio) -> PerceiverAR: equal logits, errors."""

import krasserm_peer  # pylint: disable=unused-import  # Before `perceiver`.

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from perceiver.model.audio.symbolic.backend import SymbolicAudioModel, SymbolicAudioModelConfig
from perceiver.model.text.clm.backend import CausalLanguageModel, CausalLanguageModelConfig
from perceiver.model.text.clm.huggingface import (PerceiverCausalLanguageModel,
                                                  PerceiverCausalLanguageModelConfig)

from perceiver_jax import convert as convert_package, load_pretrained, tasks
from perceiver_jax.convert import krasserm_ar
from perceiver_jax.convert.weights import WeightReader
from transformers_parity import assert_parity

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = dict(vocab_size=13, max_seq_len=12, max_latents=4, num_channels=16, num_heads=2,
             num_self_attention_layers=2, cross_attention_widening_factor=2,
             self_attention_widening_factor=2)


def _krasserm(config_cls, model_cls, seed=0, **options):
  """A tiny krasserm model in eval mode with every parameter drawn away from its init."""
  model = model_cls(config_cls(**SIZES, **options)).eval()
  rng = np.random.default_rng(seed)
  with torch.no_grad():
    for name, param in model.named_parameters():
      noise = torch.from_numpy(rng.normal(size=tuple(param.shape)).astype(np.float32))
      norm_scale = param.ndim == 1 and name.endswith("weight")
      param.copy_(1 + 0.2 * noise if norm_scale else 0.3 * noise)
  return model


def _convert(model, model_type="perceiver-ar-causal-language-model"):
  """(PerceiverAR, variables) converted from `model`'s save_pretrained-style state dict."""
  state = {f"backend_model.{k}": v.numpy() for k, v in model.state_dict().items()}
  reader = WeightReader(state, "test")
  config, variables = krasserm_ar.CONVERTERS[model_type](
      dict(model.config.__dict__), reader)
  reader.check_all_used()
  ours = tasks.build(config)
  shapes = jax.eval_shape(ours.init, jax.random.PRNGKey(0), tasks.example_inputs(config))
  assert jax.tree_util.tree_structure(shapes) == jax.tree_util.tree_structure(variables)
  return ours, jax.tree_util.tree_map(jnp.asarray, variables)


def _compare(model, ours, variables, ids, pad_mask):
  """Our logits equal krasserm's with prefix_len = n - max_latents (pad_mask: True = token)."""
  with torch.no_grad():
    theirs = model(torch.from_numpy(ids).long(), prefix_len=ids.shape[1] - SIZES["max_latents"],
                   pad_mask=torch.from_numpy(~pad_mask)).logits.numpy()
  assert_parity(ours.apply(variables, jnp.asarray(ids), jnp.asarray(pad_mask)), theirs)


@pytest.mark.parametrize("abs_pos_emb,output_norm,output_bias,rotary_layers", [
    (True, False, True, 1), (False, True, False, -1), (True, True, False, -1),
    (False, False, True, 1)])
def test_causal_language_model_logits_equal_krasserms(abs_pos_emb, output_norm, output_bias,
                                                      rotary_layers):
  model = _krasserm(CausalLanguageModelConfig, CausalLanguageModel, abs_pos_emb=abs_pos_emb,
                    output_norm=output_norm, output_bias=output_bias,
                    num_self_attention_rotary_layers=rotary_layers)
  ours, variables = _convert(model)
  ids = np.random.default_rng(1).integers(0, 13, (2, 10))
  pad_mask = np.ones((2, 10), bool)
  pad_mask[1, :3] = False  # Row 1 is left-padded within the prefix (6 positions).
  _compare(model, ours, variables, ids, pad_mask)


def test_symbolic_audio_model_logits_equal_krasserms():
  model = _krasserm(SymbolicAudioModelConfig, SymbolicAudioModel, seed=2, output_norm=True)
  ours, variables = _convert(model, "perceiver-ar-symbolic-audio-model")
  ids = np.random.default_rng(3).integers(0, 13, (1, 12))
  _compare(model, ours, variables, ids, np.ones((1, 12), bool))


def test_unknown_fields_unhonoured_values_and_leftover_weights_are_named():
  model = _krasserm(CausalLanguageModelConfig, CausalLanguageModel)
  state = {f"backend_model.{k}": v.numpy() for k, v in model.state_dict().items()}
  config = dict(model.config.__dict__)
  convert = krasserm_ar.CONVERTERS["perceiver-ar-causal-language-model"]
  with pytest.raises(ValueError, match="num_rotary_heads"):
    convert(dict(config, num_rotary_heads=2), WeightReader(state, "test"))
  with pytest.raises(ValueError, match="cross_attention_widening_factor=3"):
    convert(dict(config, cross_attention_widening_factor=3), WeightReader(state, "test"))
  reader = WeightReader(dict(state, **{"backend_model.extra.weight": np.zeros(2)}), "test")
  convert(config, reader)
  with pytest.raises(ValueError, match="backend_model.extra.weight"):
    reader.check_all_used()


def test_a_saved_causal_language_model_converts_through_from_krasserm_and_the_cli(tmp_path):
  """The directory krasserm's Hugging Face wrapper writes -> from_krasserm and
  `python -m perceiver_jax.convert --krasserm` (then load_pretrained) give krasserm's logits."""
  backend = _krasserm(CausalLanguageModelConfig, CausalLanguageModel, seed=4, output_norm=True)
  wrapper = PerceiverCausalLanguageModel(
      PerceiverCausalLanguageModelConfig(backend.config), backend_model=backend).eval()
  path = str(tmp_path / "krasserm")
  wrapper.save_pretrained(path)
  ids = np.random.default_rng(5).integers(0, 13, (2, 12))
  pad_mask = np.ones((2, 12), bool)
  model, variables = convert_package.from_krasserm(path)
  _compare(backend, model, variables, ids, pad_mask)
  output = str(tmp_path / "converted")
  result = subprocess.run([sys.executable, "-m", "perceiver_jax.convert", "--krasserm", path,
                           "--output", output], cwd=REPO, capture_output=True, text=True,
                          check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  loaded_model, loaded = load_pretrained(output)
  assert loaded_model == model
  jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, variables)
