"""The `audio` data task's preprocessing (TensorFlow, stateless seeded): raw waveforms to rows.

Row: `audio` float32 [num_samples] (int16 records scaled by 1 / 32768 to [-1, 1), float
records as stored), `label` int32 (single-label) or `labels` float32 [num_classes] (multi-label:
a multi-hot vector, from a multi-hot feature [num_classes] or a sequence of ClassLabel ids),
`mask` 1.0. Training crops a random window of num_samples (a clip that is shorter is
zero-padded at its end), then optionally scales it by a random gain (uniform in
[-gain_db, gain_db] decibels) and adds Gaussian noise (std uniform in [0, noise_std]);
evaluation takes the centre or start window and is never augmented. The settings are
`config.data.audio` (data_config.py); the model cuts the window into patches (AudioAdapter).
"""

from perceiver_jax.data.tensorflow_cpu import tf, tfds


def to_float(samples: tf.Tensor) -> tf.Tensor:
  """float32 samples [n]: int16 scaled by 1 / 32768, floats as they are."""
  if samples.dtype == tf.int16:
    return tf.cast(samples, tf.float32) / 32768.0
  return tf.cast(samples, tf.float32)


def crop_or_pad(samples: tf.Tensor, num_samples: int, offset) -> tf.Tensor:
  """samples [n] -> [num_samples]: samples[offset:offset + num_samples], zero-padded at the end
  when the clip is shorter."""
  window = samples[offset:offset + num_samples]
  window = tf.pad(window, [[0, num_samples - tf.shape(window)[0]]])
  return tf.ensure_shape(window, [num_samples])


def random_crop(samples: tf.Tensor, num_samples: int, seed) -> tf.Tensor:
  """A window [num_samples] at a uniform random offset in [0, max(n - num_samples, 0)]."""
  slack = tf.maximum(tf.shape(samples)[0] - num_samples, 0)
  offset = tf.random.stateless_uniform([], seed, 0, slack + 1, dtype=tf.int32)
  return crop_or_pad(samples, num_samples, offset)


def eval_crop(samples: tf.Tensor, num_samples: int, mode: str) -> tf.Tensor:
  """The 'center' (offset (n - num_samples) // 2) or 'start' window [num_samples]."""
  slack = tf.maximum(tf.shape(samples)[0] - num_samples, 0)
  return crop_or_pad(samples, num_samples, slack // 2 if mode == "center" else 0)


def random_gain(samples: tf.Tensor, max_db: float, seed) -> tf.Tensor:
  """samples times 10^(g / 20), g uniform in [-max_db, max_db]."""
  decibels = tf.random.stateless_uniform([], seed, -max_db, max_db)
  return samples * tf.pow(10.0, decibels / 20.0)


def add_noise(samples: tf.Tensor, max_std: float, seed) -> tf.Tensor:
  """samples plus Gaussian noise whose std is uniform in [0, max_std]."""
  std_seed, noise_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  std = tf.random.stateless_uniform([], std_seed, 0.0, max_std)
  return samples + std * tf.random.stateless_normal(tf.shape(samples), noise_seed)


def num_label_classes(builder, config) -> int:
  """The number of classes of the multi-label feature `config.label_feature`: a multi-hot
  Tensor [num_classes] or a Sequence of ClassLabel; ValueError naming the field otherwise."""
  feature = builder.info.features[config.label_feature]
  if isinstance(feature, tfds.features.Sequence) and isinstance(feature.feature,
                                                                tfds.features.ClassLabel):
    return feature.feature.num_classes
  if (isinstance(feature, tfds.features.Tensor) and len(feature.shape) == 1
      and feature.shape[0] is not None):
    return feature.shape[0]
  raise ValueError(
      f"config.data.label_feature={config.label_feature!r} of {config.name!r} is {feature!r}; "
      "config.data.audio.multi_label needs a multi-hot Tensor [num_classes] or a Sequence of "
      "ClassLabel (or set multi_label=False for a ClassLabel).")


def multi_hot(labels: tf.Tensor, num_classes: int, is_sequence: bool) -> tf.Tensor:
  """float32 [num_classes]: the multi-hot vector of a sequence of class ids [k] (any k >= 0),
  or a multi-hot vector [num_classes] as float32."""
  if is_sequence:
    return tf.minimum(tf.reduce_sum(tf.one_hot(labels, num_classes), axis=0), 1.0)
  return tf.cast(labels, tf.float32)


def preprocess(builder, config, train: bool):
  """fn(record, seed) -> {'audio': float32 [num_samples], 'label': int32 or 'labels' float32
  [num_classes], 'mask': 1.0} (module docstring)."""
  settings = config.audio
  feature = builder.info.features[settings.feature]
  if feature.tf_dtype not in (tf.int16, tf.float32, tf.float64) or len(feature.shape) != 1:
    raise ValueError(f"config.data.audio.feature={settings.feature!r} of {config.name!r} must "
                     f"be mono int16 or float samples [n], got {feature!r}.")
  if settings.multi_label:
    num_classes = num_label_classes(builder, config)
    is_sequence = isinstance(builder.info.features[config.label_feature],
                             tfds.features.Sequence)

  def fn(record, seed):
    samples = to_float(record[settings.feature])
    crop_seed, gain_seed, noise_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 3))
    if train:
      samples = random_crop(samples, settings.num_samples, crop_seed)
      if settings.gain_db > 0:
        samples = random_gain(samples, settings.gain_db, gain_seed)
      if settings.noise_std > 0:
        samples = add_noise(samples, settings.noise_std, noise_seed)
    else:
      samples = eval_crop(samples, settings.num_samples, settings.eval_crop)
    row = {"audio": samples, "mask": tf.constant(1.0)}
    if settings.multi_label:
      row["labels"] = multi_hot(record[config.label_feature], num_classes, is_sequence)
    else:
      row["label"] = tf.cast(record[config.label_feature], tf.int32)
    return row

  return fn
