"""MultimodalAdapter pads each modality with its learned vector and concatenates them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver_jax import PerceiverDecoder, PerceiverEncoder, PerceiverIO, TrainableQuery
from perceiver_jax.io.adapters import (AudioAdapter, MultimodalAdapter, OneHotAdapter, TextAdapter,
                                       VideoAdapter, split_modalities)
from perceiver_jax.nn.model_stats import count_params, param_count
from random_params import random_data

ADAPTERS = {
    "video": VideoAdapter(temporal_downsample=2, spatial_downsample=2, num_frequency_bands=2),
    "audio": AudioAdapter(samples_per_patch=4, num_frequency_bands=3),
    "label": TextAdapter(num_channels=5, vocab_size=7, max_seq_len=1),
}
INPUTS = {"video": random_data(0, 2, 2, 4, 4, 3), "audio": random_data(1, 2, 16),
          "label": jnp.array([[3], [6]])}


def _adapter_outputs():
  outputs = {}
  for name, adapter in ADAPTERS.items():
    variables = jax.jit(adapter.init)(jax.random.PRNGKey(1), INPUTS[name])
    outputs[name] = (adapter.apply(variables, INPUTS[name]), variables)
  return outputs


def test_modalities_padded_with_their_vectors_and_concatenated_in_sorted_order():
  adapter = MultimodalAdapter(ADAPTERS, min_padding_size=3)
  variables = jax.jit(adapter.init)(jax.random.PRNGKey(0), INPUTS)
  params = variables["params"]
  separate = _adapter_outputs()
  # Give the sub-adapters the parameters used for the separate references.
  params = dict(params, adapters_label=separate["label"][1]["params"])
  out = adapter.apply({"params": params}, INPUTS)

  widths = {name: x.shape[-1] for name, (x, _) in separate.items()}
  channels = max(widths.values()) + 3
  sizes = {name: x.shape[1] for name, (x, _) in separate.items()}
  assert out.shape == (2, sum(sizes.values()), channels)
  parts = split_modalities(out, sizes)
  assert parts.keys() == sizes.keys()
  for name, part in parts.items():
    x = np.asarray(separate[name][0])
    np.testing.assert_allclose(part[..., :widths[name]], x, rtol=1e-6, atol=1e-6)
    padding = np.asarray(params[f"{name}_padding"])
    assert padding.shape == (channels - widths[name],)
    np.testing.assert_array_equal(part[..., widths[name]:],
                                  np.broadcast_to(padding, x.shape[:2] + padding.shape))
  # Sorted order: audio, label, video.
  np.testing.assert_allclose(out[:, :sizes["audio"], :widths["audio"]], separate["audio"][0], atol=1e-6)


def test_param_count_and_perceiver_io_end_to_end():
  adapter = MultimodalAdapter(ADAPTERS)
  model = PerceiverIO(
      PerceiverEncoder(num_latents=4, num_latent_channels=8, num_self_attention_blocks=1,
                       num_self_attention_layers_per_block=1, num_self_attention_heads=2,
                       cross_attention_qk_channels=8),
      TrainableQuery(3, 6), PerceiverDecoder(output_channels=2), input_adapter=adapter)
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), INPUTS)
  shapes = {name: x.shape[1:] for name, x in INPUTS.items()}
  assert param_count(model, shapes) == count_params(variables)
  grads = jax.jit(jax.grad(lambda p: model.apply({"params": p}, INPUTS).sum()))(
      variables["params"])
  padding_grads = [g for k, g in grads["input_adapter"].items() if k.endswith("_padding")]
  assert len(padding_grads) == 3 and all(np.abs(g).max() > 0 for g in padding_grads)


def test_errors():
  with pytest.raises(ValueError, match="at least one modality"):
    MultimodalAdapter({})
  with pytest.raises(ValueError, match="min_padding_size"):
    MultimodalAdapter(ADAPTERS, min_padding_size=0)
  adapter = MultimodalAdapter(ADAPTERS)
  with pytest.raises(ValueError, match="modalities"):
    adapter.init(jax.random.PRNGKey(0), {"audio": INPUTS["audio"]})
  with pytest.raises(ValueError, match="sum of sizes"):
    split_modalities(jnp.zeros((1, 5, 2)), {"a": 2, "b": 2})


def test_one_hot_adapter_is_one_token():
  labels = jax.nn.one_hot(jnp.array([2, 0]), 4)
  out = OneHotAdapter().apply({}, labels)
  np.testing.assert_array_equal(out, np.asarray(labels)[:, None])
  with pytest.raises(ValueError, match="jax.nn.one_hot"):
    OneHotAdapter().apply({}, jnp.array([2, 0]))


def test_mask_probs_replace_tokens_by_the_mask_token():
  masked = MultimodalAdapter(ADAPTERS, mask_probs={"label": 1.0, "audio": 0.0, "video": 0.5})
  plain = MultimodalAdapter(ADAPTERS)
  key = jax.random.PRNGKey(3)
  variables = masked.init({"params": jax.random.PRNGKey(0), "masking": key}, INPUTS)
  params = variables["params"]
  out = masked.apply(variables, INPUTS, rngs={"masking": key})
  plain_params = {k: v for k, v in params.items() if not k.endswith("_mask_token")}
  reference = plain.apply({"params": plain_params}, INPUTS)
  channels = out.shape[-1]
  assert all(params[f"{m}_mask_token"].shape == (channels,) for m in ("label", "audio", "video"))
  sizes = {"audio": 4, "label": 1, "video": 4}
  parts, ref = split_modalities(out, sizes), split_modalities(reference, sizes)
  np.testing.assert_array_equal(parts["label"], np.broadcast_to(params["label_mask_token"],
                                                                (2, 1, channels)))
  np.testing.assert_array_equal(parts["audio"], ref["audio"])
  is_mask = np.all(np.asarray(parts["video"]) == np.asarray(params["video_mask_token"]), axis=-1)
  is_input = np.all(np.asarray(parts["video"]) == np.asarray(ref["video"]), axis=-1)
  assert np.all(is_mask ^ is_input) and 0 < is_mask.sum() < is_mask.size
  # Same rng, same mask; another rng, another mask.
  np.testing.assert_array_equal(masked.apply(variables, INPUTS, rngs={"masking": key}), out)
  other = masked.apply(variables, INPUTS, rngs={"masking": jax.random.PRNGKey(4)})
  assert not np.array_equal(other, out)
  shapes = {name: x.shape[1:] for name, x in INPUTS.items()}
  assert param_count(masked, shapes) == count_params(variables)


def test_mask_probs_errors():
  with pytest.raises(ValueError, match="mask_probs names"):
    MultimodalAdapter(ADAPTERS, mask_probs={"text": 0.5})
  with pytest.raises(ValueError, match=r"mask_probs must be in \[0, 1\]"):
    MultimodalAdapter(ADAPTERS, mask_probs={"label": 1.5})
