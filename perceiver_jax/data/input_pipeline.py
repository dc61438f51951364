"""TFDS + tf.data input pipelines (CPU only) yielding per-process batches of numpy arrays.

Batches: image_classification -> `image` float32 [b, h, w, c], `label` int32 [b], `mask`
float32 [b]; text_mlm -> `ids` int32 [b, max_seq_len] (byte ids, PAD 0), `mask` float32 [b];
text_classification -> `ids` int32 [b, max_seq_len] (the `text_features` of one example as
bytes with SEP between them, cut or PAD-padded to max_seq_len; never packed), `label` int32
[b], `mask` float32 [b]; audio -> `audio` float32 [b, num_samples], `label` int32 [b] (or,
with config.audio.multi_label, `labels` float32 [b, num_classes]), `mask` float32 [b]
(audio_ops.py); optical_flow -> `frames` float32 [b, 2, h, w, 3] in [-1, 1], `flow`
float32 [b, h, w, 2] (x, y pixels), `mask` float32 [b] (flow_ops.py).
Tasks whose rows are single records preprocessed on their own (images, arrays, point clouds,
...) are `RECORD_TASKS`: each names the features it reads and a seeded preprocess function.
b = global_batch_size // process_count; process p reads `tfds.split_for_jax_process(split)`.

Train: infinite, reshuffled every epoch. Batch s of process p is a pure function of
(seed, s, p): epoch e's example order comes from a shuffle seeded by (seed, p, e), and every
random augmentation is a stateless op seeded by (seed, p, position of the example in the
stream), so `start_step=s` resumes exactly where an uninterrupted run would be. Resuming reads
(without decoding) at most one epoch of records to skip. Packed text packs each epoch on its
own (the epoch's last row padded) and then shuffles its rows in a buffer of shuffle_buffer
rows (so a batch is not one document's consecutive rows), so an epoch has
ceil(tokens / max_seq_len) rows whatever its order: resuming counts one epoch's bytes, skips
whole epochs unread and re-tokenizes at most one epoch. With `cache_dir` (the trainer passes
its workdir) that count is kept in cache_dir/packed_rows/, so only the first resume of a run
reads an epoch to count it.
Eval: one pass over the split in order; the last batch is padded (`mask` 0.0) and processes
with fewer examples add all-padding batches, so every process runs the same number of steps
and every example counts once. text_mlm with `eval_block_size` B > 0 (language modelling)
reads whole documents instead of packed rows: `text_ops.eval_windows` rows `ids` int32
[b, max_seq_len] ending at blocks of B targets, with `target_mask` float32 [b, max_seq_len - 1]
(1.0 at the block's targets, 0.0 in padding batches), so each document byte and its closing
EOS is scored once, with at least max_seq_len - B ids of context or its whole document.
Labels: given the model's `num_classes`, both iterators raise ValueError when the labels can
fall outside [0, num_classes): at once when the label feature is a TFDS ClassLabel with more
classes (no data read), else at the first batch (on the host) holding such a label.

The settings (`config.data`) and their checks are in data_config.py.
Datasets must be prepared with `tfds build` beforehand (nothing is downloaded here; a data_dir
that does not exist is an error naming it), except the builders in
`perceiver_jax.data.datasets.OFFLINE_BUILDERS`, which are built on first use.
"""

import dataclasses
import hashlib
import json
import os
from typing import Callable, Dict, Iterable, Iterator, Optional, Sequence, Tuple

import jax
import numpy as np

from perceiver_jax.data import (array_ops, audio_ops, flow_ops, image_ops, multimodal_ops,
                                point_cloud_ops, text_ops)
from perceiver_jax.data.data_config import check_config
from perceiver_jax.data.datasets import OFFLINE_BUILDERS
from perceiver_jax.data.tensorflow_cpu import tf, tfds
from perceiver_jax.data.tokenizer import SEP


class DatasetNotPreparedError(ValueError):
  """The TFDS dataset has not been built in data_dir; the message gives the command."""


def _process(global_batch_size: int, process_index, process_count) -> Tuple[int, int, int]:
  """(process_index, process_count, per-process batch size), checked."""
  if (process_index is None) != (process_count is None):
    raise ValueError("Pass both process_index and process_count, or neither (then jax's are "
                     f"used); got {process_index} and {process_count}.")
  if process_index is None:
    process_index, process_count = jax.process_index(), jax.process_count()
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index must be in [0, process_count={process_count}), got "
                     f"{process_index}.")
  if global_batch_size < 1 or global_batch_size % process_count:
    raise ValueError(f"global_batch_size must be a positive multiple of the process count "
                     f"({process_count}), got {global_batch_size}.")
  return process_index, process_count, global_batch_size // process_count


def _not_prepared(config) -> DatasetNotPreparedError:
  where = config.data_dir or "the TFDS default data_dir (~/tensorflow_datasets)"
  if config.data_dir and not tf.io.gfile.isdir(config.data_dir):
    where = (f"config.data.data_dir={config.data_dir!r}, which does not exist (fix the path "
             "if it is a typo)")
  data_dir_flag = f" --data_dir={config.data_dir}" if config.data_dir else ""
  if config.name.split("/")[0] in OFFLINE_BUILDERS:  # "name/config" names too.
    how = ("it builds offline from data that ships with a package, and the pipeline builds it "
           "on first use; this build failed (see the error above)")
    imports, import_flag = "import perceiver_jax.data.datasets; ", " --imports=perceiver_jax.data.datasets"
  else:
    how = "datasets that need manual downloads also need --manual_dir"
    imports, import_flag = "", ""
  return DatasetNotPreparedError(
      f"TFDS dataset {config.name!r} is not prepared in {where}, and the input pipeline never "
      f"downloads. Prepare it once with:\n  tfds build {config.name}{import_flag}"
      f"{data_dir_flag}\nor, from Python:\n  python -c \"{imports}import tensorflow_datasets "
      f"as tfds; tfds.builder({config.name!r}, data_dir={config.data_dir!r})"
      f".download_and_prepare()\"\n({how}).")


def _builder(config) -> tfds.core.DatasetBuilder:
  """The TFDS builder; our offline builders (any config: "name/config") are built on first use
  (in config.data_dir, created if need be)."""
  check_config(config)
  builder = tfds.builder(config.name, data_dir=config.data_dir)
  if builder.name in OFFLINE_BUILDERS and not builder.is_prepared():
    try:
      builder.download_and_prepare()
    except Exception as error:
      raise _not_prepared(config) from error
  return builder


def _label_error(config, labels: str, num_classes: int) -> ValueError:
  return ValueError(f"{config.name!r} has {labels} (feature {config.label_feature!r}) but the "
                    f"model has config.model.num_classes={num_classes}: set "
                    "config.model.num_classes to the dataset's number of classes.")


def _label_check(builder, config, num_classes: Optional[int]):
  """fn(batches) -> batches checking their labels against num_classes (see the module doc);
  ValueError at once when the ClassLabel feature has more classes."""
  features = builder.info.features
  if num_classes is None or config.task == "text_mlm" or config.label_feature not in features:
    return lambda batches: batches  # A missing label feature: _read names it.
  if config.task == "audio" and config.audio.multi_label:
    data_classes = audio_ops.num_label_classes(builder, config)
    if data_classes != num_classes:
      raise _label_error(config, f"{data_classes} classes", num_classes)
    return lambda batches: batches
  if config.task == "array" and config.array.target == "regression":
    return lambda batches: batches  # Float targets, no classes.
  feature = features[config.label_feature]
  if isinstance(feature, tfds.features.ClassLabel):
    if feature.num_classes > num_classes:
      raise _label_error(config, f"{feature.num_classes} classes", num_classes)
    return lambda batches: batches
  return lambda batches: _checked_labels(batches, config, num_classes)


def _checked_labels(batches, config, num_classes: int):
  for batch in batches:
    labels = batch["label"][batch["mask"] > 0]
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
      raise _label_error(config, f"labels in [{labels.min()}, {labels.max()}]", num_classes)
    yield batch


def _options(config) -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True
  if config.num_threads:
    options.threading.private_threadpool_size = config.num_threads
    options.threading.max_intra_op_parallelism = 1
  return options


@dataclasses.dataclass(frozen=True)
class RecordTask:
  """A data task whose rows are records preprocessed one by one (images, arrays, points, ...).

  fields(config) -> [(data field, feature name)]: the features each record must have, named
    by the `config.data` field that names them (e.g. ('image_feature', 'image'));
  preprocess(builder, config, train) -> fn(record, seed) -> dict of tensors with `mask` 1.0:
    one row; `seed` is an int64 [2] stateless seed (zeros in evaluation);
  encoded(config) -> feature names read undecoded (preprocess decodes them).
  """
  fields: Callable[..., Sequence[Tuple[str, str]]]
  preprocess: Callable[..., Callable[..., Dict[str, tf.Tensor]]]
  encoded: Callable[..., Sequence[str]] = lambda config: ()


def _read(builder, config, split, *, shuffle_seed: Optional[int] = None) -> tf.data.Dataset:
  """Undecoded records of `split` (images stay encoded); files in a seeded order when
  `shuffle_seed` is given and the dataset is not ordered (TFDS `disable_shuffling`)."""
  features = builder.info.features
  if config.task in RECORD_TASKS:
    fields = RECORD_TASKS[config.task].fields(config)
    encoded = RECORD_TASKS[config.task].encoded(config)
  else:
    fields = {"text_mlm": [("text_feature", config.text_feature)],
              "text_classification": [("text_features", name) for name in config.text_features]
                                     + [("label_feature", config.label_feature)]}[config.task]
    encoded = ()
  for field, name in fields:
    if name not in features:
      named = f"text_features entry {name!r}" if field == "text_features" else (
          f"{field}={name!r}")
      raise ValueError(f"data_config.{named} is not a feature of {config.name!r}; it has "
                       f"{sorted(features.keys())}.")
  decoders = {name: tfds.decode.SkipDecoding() for name in encoded} or None
  # No TFDS auto-cache: a pass cut short (a plot's one batch) would discard it with a warning.
  read_config = tfds.ReadConfig(shuffle_seed=shuffle_seed, options=_options(config),
                                try_autocache=False)
  shuffle_files = shuffle_seed is not None and not builder.info.disable_shuffling
  try:
    return builder.as_dataset(split=split, decoders=decoders, read_config=read_config,
                              shuffle_files=shuffle_files)
  except AssertionError as error:
    if builder.is_prepared():
      raise
    raise _not_prepared(config) from error


def _cardinality(ds: tf.data.Dataset, what: str) -> int:
  count = int(ds.cardinality())
  if count < 0:
    raise ValueError(f"The number of examples in {what} is unknown to tf.data.")
  return count


def _image_size(builder, config) -> Tuple[int, int]:
  if config.image_size is not None:
    return tuple(int(n) for n in config.image_size)
  height, width = builder.info.features[config.image_feature].shape[:2]
  if height is None or width is None:
    raise ValueError(f"{config.name!r} images vary in size; set data_config.image_size to the "
                     "(height, width) the model sees.")
  return height, width


def _image_preprocess(builder, config, train: bool):
  """fn(record, seed) -> {'image': float32 [h, w, c], 'label': int32, 'mask': 1.0}."""
  image_feature = builder.info.features[config.image_feature]
  stored_size = tuple(image_feature.shape[:2])
  size = _image_size(builder, config)
  channels = image_feature.shape[-1]
  for field in ("mean", "std"):
    if config[field] is not None and len(config[field]) != channels:
      raise ValueError(f"data_config.{field} needs one value per channel ({channels} in "
                       f"{config.name!r}), got {config[field]!r}.")
  augment = config.train_augment if train else "none"

  def fit(image):
    if size != stored_size:
      return image_ops.resize(image, size)
    return image

  def central_crop(image):
    shape = tf.shape(image)
    side = tf.cast(tf.cast(tf.minimum(shape[0], shape[1]), tf.float32)
                   * config.eval_crop_fraction, tf.int32)
    return tf.image.crop_to_bounding_box(image, (shape[0] - side) // 2,
                                         (shape[1] - side) // 2, side, side)

  def preprocess(record, seed):
    image = image_feature.decode_example(record[config.image_feature])
    crop_seed, flip_seed, augment_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 3))
    if augment in ("inception_crop_flip", "randaugment"):
      image = image_ops.inception_crop(image, crop_seed, size)
    elif not train and config.eval_crop_fraction is not None:
      image = image_ops.resize(central_crop(image), size)
    else:
      image = fit(image)
    if augment != "none":
      image = image_ops.random_flip(image, flip_seed)
    if augment == "randaugment":
      image = tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)
      image = image_ops.randaugment(image, augment_seed, config.randaugment_layers,
                                    config.randaugment_magnitude)
    return {"image": image_ops.normalize(image, config.mean, config.std),
            "label": tf.cast(record[config.label_feature], tf.int32),
            "mask": tf.constant(1.0)}

  return preprocess


RECORD_TASKS = {
    "image_classification": RecordTask(
        fields=lambda config: [("image_feature", config.image_feature),
                               ("label_feature", config.label_feature)],
        preprocess=_image_preprocess, encoded=lambda config: [config.image_feature]),
    "point_cloud": RecordTask(fields=point_cloud_ops.fields,
                              preprocess=point_cloud_ops.make_preprocess),
    "audio": RecordTask(
        fields=lambda config: [("audio.feature", config.audio.feature),
                               ("label_feature", config.label_feature)],
        preprocess=audio_ops.preprocess),
    # Video + audio + label clips: `image` [T, H, W, 3], `audio` [T * spf, 1], `label`.
    "multimodal": RecordTask(
        fields=lambda config: [("multimodal.video_feature", config.multimodal.video_feature),
                               ("multimodal.audio_feature", config.multimodal.audio_feature),
                               ("label_feature", config.label_feature)],
        preprocess=multimodal_ops.make_preprocess),
    "optical_flow": RecordTask(fields=flow_ops.fields, preprocess=flow_ops.preprocess),
    "array": RecordTask(fields=array_ops.fields, preprocess=array_ops.preprocess),
}


def _ids(config):
  """fn(record) -> int32 ids [n] of the record's text."""
  return lambda record: text_ops.tokenize(record[config.text_feature])


def _row(ids):
  return {"ids": ids, "mask": tf.constant(1.0)}


def _classification_row(config):
  """fn(record) -> {'ids': int32 [max_seq_len], 'label': int32, 'mask': 1.0}: the record's
  text_features as byte ids, SEP between them, cut or padded to max_seq_len. A negative label
  (GLUE's test splits hide theirs as -1) stops the pipeline with an error naming the split."""
  def row(record):
    label = tf.cast(record[config.label_feature], tf.int32)
    check = tf.debugging.assert_non_negative(
        label, message=f"{config.name} has examples with label -1 (hidden labels, as in the "
                       "GLUE test splits); train and evaluate on splits with labels, e.g. "
                       "data_config.eval_split=validation")
    pieces = []
    for name in config.text_features:
      if pieces:
        pieces.append(tf.constant([SEP], tf.int32))
      pieces.append(text_ops.tokenize(record[name]))
    ids = text_ops.pad_or_truncate(tf.concat(pieces, 0), config.max_seq_len)
    with tf.control_dependencies([check]):
      label = tf.identity(label)
    return {"ids": ids, "label": label, "mask": tf.constant(1.0)}

  return row


def _epochs(records, config, first_epoch: int, key, per_epoch=lambda epoch, seed: epoch):
  """Records of epochs first_epoch, first_epoch + 1, ..., each in an order seeded by (key, e)
  and passed through `per_epoch` (a (dataset, seed) -> dataset map; seed is another int64
  scalar seeded by (key, e))."""
  def shuffled(epoch):
    epoch_key = tf.random.experimental.stateless_fold_in(key, epoch)
    draw = lambda k: tf.random.stateless_uniform([], k, minval=None, maxval=None,
                                                 dtype=tf.int64)
    per_epoch_seed = draw(tf.random.experimental.stateless_fold_in(epoch_key, 1))
    return per_epoch(records.shuffle(config.shuffle_buffer, seed=draw(epoch_key)),
                     per_epoch_seed)

  return tf.data.Dataset.range(first_epoch, np.iinfo(np.int64).max).flat_map(shuffled)


def make_train_iterator(data_config, *, global_batch_size: int, seed: int, start_step: int = 0,
                        process_index=None, process_count=None, cache_dir: Optional[str] = None,
                        num_classes: Optional[int] = None) -> Iterator[Dict[str, np.ndarray]]:
  """Infinite iterator of this process's train batches from `start_step` on (module doc);
  `cache_dir` keeps packed text's rows per epoch for later resumes; labels are checked
  against `num_classes` when given."""
  config = data_config
  process_index, process_count, batch_size = _process(global_batch_size, process_index,
                                                      process_count)
  if start_step < 0:
    raise ValueError(f"start_step must be >= 0, got {start_step}.")
  builder = _builder(config)
  split = tfds.split_for_jax_process(config.train_split, process_index=process_index,
                                     process_count=process_count)
  records = _read(builder, config, split, shuffle_seed=seed)
  check_labels = _label_check(builder, config, num_classes)
  epoch_length = _cardinality(records, f"split {config.train_split!r}")
  if epoch_length == 0:
    raise ValueError(f"Split {config.train_split!r} of {config.name!r} has no examples for "
                     f"process {process_index} of {process_count}.")
  shuffle_key, augment_key = tf.unstack(tf.random.experimental.stateless_split(
      tf.constant([seed, process_index], tf.int64), 2))
  first_example = start_step * batch_size

  if config.task == "text_mlm" and config.pack:
    rows_per_epoch = _rows_per_epoch(records, config, (process_index, process_count),
                                     cache_dir) if first_example else 1
    first_epoch, offset = divmod(first_example, rows_per_epoch)
    # Consecutive packed rows continue one document: they are shuffled again, as rows.
    ds = _epochs(records, config, first_epoch, shuffle_key, lambda epoch, seed: text_ops.pack(
        epoch.map(_ids(config)), config.max_seq_len).shuffle(config.shuffle_buffer, seed=seed)
    ).skip(offset).map(_row)
  else:
    first_epoch, offset = divmod(first_example, epoch_length)
    ds = _epochs(records, config, first_epoch, shuffle_key).skip(offset)
    if config.task == "text_mlm":
      ds = ds.map(lambda record: _row(text_ops.pad_or_truncate(
          _ids(config)(record), config.max_seq_len)), tf.data.AUTOTUNE)
    elif config.task == "text_classification":
      ds = ds.map(_classification_row(config), tf.data.AUTOTUNE)
    else:
      preprocess = RECORD_TASKS[config.task].preprocess(builder, config, train=True)
      ds = ds.enumerate(first_example).map(
          lambda position, record: preprocess(
              record, tf.random.experimental.stateless_fold_in(augment_key, position)),
          tf.data.AUTOTUNE)
  ds = ds.batch(batch_size, drop_remainder=True).prefetch(config.prefetch)
  return iter(check_labels(tfds.as_numpy(ds.with_options(_options(config)))))


class EvalBatches:
  """Re-iterable eval pass: `len()` batches, each a dict of numpy arrays with `mask`."""

  def __init__(self, ds: tf.data.Dataset, num_batches: int, check_labels):
    self._ds = ds
    self._num_batches = num_batches
    self._check_labels = check_labels

  def __len__(self) -> int:
    return self._num_batches

  def __iter__(self) -> Iterator[Dict[str, np.ndarray]]:
    return iter(self._check_labels(tfds.as_numpy(self._ds)))


def _eval_rows(builder, config, split) -> tf.data.Dataset:
  """Unbatched eval rows of one process's split, in order, each with `mask` 1.0."""
  records = _read(builder, config, split)
  if config.task in RECORD_TASKS:
    preprocess = RECORD_TASKS[config.task].preprocess(builder, config, train=False)
    return records.map(lambda record: preprocess(record, tf.zeros([2], tf.int64)),
                       tf.data.AUTOTUNE)
  if config.task == "text_classification":
    return records.map(_classification_row(config), tf.data.AUTOTUNE)
  docs = records.map(_ids(config))
  if config.eval_block_size:
    return text_ops.eval_windows(docs, config.max_seq_len, config.eval_block_size).map(
        lambda window: dict(window, mask=tf.constant(1.0)))
  if config.pack:
    return text_ops.pack(docs, config.max_seq_len).map(_row)
  return docs.map(lambda ids: _row(text_ops.pad_or_truncate(ids, config.max_seq_len)))


def _num_packed_rows(records, config) -> int:
  return text_ops.count_packed_rows(records.map(lambda record: record[config.text_feature]),
                                    config.max_seq_len)


def _rows_per_epoch(records, config, process: Tuple[int, int], cache_dir: Optional[str]) -> int:
  """`_num_packed_rows` of process (index, count)'s share of the train split, read from /
  written to a file in cache_dir/packed_rows/ named after (dataset, data_dir, split, process,
  feature, max_seq_len) when cache_dir is given (written to a temporary name, then renamed:
  never half-written)."""
  if cache_dir is None:
    return _num_packed_rows(records, config)
  key = json.dumps([config.name, config.data_dir, config.train_split, list(process),
                    config.text_feature, config.max_seq_len])
  directory = os.path.join(cache_dir, "packed_rows")
  path = os.path.join(directory, hashlib.sha256(key.encode()).hexdigest()[:16] + ".json")
  if tf.io.gfile.exists(path):
    with tf.io.gfile.GFile(path) as f:
      stored = json.load(f)
    if stored["key"] == key:
      return stored["rows"]
  rows = _num_packed_rows(records, config)
  tf.io.gfile.makedirs(directory)
  with tf.io.gfile.GFile(path + ".tmp", "w") as f:
    json.dump({"key": key, "rows": rows}, f)
  tf.io.gfile.rename(path + ".tmp", path, overwrite=True)
  return rows


def _num_eval_rows(builder, config, split) -> int:
  if config.task == "text_mlm" and config.eval_block_size:
    texts = _read(builder, config, split).map(lambda record: record[config.text_feature])
    return text_ops.count_eval_windows(texts, config.eval_block_size)
  if config.task == "text_mlm" and config.pack:
    return _num_packed_rows(_read(builder, config, split), config)
  return _cardinality(_eval_rows(builder, config, split), f"split {config.eval_split!r}")


def make_eval_iterator(data_config, *, global_batch_size: int, process_index=None,
                       process_count=None, num_classes: Optional[int] = None
                       ) -> Iterable[Dict[str, np.ndarray]]:
  """One in-order pass over this process's eval split, padded (module doc); re-iterable;
  labels are checked against `num_classes` when given."""
  config = data_config
  process_index, process_count, batch_size = _process(global_batch_size, process_index,
                                                      process_count)
  builder = _builder(config)
  check_labels = _label_check(builder, config, num_classes)
  splits = [tfds.split_for_jax_process(config.eval_split, process_index=index,
                                       process_count=process_count)
            for index in range(process_count)]
  num_rows = [_num_eval_rows(builder, config, split) for split in splits]
  num_batches = -(-max(num_rows) // batch_size)
  rows = _eval_rows(builder, config, splits[process_index])

  def pad(batch):
    missing = batch_size - tf.shape(batch["mask"])[0]
    return {key: tf.pad(value, [[0, missing]] + [[0, 0]] * (value.shape.rank - 1))
            for key, value in batch.items()}

  batches = rows.batch(batch_size).map(pad)
  padding = tf.data.Dataset.from_tensors(tf.nest.map_structure(
      lambda spec: tf.zeros([batch_size] + spec.shape[1:], spec.dtype), batches.element_spec))
  ds = batches.concatenate(padding.repeat()).take(num_batches).prefetch(config.prefetch)
  return EvalBatches(ds.with_options(_options(config)), num_batches, check_labels)
