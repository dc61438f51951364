"""Mixup and cutmix of a batch, in JAX on the device (inside the jitted train step).

`mixup_cutmix` mixes images [b, h, w, c] with the reversed batch [b-1 ... 0], one weight per
batch, and soft labels [b, num_classes] with the same weight.
"""

import jax
import jax.numpy as jnp


def _cutmix_box(rng, lam, height: int, width: int):
  """Boolean [h, w] box covering about 1 - lam of the image, centred uniformly, clipped."""
  rng_y, rng_x = jax.random.split(rng)
  ratio = jnp.sqrt(1.0 - lam)
  masks = []
  for key, size in ((rng_y, height), (rng_x, width)):
    cut = jnp.floor(size * ratio).astype(jnp.int32)
    start = jax.random.randint(key, [], 0, size) - cut // 2
    index = jnp.arange(size)
    masks.append((index >= start) & (index < start + cut))
  return masks[0][:, None] & masks[1][None, :]


def mixup_cutmix(images, labels_one_hot, rng, mixup_alpha: float = 0.8,
                 cutmix_alpha: float = 1.0, switch_prob: float = 0.5):
  """Mixes images [b, h, w, c] and labels [b, num_classes] with the reversed batch.

  With probability `switch_prob` cutmix (a box of the reversed batch's pixels is pasted in),
  else mixup (lam * x + (1 - lam) * x_reversed), lam ~ Beta(alpha, alpha). Labels become
  lam * y + (1 - lam) * y_reversed; for cutmix lam is 1 - the box's exact area fraction. An alpha
  of 0 turns that mode off; both 0 returns the inputs (labels as float32). Returns
  (images of the input dtype, float32 labels).
  """
  if images.ndim != 4 or labels_one_hot.ndim != 2 or images.shape[0] != labels_one_hot.shape[0]:
    raise ValueError("mixup_cutmix: needs images [b, h, w, c] and labels_one_hot "
                     f"[b, num_classes], got {images.shape} and {labels_one_hot.shape}.")
  if not jnp.issubdtype(images.dtype, jnp.floating):
    raise ValueError(f"mixup_cutmix: images must be floating point, got {images.dtype}; "
                     "normalize them first.")
  for name, alpha in (("mixup_alpha", mixup_alpha), ("cutmix_alpha", cutmix_alpha)):
    if alpha < 0:
      raise ValueError(f"mixup_cutmix: {name} must be >= 0 (0 turns it off), got {alpha}.")
  if not 0.0 <= switch_prob <= 1.0:
    raise ValueError(f"mixup_cutmix: switch_prob must be in [0, 1], got {switch_prob}.")
  labels = labels_one_hot.astype(jnp.float32)
  if mixup_alpha == 0 and cutmix_alpha == 0:
    return images, labels
  if mixup_alpha == 0 or cutmix_alpha == 0:
    switch_prob = float(mixup_alpha == 0)
  rng_switch, rng_mixup, rng_cutmix, rng_box = jax.random.split(rng, 4)
  x = images.astype(jnp.float32)
  x_reversed = x[::-1]
  # A mode turned off (alpha 0) is never selected; Beta(1, 1) just keeps its draw valid.
  lam_mixup = jax.random.beta(rng_mixup, mixup_alpha or 1.0, mixup_alpha or 1.0)
  lam_cutmix = jax.random.beta(rng_cutmix, cutmix_alpha or 1.0, cutmix_alpha or 1.0)
  box = _cutmix_box(rng_box, lam_cutmix, images.shape[1], images.shape[2])
  use_cutmix = jax.random.uniform(rng_switch) < switch_prob
  mixed = jnp.where(use_cutmix, jnp.where(box[None, :, :, None], x_reversed, x),
                    lam_mixup * x + (1.0 - lam_mixup) * x_reversed)
  lam = jnp.where(use_cutmix, 1.0 - jnp.mean(box.astype(jnp.float32)), lam_mixup)
  return mixed.astype(images.dtype), lam * labels + (1.0 - lam) * labels[::-1]
