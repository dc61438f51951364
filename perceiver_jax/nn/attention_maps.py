"""Where a Perceiver's latents look: its first cross-attention's weights, as the model sows them.

cross_attention_maps(model, variables, inputs [batch, *index_dims, channels])
  -> [batch, num_latents, *index_dims]

The model runs once with its cross-attentions set to sow their weights
(`AttentionConfig(sow_weights=True)`, the 'xla' backend, the only one that forms them; the
maps do not depend on the backend); the first one's softmax over the inputs is averaged over
heads and laid out on the input grid. Any sown weights read the same way:

  _, state = model.apply(variables, inputs, mutable=["intermediates"])
  state["intermediates"][...]["attention"]["attention_weights"]  # ([b, heads, q, kv],) per call
"""

import dataclasses

import numpy as np

from perceiver_jax.nn.models import Perceiver


def cross_attention_maps(model: Perceiver, variables, inputs, pad_mask=None) -> np.ndarray:
  """The first cross-attention's weights of `model` on inputs [b, *index_dims, c], averaged
  over heads: [b, num_latents, *index_dims], each latent's map summing to 1."""
  encoder = model.encoder
  sowing = dataclasses.replace(encoder.cross_attention_config,
                               implementation="xla", sow_weights=True)
  model = model.clone(encoder=encoder.clone(cross_attention=sowing))
  _, state = model.apply(variables, inputs, pad_mask, mutable=["intermediates"])
  first = ("cross_attention_shared" if encoder.first_cross_attention_layer_shared
           else "cross_attention_first")
  sown = state["intermediates"]["encoder"][first]["attention"]["attention_weights"]
  weights = np.asarray(sown[0]).mean(axis=1)  # The first call: [b, latents, inputs].
  return weights.reshape(weights.shape[:2] + tuple(inputs.shape[1:-1]))
