"""The multimodal autoencoding objective (Perceiver IO's Kinetics-700 task) as prepare / score.

Batches of the `multimodal` data task: `image` video [b, T, H, W, 3], `audio` [b, S, 1],
`label` int [b], `mask` [b]. The model reads {'image', 'audio', 'label': one-hot [b, classes]};
in training its MultimodalAdapter replaces the label input by the mask token with probability
config.model.mask_probs.label (the 'masking' rng; the paper trains with 0.5), in evaluation the
label input is always masked, so the eval `accuracy` is the label predicted from video and
audio alone. With config.autoencoding.image_points = k > 0 (audio_patches = k' > 0) training
decodes only k random pixels (k' random audio patches of samples_per_patch samples) per step,
the same for the whole batch, and scores those; evaluation decodes everything.

Per example: image_l1 and audio_l1 = mean |output - target| over its decoded pixels' channels
and audio samples, label cross-entropy; the loss is loss_weights.image * image_l1 +
loss_weights.audio * audio_l1 + loss_weights.label * cross-entropy (the model config's
weights), so on unpadded batches loss / weight equals train.losses.multimodal_autoencoding_loss.
Metrics (sums weighted by `mask`): image_l1, audio_l1, reconstruction_l1 (their sum) and
accuracy.
"""

import numbers

import jax
import jax.numpy as jnp
import optax

METRICS = ("loss", "image_l1", "audio_l1", "reconstruction_l1", "accuracy")


def _check(config):
  """ValueError naming the first config.autoencoding or config.data.multimodal field that does
  not fit the model."""
  model = config.model
  pixels = model.num_frames * model.image_size ** 2
  patches = model.num_frames * model.audio_samples_per_frame // model.samples_per_patch
  if "autoencoding" not in config:
    raise ValueError("config.autoencoding is missing; configs/common.py's get_config() has it.")
  for field, limit, what in (("image_points", pixels, "pixels (num_frames * image_size^2)"),
                             ("audio_patches", patches, "audio patches")):
    value = config.autoencoding.get(field)
    if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
        or not 0 <= value <= limit):
      raise ValueError(f"config.autoencoding.{field} must be 0 (decode all) or an int in "
                       f"[1, {limit}], the model's {what}; got {value!r}.")
  if "label" not in model.mask_probs:
    raise ValueError("config.model.mask_probs must name 'label' (its mask token masks the label "
                     f"input in evaluation); got {dict(model.mask_probs)}.")
  data = config.data
  if data.task != "multimodal":
    return
  for field in ("num_frames", "audio_samples_per_frame", "image_size"):
    value = data.multimodal[field]
    if value != model[field] and not (field == "image_size" and value is None):
      raise ValueError(f"config.data.multimodal.{field}={value!r} must equal "
                       f"config.model.{field}={model[field]!r}.")


def _pick(rng, count: int, total: int):
  """int32 [count] distinct indices in [0, total)."""
  return jax.random.choice(rng, total, (count,), replace=False)


def multimodal_autoencoding(config):
  """(prepare, score, metric names) of the objective; see the module docstring."""
  _check(config)
  model = config.model
  weights = model.loss_weights
  num_classes, samples_per_patch = model.num_classes, model.samples_per_patch
  image_points, audio_patches = config.autoencoding.image_points, config.autoencoding.audio_patches

  def prepare(batch, rng, train):
    label = batch["label"]
    size = label.shape[0]
    inputs = {"image": batch["image"], "audio": batch["audio"],
              "label": jax.nn.one_hot(label, num_classes)}
    image = batch["image"].reshape(size, -1, batch["image"].shape[-1])
    audio = batch["audio"].reshape(size, -1, samples_per_patch)
    kwargs, points = {}, {}
    if not train:
      kwargs["input_masked"] = {"label": jnp.ones((size,), bool)}
    image_rng, audio_rng = jax.random.split(rng)
    if train and image_points:
      points["image"] = _pick(image_rng, image_points, image.shape[1])
      image = image[:, points["image"]]
    if train and audio_patches:
      points["audio"] = _pick(audio_rng, audio_patches, audio.shape[1])
      audio = audio[:, points["audio"]]
    if points:
      kwargs["subsampled_points"] = points
    targets = {"image": image, "audio": audio.reshape(size, -1), "label": label,
               "mask": batch["mask"]}
    return inputs, kwargs, targets

  def score(outputs, targets):
    size = targets["label"].shape[0]
    l1 = lambda name: jnp.mean(jnp.abs(
        outputs[name].astype(jnp.float32).reshape(size, -1)
        - targets[name].astype(jnp.float32).reshape(size, -1)), axis=-1)
    image_l1, audio_l1 = l1("image"), l1("audio")
    logits = outputs["label"].astype(jnp.float32).reshape(size, num_classes)
    cross_entropy = optax.softmax_cross_entropy_with_integer_labels(logits, targets["label"])
    losses = (weights.image * image_l1 + weights.audio * audio_l1
              + weights.label * cross_entropy)
    mask = targets["mask"].astype(jnp.float32)
    correct = (jnp.argmax(logits, -1) == targets["label"]).astype(jnp.float32)
    total = lambda values: jnp.sum(values * mask)
    return total(losses), jnp.sum(mask), {
        "image_l1": total(image_l1), "audio_l1": total(audio_l1),
        "reconstruction_l1": total(image_l1 + audio_l1), "accuracy": total(correct)}

  return prepare, score, METRICS
