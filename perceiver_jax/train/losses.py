"""Losses, computed in float32 whatever the model's compute dtype.

- `softmax_cross_entropy(logits [..., C], labels [...] int, weights [...] = None,
  label_smoothing=0.)`: the weighted mean over positions, sum(w * ce) / sum(w) (0 where all
  weights are 0); unweighted it is the plain mean.
- `masked_lm_loss(logits [b, n, V], labels [b, n], weights [b, n])`: the same, with the
  weights `masking.mask_tokens` returns, so only masked positions count.
- `sigmoid_cross_entropy(logits [..., C], targets [..., C])`: multi-label (AudioSet), mean.
- `l1_loss(predictions, targets)`: mean absolute error (autoencoding).
- `end_point_error(flow [..., 2], target [..., 2])`: mean Euclidean distance (optical flow).
- `multimodal_autoencoding_loss(loss_weights, outputs, targets)`: the multimodal autoencoder's
  weighted sum of L1 (video, audio) and label cross-entropy.
"""

import jax
import jax.numpy as jnp
import optax


def softmax_cross_entropy(logits, labels, weights=None, label_smoothing: float = 0.0):
  """Weighted mean cross-entropy of integer labels; see the module docstring."""
  if logits.shape[:-1] != labels.shape:
    raise ValueError(f"softmax_cross_entropy: logits {logits.shape} need labels of shape "
                     f"{logits.shape[:-1]}, got {labels.shape}.")
  if not 0.0 <= label_smoothing < 1.0:
    raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}.")
  logits = logits.astype(jnp.float32)
  targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
  losses = optax.softmax_cross_entropy(logits, targets)
  if weights is None:
    return jnp.mean(losses)
  if weights.shape != labels.shape:
    raise ValueError(f"softmax_cross_entropy: weights must have the labels' shape "
                     f"{labels.shape}, got {weights.shape}.")
  weights = weights.astype(jnp.float32)
  return jnp.sum(losses * weights) / jnp.maximum(jnp.sum(weights), 1e-8)


def masked_lm_loss(logits, labels, weights):
  """Cross-entropy at the positions where weights > 0 (the masked bytes) only."""
  return softmax_cross_entropy(logits, labels, weights)


def sigmoid_cross_entropy(logits, targets):
  """Mean binary cross-entropy of multi-label targets in [0, 1]."""
  return jnp.mean(optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32),
                                                     targets.astype(jnp.float32)))


def l1_loss(predictions, targets):
  """Mean absolute error; targets are reshaped to the predictions' shape."""
  predictions = predictions.astype(jnp.float32)
  return jnp.mean(jnp.abs(predictions - targets.reshape(predictions.shape).astype(jnp.float32)))


def end_point_error(flow, target):
  """Mean Euclidean distance between flow vectors [..., 2]."""
  delta = flow.astype(jnp.float32) - target.astype(jnp.float32)
  return jnp.mean(jnp.sqrt(jnp.sum(delta * delta, axis=-1)))


def multimodal_autoencoding_loss(loss_weights, outputs, targets) -> jnp.ndarray:
  """Weighted L1 on video and audio plus cross-entropy on the label (float32 scalar).

  outputs as the model returns them; targets {'image': video, 'audio': samples [b, S] or
  [b, S, 1], 'label': int labels [b]} at the same (possibly subsampled) points.
  """
  weights = loss_weights  # The task config's loss_weights: image, audio, label.
  return (weights.image * l1_loss(outputs["image"], targets["image"])
          + weights.audio * l1_loss(outputs["audio"], targets["audio"])
          + weights.label * softmax_cross_entropy(outputs["label"], targets["label"]))
