"""Training objectives: what a task's model is fed and how its outputs are scored.

An `Objective` has two pure functions the train and eval steps call:
  prepare(batch, rng, train) -> (inputs, model_kwargs, targets)
  score(outputs, targets)    -> (loss_sum, weight_sum, metric_sums)
and `metrics`, the names of what an evaluation reports: 'loss' and the metric_sums' keys.
Scores are sums over examples (or masked positions) weighted by the batch's `mask`, never
means, so gradient accumulation over micro-batches and padded evaluation batches are exact:
the step divides by the total weight. Losses are float32.

- classification (`image_classification`, `perceiver_classification`,
  `point_cloud_classification`, `sequence_classification`): softmax cross-entropy with
  label smoothing, optional mixup/CutMix in training; metrics `accuracy` (top-1), `top5`.
- `masked_language_modeling`: BERT masking of `ids` on device (`masking.mask_tokens`), loss
  and `accuracy` only at the masked bytes; padding is masked out of the encoder.
- `language_modeling` (Perceiver AR): rows of max_context + 1 ids; the model reads the first
  max_context and predicts the next byte at each latent position (PAD targets excluded, and
  targets outside a batch's `target_mask` [b, max_context] when it has one: the eval windows
  of `config.data.eval_block_size`); metrics `accuracy` and `bits_per_byte` (cross-entropy /
  ln 2); the loss adds `config.z_loss * logsumexp(logits)^2` when it is not 0. With
  `config.lm.minimum_crop_length` = m > 0, training crops each row's context at random: a
  length c uniform in [m, max_context] per row, the first max_context - c inputs become PAD
  (a left-padded row, as generation meets from a short prompt); targets are unchanged, and
  evaluation is never cropped.
- `audio_classification`: single-label data is classification of `audio` (above); with
  `config.data.audio.multi_label` (AudioSet-style `labels` [b, num_classes] multi-hot) the
  loss is sigmoid binary cross-entropy summed over the classes (the Perceiver paper's AudioSet
  loss); metrics `precision_at_1` (the top-scoring class is a positive) and `label_accuracy`
  (the share of classes whose logit > 0 exactly where the label is 1).
- `multimodal_autoencoding`: L1 on video and audio plus label cross-entropy, the label input
  masked in evaluation, optional subsampled decoding in training (autoencoding.py); metrics
  `image_l1`, `audio_l1`, `reconstruction_l1`, `accuracy`.
- `optical_flow`: `frames` [b, 2, H, W, 3] -> flow [b, H, W, 2] in pixels (the model's
  FlowOutput already scales its decoder's output, by config.model.output_scale, officially
  1/100) against `flow` [b, H, W, 2]; the
  loss is each example's mean end-point error (EPE, the Euclidean distance of predicted and
  true flow vectors), summed over the batch weighted by `mask`; metric `epe` (lower is better).
  With `config.flow.train_points` = k > 0, training decodes only k random pixels per example
  (the model's `subsampled_points`, [b, k]) and scores those; evaluation decodes every pixel.
- `array` data (config.data.task, any classification model task): the batch's `array` is the
  input; with config.data.array.target='regression' the model's num_classes outputs regress
  the float `target` [b, k]: loss config.data.array.loss ('mse': mean squared error over the
  k values, 'l1': mean absolute error), metrics `mse` and `mae`.
"""

import dataclasses
from typing import Any, Callable, Tuple

import jax
import jax.numpy as jnp
import optax

from perceiver_jax.data.mixup import mixup_cutmix
from perceiver_jax.data.masking import mask_tokens
from perceiver_jax.data.tokenizer import PAD
from perceiver_jax.train import autoencoding

INPUT_KEYS = {"image_classification": "image", "perceiver_classification": "image",
              "point_cloud_classification": "points", "sequence_classification": "ids",
              "audio_classification": "audio"}


@dataclasses.dataclass(frozen=True)
class Objective:
  prepare: Callable[..., Any]
  score: Callable[..., Any]
  metrics: Tuple[str, ...]


def make_objective(config) -> Objective:
  """The objective of config.model.task, with config.label_smoothing, config.mixup, config.mlm."""
  task = config.model.task
  if task == "point_cloud_classification":
    _check_point_cloud(config)
  if task == "audio_classification":
    _check_audio(config)
    if config.data.audio.multi_label:
      return _multi_label_classification(config, "audio")
  if task in INPUT_KEYS and config.data.task == "array":
    if config.data.array.target == "regression":
      return _regression(config)
    return _classification(config, "array")
  if task in INPUT_KEYS:
    return _classification(config, INPUT_KEYS[task])
  if task == "masked_language_modeling":
    return _masked_language_modeling(config)
  if task == "language_modeling":
    return _language_modeling(config)
  if task == "multimodal_autoencoding":
    return Objective(*autoencoding.multimodal_autoencoding(config))
  if task == "optical_flow":
    return _optical_flow(config)
  raise ValueError(f"config.model.task={task!r} has no training objective; the trainable tasks "
                   f"are {sorted(INPUT_KEYS)}, 'language_modeling', 'masked_language_modeling', "
                   "'multimodal_autoencoding' and 'optical_flow'.")


def _check_point_cloud(config):
  """ValueError naming config.data.point_cloud's num_points / use_normals when the rows do not
  fit the model's points [num_points, num_point_channels]."""
  data, model = config.data, config.model
  if data.task != "point_cloud":
    return  # validate_config names a data task the model does not read (experiment.DATA_TASKS).
  channels = 6 if data.point_cloud.use_normals else 3
  if channels != model.num_point_channels:
    raise ValueError(f"config.data.point_cloud.use_normals={data.point_cloud.use_normals} gives "
                     f"{channels} channels per point but config.model.num_point_channels="
                     f"{model.num_point_channels}: set one to match the other (3: xyz, "
                     "6: xyz and normals).")
  if data.point_cloud.num_points != model.num_points:
    raise ValueError(f"config.data.point_cloud.num_points={data.point_cloud.num_points} differs "
                     f"from config.model.num_points={model.num_points}: set them equal.")


def _classification(config, input_key: str) -> Objective:
  smoothing = config.label_smoothing
  mixup = config.mixup

  def prepare(batch, rng, train):
    inputs = batch[input_key]
    kwargs = {"pad_mask": inputs != PAD} if input_key == "ids" else {}
    num_classes = config.model.num_classes
    targets = optax.smooth_labels(jax.nn.one_hot(batch["label"], num_classes), smoothing)
    if train and (mixup.mixup_alpha > 0 or mixup.cutmix_alpha > 0):
      inputs, targets = mixup_cutmix(inputs, targets, rng, mixup.mixup_alpha,
                                     mixup.cutmix_alpha, mixup.switch_prob)
    return inputs, kwargs, {"targets": targets, "label": batch["label"], "mask": batch["mask"]}

  def score(logits, targets):
    logits = logits.astype(jnp.float32)
    weights = targets["mask"].astype(jnp.float32)
    losses = optax.softmax_cross_entropy(logits, targets["targets"])
    label = targets["label"]
    top1 = (jnp.argmax(logits, -1) == label).astype(jnp.float32)
    k = min(5, logits.shape[-1])
    topk = jnp.any(jax.lax.top_k(logits, k)[1] == label[:, None], axis=-1).astype(jnp.float32)
    metrics = {"accuracy": jnp.sum(top1 * weights), "top5": jnp.sum(topk * weights)}
    return jnp.sum(losses * weights), jnp.sum(weights), metrics

  return Objective(prepare, score, ("loss", "accuracy", "top5"))


def _masked_language_modeling(config) -> Objective:
  mask_prob = config.mlm.mask_prob

  def prepare(batch, rng, train):
    del train  # Evaluation masks too (with the eval step's fixed rng).
    ids = batch["ids"]
    inputs, labels, weights = mask_tokens(rng, ids, mask_prob=mask_prob)
    weights = weights * batch["mask"][:, None].astype(jnp.float32)
    return inputs, {"pad_mask": ids != PAD}, {"labels": labels, "weights": weights}

  def score(logits, targets):
    logits = logits.astype(jnp.float32)
    weights = targets["weights"]
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets["labels"])
    correct = (jnp.argmax(logits, -1) == targets["labels"]).astype(jnp.float32)
    return (jnp.sum(losses * weights), jnp.sum(weights),
            {"accuracy": jnp.sum(correct * weights)})

  return Objective(prepare, score, ("loss", "accuracy"))


def _check_language_modeling(config):
  """ValueError naming config.lm.minimum_crop_length or config.data.eval_block_size when it
  does not fit the model's num_latents and max_context."""
  model = config.model.perceiver_ar
  latents, context = model.num_latents, model.max_context
  crop = config.lm.minimum_crop_length
  if not _is_int(crop) or (crop != 0 and not latents <= crop <= context):
    raise ValueError(f"config.lm.minimum_crop_length={crop!r} must be 0 (no crops) or in "
                     f"[config.model.perceiver_ar.num_latents={latents}, "
                     f"config.model.perceiver_ar.max_context={context}]: a crop keeps every "
                     "latent position.")
  block = config.data.eval_block_size
  if not _is_int(block) or not 0 <= block <= latents:
    raise ValueError(f"config.data.eval_block_size={block!r} must be 0 (packed eval rows) or "
                     f"in [1, config.model.perceiver_ar.num_latents={latents}]: a block's "
                     "targets are predicted at latent positions.")


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _crop_context(inputs, rng, minimum_length: int):
  """inputs [b, n] -> [b, n] with the first n - c ids of each row PAD, c uniform in
  [minimum_length, n] per row (drawn from rng)."""
  batch, length = inputs.shape
  kept = jax.random.randint(rng, (batch, 1), minimum_length, length + 1)
  return jnp.where(jnp.arange(length) >= length - kept, inputs, PAD)


def _language_modeling(config) -> Objective:
  _check_language_modeling(config)
  z_loss = config.z_loss
  context = config.model.perceiver_ar.max_context
  minimum_crop = config.lm.minimum_crop_length

  def prepare(batch, rng, train):
    ids = batch["ids"]
    if ids.shape[1] != context + 1:
      raise ValueError(f"language modelling needs rows of max_context + 1 = {context + 1} ids; "
                       f"got {ids.shape[1]}: set config.data.max_seq_len = {context + 1}.")
    inputs, targets = ids[:, :-1], ids[:, 1:]
    weights = (targets != PAD).astype(jnp.float32) * batch["mask"][:, None].astype(jnp.float32)
    if "target_mask" in batch:  # Eval windows: only the block's targets count.
      weights = weights * batch["target_mask"].astype(jnp.float32)
    if train and minimum_crop:
      inputs = _crop_context(inputs, rng, minimum_crop)
    return inputs, {"pad_mask": inputs != PAD}, {"labels": targets, "weights": weights}

  def score(logits, targets):
    logits = logits.astype(jnp.float32)
    latents = logits.shape[1]
    labels, weights = targets["labels"][:, -latents:], targets["weights"][:, -latents:]
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    cross_entropy = jnp.sum(losses * weights)
    loss = cross_entropy
    if z_loss:
      loss = loss + z_loss * jnp.sum(jnp.square(jax.nn.logsumexp(logits, -1)) * weights)
    return loss, jnp.sum(weights), {"accuracy": jnp.sum(correct * weights),
                                   "bits_per_byte": cross_entropy / jnp.log(2.0)}

  return Objective(prepare, score, ("loss", "accuracy", "bits_per_byte"))


def _check_audio(config):
  """ValueError naming config.data.audio.num_samples when it is not the model's, config.mixup
  (mixup_cutmix mixes images only) or, for multi-label data, config.label_smoothing when set."""
  if config.data.audio.num_samples != config.model.num_samples:
    raise ValueError(f"config.data.audio.num_samples={config.data.audio.num_samples} must be "
                     f"the model's config.model.num_samples={config.model.num_samples}.")
  if config.mixup.mixup_alpha or config.mixup.cutmix_alpha:
    raise ValueError("config.mixup.mixup_alpha and cutmix_alpha must be 0 for "
                     "audio_classification (mixup/CutMix mix images only), got "
                     f"{config.mixup.mixup_alpha} and {config.mixup.cutmix_alpha}.")
  if config.data.audio.multi_label and config.label_smoothing:
    raise ValueError(f"config.label_smoothing={config.label_smoothing} must be 0 with "
                     "config.data.audio.multi_label (the sigmoid loss has no smoothing).")


def _multi_label_classification(config, input_key: str) -> Objective:
  """Sigmoid binary cross-entropy on multi-hot `labels` [b, num_classes] (module docstring)."""
  num_classes = config.model.num_classes

  def prepare(batch, rng, train):
    del rng, train
    labels = batch["labels"]
    if labels.shape[-1] != num_classes:
      raise ValueError(f"the data has {labels.shape[-1]} classes but "
                       f"config.model.num_classes={num_classes}: set it to the data's.")
    return batch[input_key], {}, {"labels": labels, "mask": batch["mask"]}

  def score(logits, targets):
    logits = logits.astype(jnp.float32)
    labels = targets["labels"].astype(jnp.float32)
    weights = targets["mask"].astype(jnp.float32)
    losses = jnp.sum(optax.sigmoid_binary_cross_entropy(logits, labels), axis=-1)
    top1 = jnp.take_along_axis(labels, jnp.argmax(logits, -1)[:, None], axis=-1)[:, 0]
    agree = jnp.mean(((logits > 0) == (labels > 0.5)).astype(jnp.float32), axis=-1)
    return jnp.sum(losses * weights), jnp.sum(weights), {
        "precision_at_1": jnp.sum(top1 * weights), "label_accuracy": jnp.sum(agree * weights)}

  return Objective(prepare, score, ("loss", "precision_at_1", "label_accuracy"))
def _optical_flow(config) -> Objective:
  """Mean end-point error per example; optional random pixel subsampling in training."""
  height, width = config.model.image_size
  points = config.flow.train_points
  if not _is_int(points) or not 0 <= points <= height * width:
    raise ValueError(f"config.flow.train_points={points!r} must be 0 (decode every pixel) or "
                     f"an int in [1, {height * width}] (the pixels of "
                     f"config.model.image_size={tuple(config.model.image_size)}).")

  def prepare(batch, rng, train):
    frames, flow = batch["frames"], batch["flow"]
    if frames.shape[2:4] != (height, width):
      raise ValueError(f"optical flow frames are {frames.shape[2:4]} but "
                       f"config.model.image_size=({height}, {width}); set "
                       "config.data.flow.crop_size to the model's image_size.")
    flow = flow.reshape(flow.shape[0], height * width, 2)
    kwargs = {}
    if train and points:
      keys = jax.random.split(rng, flow.shape[0])
      chosen = jax.vmap(lambda key: jax.random.permutation(key, height * width)[:points])(keys)
      kwargs["subsampled_points"] = chosen
      flow = jnp.take_along_axis(flow, chosen[:, :, None], axis=1)
    return frames, kwargs, {"flow": flow, "mask": batch["mask"]}

  def score(outputs, targets):
    outputs = outputs.astype(jnp.float32).reshape(targets["flow"].shape)
    delta = outputs - targets["flow"].astype(jnp.float32)
    epe = jnp.mean(jnp.sqrt(jnp.sum(delta * delta, axis=-1)), axis=-1)  # [b]
    weights = targets["mask"].astype(jnp.float32)
    loss = jnp.sum(epe * weights)
    return loss, jnp.sum(weights), {"epe": loss}

  return Objective(prepare, score, ("loss", "epe"))
def _regression(config) -> Objective:
  """Float targets [b, k] (k = config.model.num_classes) of `array` batches; see the module
  docstring. ValueError for the classification settings it cannot use."""
  for path, value in (("label_smoothing", config.label_smoothing),
                      ("mixup.mixup_alpha", config.mixup.mixup_alpha),
                      ("mixup.cutmix_alpha", config.mixup.cutmix_alpha)):
    if value:
      raise ValueError(f"config.{path}={value!r} applies to classification; set it to 0 for "
                       "config.data.array.target='regression'.")
  loss_name = config.data.array.loss
  outputs = config.model.num_classes

  def prepare(batch, rng, train):
    del rng, train
    target = batch["target"]
    if target.shape[-1] != outputs:
      raise ValueError(f"the regression targets have {target.shape[-1]} values but the model "
                       f"has config.model.num_classes={outputs} outputs; set it to "
                       f"{target.shape[-1]}.")
    return batch["array"], {}, {"target": target, "mask": batch["mask"]}

  def score(predictions, targets):
    delta = predictions.astype(jnp.float32) - targets["target"].astype(jnp.float32)
    weights = targets["mask"].astype(jnp.float32)
    squared, absolute = jnp.mean(delta * delta, -1), jnp.mean(jnp.abs(delta), -1)
    losses = squared if loss_name == "mse" else absolute
    return jnp.sum(losses * weights), jnp.sum(weights), {
        "mse": jnp.sum(squared * weights), "mae": jnp.sum(absolute * weights)}

  return Objective(prepare, score, ("loss", "mse", "mae"))
