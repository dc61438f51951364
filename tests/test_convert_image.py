"""The three transformers ImageNet Perceiver heads convert to image_classification models whose
logits match theirs on random images; bad checkpoints and config.json values raise."""


import numpy as np
import pytest
import torch
from transformers import (PerceiverConfig, PerceiverForImageClassificationConvProcessing,
                          PerceiverForImageClassificationFourier,
                          PerceiverForImageClassificationLearned)

import transformers_parity
from transformers_parity import edited_copy
from perceiver_jax import convert

# Small heads that differ in every setting the converter reads: heads, qk/v widths, widening
# factors, query residual, depth. The images are [batch, H, W, 3].
COMMON = dict(num_latents=4, d_latents=16, num_self_attention_heads=2, num_labels=5,
              attention_probs_dropout_prob=0.0)
HEADS = {
    "fourier": (PerceiverForImageClassificationFourier, (6, 5), dict(
        num_blocks=2, num_self_attends_per_block=1, num_cross_attention_heads=1,
        cross_attention_widening_factor=2, image_size=6)),
    "learned": (PerceiverForImageClassificationLearned, (6, 6), dict(
        num_blocks=1, num_self_attends_per_block=2, num_cross_attention_heads=1, qk_channels=8,
        v_channels=16, self_attention_widening_factor=2, use_query_residual=False,
        image_size=6)),
    "conv": (PerceiverForImageClassificationConvProcessing, (12, 9), dict(
        num_blocks=2, num_self_attends_per_block=1, num_cross_attention_heads=2, image_size=12)),
}


def _random_head(variant):
  """The transformers head of `variant` with every weight and BatchNorm statistic random."""
  cls, _, settings = HEADS[variant]
  torch.manual_seed(0)
  model = cls(PerceiverConfig(**COMMON, **settings))
  with torch.no_grad():
    for name, param in model.named_parameters():
      param.normal_(0.0, 0.2)
      if "layernorm" in name and name.endswith("weight"):
        param.add_(1.0)  # LayerNorm scales near 1, so the MLPs see inputs of order 1.
      elif name.endswith("dense1.weight"):
        param.mul_(5.0)  # Pre-activations of a few units, where exact and tanh GELU differ.
    for name, buffer in model.named_buffers():
      if name.endswith("running_mean"):
        buffer.normal_(0.0, 0.5)
      elif name.endswith("running_var"):
        buffer.uniform_(0.5, 1.5)
  return model.eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  """{variant: (transformers head, its checkpoint directory)}."""
  return {v: (m, transformers_parity.save(m, tmp_path_factory.mktemp(v)))
          for v, m in ((v, _random_head(v)) for v in HEADS)}


@pytest.mark.parametrize("variant", list(HEADS))
def test_logits_match_transformers(saved, variant):
  hf_model, path = saved[variant]
  model, variables = convert.from_transformers(path)
  images = np.random.default_rng(1).normal(size=(2,) + HEADS[variant][1] + (3,))
  images = images.astype(np.float32)
  ours = model.apply(variables, images, deterministic=True)
  theirs = transformers_parity.run(hf_model,
                                   pixel_values=np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
  assert theirs.shape == (2, 5)
  # 2e-5, tighter than the 1e-4 goal: the heads agree to ~2e-6 and tanh GELU in place of the
  # exact one is off by ~1e-4.
  transformers_parity.assert_parity(ours, theirs, tolerance=2e-5)


def test_converted_configs_follow_the_heads(saved):
  fourier, _ = convert.convert(saved["fourier"][1])
  assert fourier.input_adapter.max_resolution == (224, 224)
  assert fourier.encoder.cross_attention_widening_factor == 2
  learned, variables = convert.convert(saved["learned"][1])
  assert learned.decoder.use_query_residual and not learned.encoder.use_query_residual
  assert learned.decoder.activation == learned.encoder.activation == "gelu_exact"
  assert learned.encoder.cross_attention_qk_channels == 8
  assert learned.input_adapter.project_pos_dim == 256
  assert variables["params"]["input_adapter"]["position_encoding"]["embeddings"].shape == (36, 256)
  conv, variables = convert.convert(saved["conv"][1])
  assert conv.input_adapter.stem_padding == "transformers"
  assert conv.image_shape == (12, 12, 3) and conv.encoder.num_cross_attention_heads == 2
  np.testing.assert_array_equal(
      variables["batch_stats"]["input_adapter"]["batch_norm"]["var"],
      saved["conv"][0].perceiver.input_preprocessor.convnet.batchnorm.running_var.numpy())


def test_an_extra_weight_is_named(saved, tmp_path):
  def add(weights):
    weights["perceiver.input_preprocessor.extra.weight"] = np.ones(3, np.float32)
  path = edited_copy(saved["conv"][1], tmp_path / "conv", edit_weights=add)
  with pytest.raises(ValueError, match=r"not placed.*input_preprocessor\.extra\.weight"):
    convert.from_transformers(path)


def test_a_renamed_weight_is_named(saved, tmp_path):
  def rename(weights):
    name = "perceiver.input_preprocessor.convnet_1x1.bias"
    weights["perceiver.input_preprocessor.conv_1x1.bias"] = weights.pop(name)
  path = edited_copy(saved["learned"][1], tmp_path / "learned", edit_weights=rename)
  with pytest.raises(ValueError, match=r"no weight 'perceiver\.input_preprocessor\.convnet_1x1"):
    convert.from_transformers(path)


def test_image_size_must_fit_the_learned_positions(saved, tmp_path):
  path = edited_copy(saved["learned"][1], tmp_path / "learned",
                     edit_config=lambda c: c.update(image_size=5))
  with pytest.raises(ValueError, match="image_size=5"):
    convert.from_transformers(path)


def test_unsupported_activation_is_rejected(saved, tmp_path):
  path = edited_copy(saved["fourier"][1], tmp_path / "fourier",
                     edit_config=lambda c: c.update(hidden_act="silu"))
  with pytest.raises(ValueError, match="hidden_act='silu'"):
    convert.from_transformers(path)
