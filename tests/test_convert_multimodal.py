"""transformers PerceiverForMultimodalAutoencoding -> perceiver_jax multimodal_autoencoding:
parity of every modality (subsampled as transformers' example, and every point), errors."""

import functools

import jax

import numpy as np
import pytest
import torch
from transformers import PerceiverConfig, PerceiverForMultimodalAutoencoding

import transformers_parity
from transformers_parity import edited_copy
from perceiver_jax import convert

# 2 frames of 8x8 (a 2x2 patch grid, but image_size=3 sets the Fourier max_resolution), 16
# audio samples in 4 patches of 4, 5 classes.
SETTINGS = dict(num_latents=4, d_latents=16, num_blocks=2, num_self_attends_per_block=1,
                num_self_attention_heads=2, num_cross_attention_heads=1, num_frames=2,
                image_size=3, audio_samples_per_frame=8, samples_per_patch=4,
                output_shape=[1, 2, 8, 8], output_num_channels=10,
                _label_trainable_num_channels=12, num_labels=5)
PIXELS, PATCHES = 2 * 8 * 8, 4
SHARP = "perceiver.decoder.decoder.decoding_cross_attention"


def random_model():
  """The transformers model with every weight random."""
  torch.manual_seed(0)
  hf_model = PerceiverForMultimodalAutoencoding(PerceiverConfig(**SETTINGS))
  with torch.no_grad():
    for name, param in hf_model.named_parameters():
      # Large decoder query/key weights make its attention depend on the queries' positions
      # (small ones average the latents whatever the query).
      sharp = name.startswith(SHARP) and (".self.query." in name or ".self.key." in name)
      param.copy_(torch.randn_like(param) * (2.0 if sharp else 0.2))
  return hf_model


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  """(transformers model, its checkpoint dir, our jitted apply, our variables)."""
  hf_model = random_model()
  path = transformers_parity.save(hf_model, tmp_path_factory.mktemp("multimodal"))
  model, variables = convert.from_transformers(path)
  return hf_model, path, jax.jit(functools.partial(model.apply, deterministic=True)), variables


@pytest.fixture(scope="module")
def inputs():
  rng = np.random.default_rng(1)
  return {"image": rng.normal(size=(2, 2, 8, 8, 3)).astype(np.float32),
          "audio": rng.normal(size=(2, 16, 1)).astype(np.float32),
          "label": rng.normal(size=(2, 5)).astype(np.float32)}


def _theirs(hf_model, inputs, points):
  torch_inputs = {"image": torch.from_numpy(inputs["image"].transpose(0, 1, 4, 2, 3)),
                  "audio": torch.from_numpy(inputs["audio"]),
                  "label": torch.from_numpy(inputs["label"])}
  torch_points = {"image": torch.from_numpy(points["image"]),
                  "audio": torch.from_numpy(points["audio"]), "label": None}
  with torch.no_grad():
    logits = hf_model(inputs=torch_inputs, subsampled_output_points=torch_points).logits
  return {m: logits[m].numpy() for m in logits}


def _assert_modalities_match(ours, theirs, points):
  assert sorted(ours) == sorted(theirs) == ["audio", "image", "label"]
  assert ours["image"].shape == (2, len(points["image"]), 3)
  assert ours["audio"].shape == (2, len(points["audio"]) * 4)
  assert ours["label"].shape == (2, 5)
  for modality in ours:
    transformers_parity.assert_parity(ours[modality], theirs[modality])


@pytest.mark.parametrize("points", [
    # transformers' example: the second of 2 chunks of the video and audio queries.
    {"image": np.arange(64, 128), "audio": np.arange(2, 4)},
    # As many points (one compile), in any order.
    {"image": np.random.default_rng(2).permutation(PIXELS)[:64], "audio": np.array([3, 0])},
], ids=["chunk", "scattered"])
def test_subsampled_outputs_match_transformers(converted, inputs, points):
  hf_model, _, apply, variables = converted
  ours = apply(variables, inputs, subsampled_points=points)
  _assert_modalities_match(ours, _theirs(hf_model, inputs, points), points)


def test_full_decoding_matches_transformers_at_every_point(converted, inputs):
  # transformers decodes every point only through subsampled_output_points = all indices.
  hf_model, _, apply, variables = converted
  points = {"image": np.arange(PIXELS), "audio": np.arange(PATCHES)}
  ours = dict(apply(variables, inputs))
  assert ours["image"].shape == (2, 2, 8, 8, 3)
  ours["image"] = ours["image"].reshape(2, PIXELS, 3)
  _assert_modalities_match(ours, _theirs(hf_model, inputs, points), points)


def test_extra_weight_is_named(converted, tmp_path):
  def add(weights):
    weights["perceiver.decoder.padding.depth"] = np.ones((1, 2), np.float32)
  with pytest.raises(ValueError, match=r"not placed.*perceiver\.decoder\.padding\.depth"):
    convert.from_transformers(edited_copy(converted[1], tmp_path / "copy", edit_weights=add))


def test_renamed_weight_is_named(converted, tmp_path):
  old = "perceiver.input_preprocessor.mask.label"
  def rename(weights):
    weights["perceiver.input_preprocessor.masks.label"] = weights.pop(old)
  with pytest.raises(ValueError, match=f"no weight '{old}'.*masks.label"):
    convert.from_transformers(edited_copy(converted[1], tmp_path / "copy", edit_weights=rename))


@pytest.mark.parametrize("update, message", [
    ({"output_shape": [1, 3, 8, 8]}, "decodes 3 frames but num_frames=2"),
    ({"output_shape": [1, 2, 8, 12]}, "square frames"),
    ({"output_shape": [2, 8, 8]}, "output_shape=.*must be"),
    ({"image_size": [3, 3]}, "image_size=.*positive int"),
    ({"samples_per_patch": 5}, "multiple of samples_per_patch=5"),
    ({"hidden_act": "silu"}, "hidden_act='silu'"),
])
def test_unsupported_config_is_rejected(converted, tmp_path, update, message):
  with pytest.raises(ValueError, match=message):
    convert.from_transformers(edited_copy(converted[1], tmp_path / "copy",
                                          edit_config=lambda c: c.update(update)))
