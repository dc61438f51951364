"""Losses of the task models that have no training objective here, computed in float32.

- `end_point_error(flow [..., 2], target [..., 2])`: mean Euclidean distance (optical flow).
- `multimodal_autoencoding_loss(loss_weights, outputs, targets)`: the multimodal autoencoder's
  weighted sum of L1 (video, audio) and label cross-entropy.

The trained tasks' losses (classification, masked and causal language modelling) are in
objectives.py; optax has the rest (e.g. `optax.sigmoid_binary_cross_entropy` for AudioSet).
"""

import jax.numpy as jnp
import optax


def end_point_error(flow, target):
  """Mean Euclidean distance between flow vectors [..., 2]."""
  delta = flow.astype(jnp.float32) - target.astype(jnp.float32)
  return jnp.mean(jnp.sqrt(jnp.sum(delta * delta, axis=-1)))


def _l1(predictions, targets):
  """Mean absolute error; targets are reshaped to the predictions' shape."""
  predictions = predictions.astype(jnp.float32)
  return jnp.mean(jnp.abs(predictions - targets.reshape(predictions.shape).astype(jnp.float32)))


def multimodal_autoencoding_loss(loss_weights, outputs, targets) -> jnp.ndarray:
  """Weighted L1 on video and audio plus cross-entropy on the label (float32 scalar).

  outputs as the model returns them; targets {'image': video, 'audio': samples [b, S] or
  [b, S, 1], 'label': int labels [b]} at the same (possibly subsampled) points; loss_weights
  is the task config's (image, audio, label).
  """
  label = optax.softmax_cross_entropy_with_integer_labels(
      outputs["label"].astype(jnp.float32), targets["label"])
  return (loss_weights.image * _l1(outputs["image"], targets["image"])
          + loss_weights.audio * _l1(outputs["audio"], targets["audio"])
          + loss_weights.label * jnp.mean(label))
