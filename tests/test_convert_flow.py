"""transformers PerceiverForOpticalFlow -> perceiver_jax optical_flow: parity and errors."""


import numpy as np
import pytest
import torch
from transformers import PerceiverConfig, PerceiverForOpticalFlow

import transformers_parity
from transformers_parity import edited_copy
from perceiver_jax import convert

SMALL = dict(num_latents=4, d_latents=16, num_blocks=1, num_self_attends_per_block=2,
             num_self_attention_heads=2, num_cross_attention_heads=1, train_size=[4, 6])
# Encoder qk != v channels, widening 2, two blocks, tanh GELU, no encoder query residual.
VARIED = dict(num_latents=6, d_latents=16, num_blocks=2, num_self_attends_per_block=1,
              num_self_attention_heads=4, num_cross_attention_heads=2, qk_channels=8,
              v_channels=16, self_attention_widening_factor=2, cross_attention_widening_factor=2,
              hidden_act="gelu_new", use_query_residual=False, train_size=[5, 3])


def _checkpoint(directory, seed, **settings):
  """A PerceiverForOpticalFlow with every weight random, saved to `directory`."""
  torch.manual_seed(seed)
  model = PerceiverForOpticalFlow(PerceiverConfig(**settings))
  with torch.no_grad():
    for param in model.parameters():
      param.copy_(torch.randn_like(param) * 0.2)
  return model, transformers_parity.save(model, directory)


def _transformers_patches(frames):
  """Frames [b, 2, H, W, 3] -> transformers' flow inputs [b, 2, 27, H, W]: each pixel's 3x3
  neighbourhood (zero padded), channel (dy * 3 + dx) * 3 + rgb, as the published Perceiver IO
  flow pipeline (tf.image.extract_patches / the colab's unfold) orders it."""
  batch, frame_count, height, width, _ = frames.shape
  padded = np.pad(frames, ((0, 0), (0, 0), (1, 1), (1, 1), (0, 0)))
  patches = np.zeros((batch, frame_count, 27, height, width), np.float32)
  for dy in range(3):
    for dx in range(3):
      for rgb in range(3):
        patches[:, :, (dy * 3 + dx) * 3 + rgb] = padded[:, :, dy:dy + height, dx:dx + width, rgb]
  return patches


@pytest.mark.parametrize("settings", [SMALL, VARIED], ids=["small", "varied"])
def test_matches_transformers(tmp_path, settings):
  hf_model, path = _checkpoint(tmp_path, 0, **settings)
  model, variables = convert.from_transformers(path)
  frames = np.random.default_rng(1).normal(size=(2, 2, *settings["train_size"], 3))
  frames = frames.astype(np.float32)
  theirs = transformers_parity.run(hf_model, inputs=_transformers_patches(frames))
  ours = model.apply(variables, frames, deterministic=True)
  assert ours.shape == (2, *settings["train_size"], 2)
  transformers_parity.assert_parity(ours, theirs)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  return _checkpoint(tmp_path_factory.mktemp("flow"), 2, **SMALL)[1]


def test_extra_weight_is_named(saved, tmp_path):
  def add(weights):
    weights["perceiver.decoder.extra.weight"] = np.ones((2,), np.float32)
  with pytest.raises(ValueError, match=r"not placed.*perceiver\.decoder\.extra\.weight"):
    convert.from_transformers(edited_copy(saved, tmp_path / "copy", edit_weights=add))


def test_renamed_weight_is_named(saved, tmp_path):
  old = "perceiver.decoder.decoder.final_layer.weight"
  def rename(weights):
    weights["perceiver.decoder.decoder.final_projection.weight"] = weights.pop(old)
  with pytest.raises(ValueError, match=f"no weight '{old}'.*final_projection"):
    convert.from_transformers(edited_copy(saved, tmp_path / "copy", edit_weights=rename))


@pytest.mark.parametrize("update, message", [
    ({"train_size": [4, 6, 2]}, "train_size=.*two positive ints"),
    ({"train_size": [0, 6]}, "train_size=.*two positive ints"),
    ({"hidden_act": "silu"}, "hidden_act='silu'"),
])
def test_unsupported_config_is_rejected(saved, tmp_path, update, message):
  with pytest.raises(ValueError, match=message):
    convert.from_transformers(edited_copy(saved, tmp_path / "copy",
                                          edit_config=lambda c: c.update(update)))
