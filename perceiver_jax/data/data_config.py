"""The data settings of a training config (`config.data`): defaults and checks.

`default_config()` lists every field the input pipelines read (input_pipeline.py), with what
it does; `check_config(config)` raises ValueError naming a missing or bad field. No TensorFlow here:
configs and the benchmark import this on machines without it.
"""

import math
import numbers

import ml_collections
from ml_collections.config_dict import placeholder

TASKS = ("image_classification", "text_mlm", "text_classification", "point_cloud", "audio",
         "multimodal", "optical_flow", "array")
AUGMENTATIONS = ("none", "flip", "inception_crop_flip", "randaugment")
ARRAY_TARGETS = ("label", "regression")
ARRAY_LOSSES = ("mse", "l1")
ARRAY_SHIFT_MODES = ("roll", "zeros")
MAX_MAGNITUDE = 10.0  # RandAugment magnitudes run from 0 (no change) to this (strongest).


def default_config() -> ml_collections.ConfigDict:
  """Data settings read by the pipelines; the comments say what each one does."""
  config = ml_collections.ConfigDict()
  config.name = "sklearn_digits"      # any TFDS name, e.g. "cifar10", "imagenet2012"
  config.data_dir = placeholder(str)  # None: the TFDS default (~/tensorflow_datasets)
  config.train_split = "train"
  config.eval_split = "test"
  config.task = "image_classification"  # one of TASKS
  config.image_feature = "image"
  config.label_feature = "label"
  config.image_size = placeholder(tuple)  # (h, w) the model sees; None keeps the dataset's size
  config.train_augment = "none"       # one of AUGMENTATIONS; randaugment also crops and flips
  config.randaugment_layers = 2
  config.randaugment_magnitude = 9.0  # in [0, 10]; the ImageNet recipe uses 4 layers at 5
  # e.g. 0.875: eval takes this central square, then resizes
  config.eval_crop_fraction = placeholder(float)
  config.mean = placeholder(tuple)  # per-channel mean on the [0, 1] scale, or None
  config.std = placeholder(tuple)  # per-channel std on the [0, 1] scale, or None
  config.text_feature = "text"        # text_mlm
  config.text_features = ("sentence",)  # text_classification: joined with SEP between them
  config.max_seq_len = 2048
  config.pack = True                  # text_mlm: concatenate documents (EOS between) into rows
  # text_mlm eval for language modelling: 0 evaluates the packed (or padded) rows; B > 0 reads
  # whole documents and scores each token once, in blocks of B targets per window of
  # max_seq_len ids with the most context the window holds (input_pipeline.py)
  config.eval_block_size = 0
  config.shuffle_buffer = 10_000
  config.prefetch = 2                 # batches prepared ahead
  config.num_threads = placeholder(int)  # tf.data threads; None: one per CPU core
  # point_cloud (point_cloud_ops.py): rows {'points': [num_points, 3, or 6 with normals]}
  config.point_cloud = dict(
      points_feature="points",    # float32 [N, 3] xyz
      normals_feature="normals",  # float32 [N, 3], read only with use_normals
      use_normals=False,          # True: channels xyz then normals (6; the model's must match)
      num_points=1024,            # per row: a random subset in training, evenly spaced in eval
      normalize=True,             # centre xyz on their mean, scale into the unit sphere
      rotate=False,               # training: random rotation about up_axis
      up_axis=2,                  # 0, 1 or 2 (x, y, z)
      scale_range=(1.0, 1.0),     # training: xyz times a factor uniform in [low, high]
      jitter_std=0.0,             # training: Gaussian noise on xyz (0: off) ...
      jitter_clip=0.05,           # ... clipped to [-jitter_clip, jitter_clip]
      dropout_max_rate=0.0)       # training: drop a share in [0, this] of points (first point)
  # audio (audio_ops.py): mono waveforms (int16 scaled to [-1, 1), or float) cropped to
  # num_samples; training takes random windows, eval_crop ('center' or 'start') the eval one.
  # gain_db > 0: training scales by a random gain in [-gain_db, gain_db] dB; noise_std > 0:
  # adds Gaussian noise of a random std in [0, noise_std]. multi_label: label_feature is a
  # multi-hot vector or a sequence of ClassLabel ids (AudioSet-style), read as `labels`.
  config.audio = dict(feature="audio", num_samples=16000, eval_crop="center", gain_db=0.0,
                      noise_std=0.0, multi_label=False)
  # multimodal (multimodal_ops.py): clips of video frames uint8 [F, H, W, 3], audio [S] or
  # [S, 1] (int16 or float) and `label_feature`; rows `image` float32 [num_frames, H, W, 3] in
  # [0, 1], `audio` float32 [num_frames * audio_samples_per_frame, 1] in [-1, 1], `label`.
  # Training crops num_frames at a random start (the audio span of the same frames), evaluation
  # takes the first ones; image_size None keeps the frames' size, else the central square is
  # resized to image_size x image_size; flip mirrors the clip's frames at random in training.
  config.multimodal = dict(video_feature="video", audio_feature="audio", num_frames=4,
                           audio_samples_per_frame=128, image_size=placeholder(int), flip=False)
  # optical_flow (flow_ops.py): two uint8 frames and a float32 [H, W, 2] (x, y) flow in pixels
  config.flow = ml_collections.ConfigDict(dict(
      frame_features=("frame1", "frame2"),  # the first and second frame
      flow_feature="flow",
      crop_size=placeholder(tuple),  # (h, w): train random crop, eval centre crop; None: full
      max_scale=0.0,          # train: rescale by s in [1 / (1 + m), 1 + m] (flow times s); 0: off
      flip_horizontal=False,  # train: mirror columns at random (flow x negated)
      flip_vertical=False,    # train: mirror rows at random (flow y negated)
      brightness=0.0,         # train: both frames + one delta in [-b, b] (on [0, 1] frames)
      contrast=0.0))          # train: both frames' contrast times one factor in [1 - c, 1 + c]
  # array: each record's `feature` is a float tensor [*index_dims, channels] (any rank); the
  # label_feature holds its int label (target 'label') or float target, a scalar or [k]
  # (target 'regression'). Training augments in this order: crop, shift, scale, normalise,
  # noise; evaluation only centre-crops and normalises; both then cut patches (array_ops.py).
  config.array = dict(
      feature="signal",
      target="label",                  # one of ARRAY_TARGETS
      loss="mse",                      # regression loss, one of ARRAY_LOSSES
      mean=placeholder(tuple),         # per-channel mean subtracted, or None
      std=placeholder(tuple),          # per-channel std divided by (after the mean), or None
      crop_size=placeholder(tuple),    # index sizes of a random crop (centre in eval), or None
      max_shift=placeholder(tuple),    # per index dim: a random shift in [-s, s], or None
      shift_mode="roll",               # one of ARRAY_SHIFT_MODES: circular or zero-filled
      scale_range=placeholder(tuple),  # (low, high): a random amplitude factor, or None
      noise_std=0.0,                   # Gaussian noise added after normalising; 0: none
      patch_size=placeholder(tuple))   # per index dim: patches become positions, or None
  return config


def check_config(config):
  """Raises ValueError naming the first missing or bad data field and what it must be."""
  for field in default_config().keys():
    if field not in config:
      raise ValueError(f"config.data.{field} is missing; start from "
                       "perceiver_jax.data.data_config.default_config().")

  def fail(field, expected):
    raise ValueError(f"data_config.{field} must be {expected}, got {config[field]!r}.")

  if config.task not in TASKS:
    fail("task", f"one of {TASKS}")
  if config.train_augment not in AUGMENTATIONS:
    fail("train_augment", f"one of {AUGMENTATIONS}")
  if config.image_size is not None and (len(config.image_size) != 2
                                        or min(config.image_size) < 1):
    fail("image_size", "None or (height, width) with both >= 1")
  if config.randaugment_layers < 0:
    fail("randaugment_layers", ">= 0")
  if not 0 <= config.randaugment_magnitude <= MAX_MAGNITUDE:
    fail("randaugment_magnitude", f"in [0, {MAX_MAGNITUDE}]")
  if config.eval_crop_fraction is not None and not 0 < config.eval_crop_fraction <= 1:
    fail("eval_crop_fraction", "None or in (0, 1]")
  if config.std is not None and min(config.std) <= 0:
    fail("std", "None or per-channel values > 0")
  if (isinstance(config.text_features, str) or not config.text_features
      or not all(isinstance(name, str) for name in config.text_features)):
    fail("text_features", "a non-empty tuple of feature names, e.g. ('sentence1', 'sentence2')")
  if config.max_seq_len < 1:
    fail("max_seq_len", ">= 1")
  block = config.eval_block_size
  if isinstance(block, bool) or not isinstance(block, int) or not 0 <= block < config.max_seq_len:
    fail("eval_block_size", f"0 (off) or an int in [1, max_seq_len - 1 = {config.max_seq_len - 1}]")
  if block and config.task != "text_mlm":
    fail("eval_block_size", f"0 for data_config.task={config.task!r} (blocks are text_mlm's)")
  if config.shuffle_buffer < 1:
    fail("shuffle_buffer", ">= 1")
  if config.prefetch < 0:
    fail("prefetch", ">= 0")
  if config.num_threads is not None and config.num_threads < 1:
    fail("num_threads", "None or >= 1")
  _check_point_cloud(config.point_cloud)
  _check_audio(config.audio)
  _check_multimodal(config.multimodal)
  _check_flow(config.flow)
  _check_array(config.array)


def _check_point_cloud(settings):
  """ValueError naming the first bad config.data.point_cloud field."""
  for field in default_config().point_cloud.keys():
    if field not in settings:
      raise ValueError(f"config.data.point_cloud.{field} is missing; start from "
                       "perceiver_jax.data.data_config.default_config().point_cloud.")

  def fail(field, expected):
    raise ValueError(f"config.data.point_cloud.{field} must be {expected}, got "
                     f"{settings[field]!r}.")

  def is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)

  if not is_int(settings.num_points) or settings.num_points < 1:
    fail("num_points", "an int >= 1")
  if settings.up_axis not in (0, 1, 2) or isinstance(settings.up_axis, bool):
    fail("up_axis", "0, 1 or 2 (the x, y or z axis)")
  scale = settings.scale_range
  if (not isinstance(scale, (tuple, list)) or len(scale) != 2
      or not 0 < float(scale[0]) <= float(scale[1])):
    fail("scale_range", "(low, high) with 0 < low <= high, e.g. (0.8, 1.25); (1.0, 1.0) is off")
  if not settings.jitter_std >= 0:
    fail("jitter_std", ">= 0 (0: off)")
  if not settings.jitter_clip > 0:
    fail("jitter_clip", "> 0")
  if not 0 <= settings.dropout_max_rate < 1:
    fail("dropout_max_rate", "in [0, 1) (0: off)")


AUDIO_EVAL_CROPS = ("center", "start")


def _check_audio(audio):
  """ValueError naming the first bad config.data.audio field."""
  for field in default_config().audio.keys():
    if field not in audio:
      raise ValueError(f"config.data.audio.{field} is missing; start from "
                       "perceiver_jax.data.data_config.default_config().")

  def fail(field, expected):
    raise ValueError(f"config.data.audio.{field} must be {expected}, got {audio[field]!r}.")

  if not isinstance(audio.feature, str) or not audio.feature:
    fail("feature", "the name of the waveform feature, e.g. 'audio'")
  if isinstance(audio.num_samples, bool) or not isinstance(audio.num_samples, int) or (
      audio.num_samples < 1):
    fail("num_samples", "an int >= 1 (the model's config.model.num_samples)")
  if audio.eval_crop not in AUDIO_EVAL_CROPS:
    fail("eval_crop", f"one of {AUDIO_EVAL_CROPS}")
  for field in ("gain_db", "noise_std"):
    if not 0 <= audio[field] < float("inf"):
      fail(field, "a finite number >= 0 (0: off)")
  if not isinstance(audio.multi_label, bool):
    fail("multi_label", "True or False")


def _check_multimodal(section):
  """ValueError naming the first bad config.data.multimodal field."""
  for field in default_config().multimodal.keys():
    if field not in section:
      raise ValueError(f"config.data.multimodal.{field} is missing; start from "
                       "perceiver_jax.data.data_config.default_config().")

  def fail(field, expected):
    raise ValueError(f"config.data.multimodal.{field} must be {expected}, got "
                     f"{section[field]!r}.")

  for field in ("video_feature", "audio_feature"):
    if not isinstance(section[field], str) or not section[field]:
      fail(field, "a feature name")
  for field in ("num_frames", "audio_samples_per_frame"):
    value = section[field]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      fail(field, "an int >= 1")
  size = section.image_size
  if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
    fail("image_size", "None (the stored size) or an int >= 1")
  if not isinstance(section.flip, bool):
    fail("flip", "True or False")


def _check_flow(flow):
  """ValueError naming the first bad config.data.flow field."""
  def fail(field, expected):
    raise ValueError(f"config.data.flow.{field} must be {expected}, got {flow[field]!r}.")

  for field in default_config().flow.keys():
    if field not in flow:
      raise ValueError(f"config.data.flow.{field} is missing; start from "
                       "perceiver_jax.data.data_config.default_config().")
  names = flow.frame_features
  if (isinstance(names, str) or len(names) != 2
      or not all(isinstance(name, str) and name for name in names)):
    fail("frame_features", "two feature names (first frame, second frame)")
  if not isinstance(flow.flow_feature, str) or not flow.flow_feature:
    fail("flow_feature", "a feature name")
  size = flow.crop_size
  if size is not None and (len(size) != 2 or not all(
      isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in size)):
    fail("crop_size", "None (full frames) or (height, width) with both ints >= 1")
  if not 0 <= flow.max_scale < 1:
    fail("max_scale", "in [0, 1) (0: no scaling)")
  if flow.max_scale and size is None:
    fail("max_scale", "0 when crop_size is None (a rescaled pair is cropped to crop_size)")
  for field in ("flip_horizontal", "flip_vertical"):
    if not isinstance(flow[field], bool):
      fail(field, "True or False")
  if not 0 <= flow.brightness <= 1:
    fail("brightness", "in [0, 1] (0: off)")
  if not 0 <= flow.contrast < 1:
    fail("contrast", "in [0, 1) (0: off)")


def _is_number(value) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_array(array):
  """ValueError naming the first bad field of config.data.array."""
  def fail(field, expected):
    raise ValueError(f"config.data.array.{field} must be {expected}, got {array[field]!r}.")

  def is_tuple(value, valid):
    return isinstance(value, (tuple, list)) and len(value) > 0 and all(valid(v) for v in value)

  if not isinstance(array.feature, str) or not array.feature:
    fail("feature", "the name of the array feature, e.g. 'signal'")
  if array.target not in ARRAY_TARGETS:
    fail("target", f"one of {ARRAY_TARGETS}")
  if array.loss not in ARRAY_LOSSES:
    fail("loss", f"one of {ARRAY_LOSSES}")
  if array.mean is not None and not is_tuple(array.mean, _is_number):
    fail("mean", "None or a tuple of per-channel numbers")
  if array.std is not None and not is_tuple(array.std, lambda v: _is_number(v) and v > 0):
    fail("std", "None or a tuple of per-channel numbers > 0")
  if array.crop_size is not None and not is_tuple(array.crop_size,
                                                  lambda v: _is_int(v) and v >= 1):
    fail("crop_size", "None or a tuple of ints >= 1, one per index dim")
  if array.max_shift is not None and not is_tuple(array.max_shift,
                                                  lambda v: _is_int(v) and v >= 0):
    fail("max_shift", "None or a tuple of ints >= 0, one per index dim")
  if array.patch_size is not None and not is_tuple(array.patch_size,
                                                   lambda v: _is_int(v) and v >= 1):
    fail("patch_size", "None or a tuple of ints >= 1, one per index dim")
  if array.shift_mode not in ARRAY_SHIFT_MODES:
    fail("shift_mode", f"one of {ARRAY_SHIFT_MODES}")
  scale = array.scale_range
  if scale is not None and not (is_tuple(scale, _is_number) and len(scale) == 2
                                and 0 < scale[0] <= scale[1]):
    fail("scale_range", "None or (low, high) with 0 < low <= high")
  if not _is_number(array.noise_std) or array.noise_std < 0:
    fail("noise_std", "a number >= 0 (0: no noise)")
