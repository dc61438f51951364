"""Input pipelines on the real digits builder (values, per-process splits, deterministic resume,
padded eval), mocked TFDS image datasets (shapes, no downloads), an in-memory text corpus and
in-memory sentence pairs (text_classification), and language-model eval windows of in-memory
documents (each token scored once; bits per byte equal to scoring each document directly)."""

import collections
from unittest import mock

import jax
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from configs import common
from perceiver_jax import tasks
from perceiver_jax.data import data_config, input_pipeline, text_ops
from perceiver_jax.data.datasets import digits
from perceiver_jax.data.tokenizer import EOS, PAD, SEP, BytesTokenizer
from perceiver_jax.train.objectives import make_objective
from tfds_offline import forbid_downloads

TOKENIZER = BytesTokenizer()


@pytest.fixture
def config(digits_data_dir):
  """The digits (built offline once per session)."""
  config = data_config.default_config()
  config.data_dir = digits_data_dir
  config.num_threads = 1
  config.shuffle_buffer = 64
  config.prefetch = 1
  return config


def _with(config, **overrides):
  config = config.copy_and_resolve_references()
  config.update(overrides)
  return config


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _examples(batches):
  """Counter of (uint8 pixels, label) of the real examples in float [0, 1] image batches."""
  counter = collections.Counter()
  for batch in batches:
    pixels = np.round(batch["image"] * 255).astype(np.uint8)
    for image, label, mask in zip(pixels, batch["label"], batch["mask"]):
      if mask:
        counter[(image.tobytes(), int(label))] += 1
  return counter


def _stored(config, split):
  """Counter of (uint8 pixels, label) read straight from TFDS."""
  builder = tfds.builder(config.name, data_dir=config.data_dir)
  ds = builder.as_dataset(split=split, shuffle_files=False)
  return collections.Counter((e["image"].tobytes(), int(e["label"])) for e in tfds.as_numpy(ds))


def _assert_same(first, second):
  assert first.keys() == second.keys()
  for key in first:
    np.testing.assert_array_equal(first[key], second[key], err_msg=key)


def _count(config, split):
  """Examples in `split`: the batches of one eval pass in batches of one."""
  return len(input_pipeline.make_eval_iterator(_with(config, eval_split=split),
                                               global_batch_size=1, process_index=0,
                                               process_count=1))


def _rows(texts, length):
  """Expected ids [len(texts), length]: each entry's texts as bytes, SEP between them, cut or
  PAD-padded."""
  rows = np.full((len(texts), length), PAD, np.int32)
  for row, parts in zip(rows, texts):
    pieces = [TOKENIZER.encode(text) for text in parts]
    ids = np.concatenate([np.concatenate([[SEP], p]) if n else p for n, p in enumerate(pieces)])
    row[:min(length, len(ids))] = ids[:length]
  return rows


# --- digits: real values -----------------------------------------------------------------------


def test_split_sizes_and_slices(config):
  assert _count(config, "train") == 1437 and _count(config, "test") == 360
  assert _count(config, "train[:10%]") == 144


def test_train_epochs_cover_each_process_split_once_and_reshuffle(config):
  config = _with(config, train_split="test")  # 360 digits: 180 per process, 45 batches of 4.
  per_process = []
  for index in range(2):
    batches = _take(input_pipeline.make_train_iterator(
        config, global_batch_size=8, seed=0, process_index=index, process_count=2), 90)
    first = batches[0]
    assert first["image"].shape == (4, 8, 8, 1) and first["image"].dtype == np.float32
    assert first["label"].dtype == np.int32 and first["mask"].dtype == np.float32
    np.testing.assert_array_equal(first["mask"], np.ones(4))
    epoch0, epoch1 = _examples(batches[:45]), _examples(batches[45:])
    assert sum(epoch0.values()) == 180 and epoch0 == epoch1
    order0 = np.concatenate([b["label"] for b in batches[:45]])
    order1 = np.concatenate([b["label"] for b in batches[45:]])
    assert not np.array_equal(order0, order1)  # Reshuffled each epoch.
    per_process.append(epoch0)
  assert not per_process[0] & per_process[1]  # Disjoint ...
  assert per_process[0] + per_process[1] == _stored(config, "test")  # ... and covering.


def test_resume_reproduces_augmented_batches_across_an_epoch_boundary(config):
  # 40 digits: 20 per process; batches of 3, so step 6 holds the last two examples of epoch 0
  # and the first of epoch 1, and step 7 starts one example into epoch 1.
  config = _with(config, train_split="test[:40]", train_augment="randaugment", image_size=(6, 6),
                 mean=(0.5,), std=(0.25,), randaugment_layers=2, randaugment_magnitude=9.0)

  def run(start_step, n, seed=3, index=0):
    return _take(input_pipeline.make_train_iterator(
        config, global_batch_size=6, seed=seed, start_step=start_step, process_index=index,
        process_count=2), n)

  batches = run(0, 9)
  assert batches[0]["image"].shape == (3, 6, 6, 1)
  for start_step, n in ((6, 3), (7, 2)):
    for resumed, uninterrupted in zip(run(start_step, n), batches[start_step:]):
      _assert_same(resumed, uninterrupted)
  assert not np.array_equal(run(0, 1, seed=4)[0]["image"], batches[0]["image"])
  assert not np.array_equal(run(0, 1, index=1)[0]["image"], batches[0]["image"])


def test_flip_mirrors_about_half_of_the_images(config):
  def first_batch(augment):
    return next(input_pipeline.make_train_iterator(
        _with(config, train_augment=augment), global_batch_size=64, seed=5, process_index=0,
        process_count=1))

  plain, flipped = first_batch("none"), first_batch("flip")
  np.testing.assert_array_equal(plain["label"], flipped["label"])  # Same example order.
  mirrored = [np.array_equal(f, p[:, ::-1]) and not np.array_equal(f, p)
              for f, p in zip(flipped["image"], plain["image"])]
  kept = [np.array_equal(f, p) for f, p in zip(flipped["image"], plain["image"])]
  assert all(m or k for m, k in zip(mirrored, kept))
  assert 10 < sum(mirrored) < 54


def test_inception_crop_resizes_and_normalizes(config):
  batch = next(input_pipeline.make_train_iterator(
      _with(config, train_augment="inception_crop_flip", image_size=(4, 5), mean=(0.5,),
            std=(0.5,)), global_batch_size=16, seed=0, process_index=0, process_count=1))
  assert batch["image"].shape == (16, 4, 5, 1) and batch["image"].dtype == np.float32
  assert batch["image"].min() >= -1.0 - 1e-6 and batch["image"].max() <= 1.0 + 1e-6
  assert batch["image"].std() > 0.1


def test_eval_counts_every_example_once_with_padding(config):
  # 25 digits: process 0 gets 13 (4 + 4 + 4 + 1), process 1 gets 12 (4 + 4 + 4 + an all-padding
  # batch), so both run 4 steps.
  config = _with(config, eval_split="test[:25]")
  seen = collections.Counter()
  for index, real in ((0, 13), (1, 12)):
    batches = input_pipeline.make_eval_iterator(config, global_batch_size=8,
                                                process_index=index, process_count=2)
    first_pass, second_pass = list(batches), list(batches)
    assert len(batches) == len(first_pass) == 4
    for first, second in zip(first_pass, second_pass):
      _assert_same(first, second)
    masks = np.concatenate([b["mask"] for b in first_pass])
    np.testing.assert_array_equal(masks, np.arange(16) < real)
    last = first_pass[-1]
    assert last["image"].shape == (4, 8, 8, 1) and last["label"].dtype == np.int32
    assert not last["image"][last["mask"] == 0].any()
    seen += _examples(first_pass)
  assert seen == _stored(config, "test[:25]")


def test_eval_central_crop(config):
  config = _with(config, eval_split="test[:8]", image_size=(4, 4), eval_crop_fraction=0.5)
  batch, = input_pipeline.make_eval_iterator(config, global_batch_size=8, process_index=0,
                                             process_count=1)
  builder = tfds.builder("sklearn_digits", data_dir=config.data_dir)
  stored = np.stack([e["image"] for e in tfds.as_numpy(
      builder.as_dataset(split="test[:8]", shuffle_files=False))])
  np.testing.assert_allclose(batch["image"], stored[:, 2:6, 2:6] / 255.0, atol=1e-5)


# --- errors ------------------------------------------------------------------------------------


def test_not_prepared_dataset_names_the_prepare_command_and_downloads_nothing(tmp_path):
  config = _with(data_config.default_config(), name="mnist", data_dir=str(tmp_path / "none"))
  calls = [lambda: input_pipeline.make_train_iterator(config, global_batch_size=2, seed=0),
           lambda: input_pipeline.make_eval_iterator(config, global_batch_size=2)]
  with forbid_downloads():
    for call in calls:
      with pytest.raises(input_pipeline.DatasetNotPreparedError) as error:
        call()
      message = str(error.value)
      assert isinstance(error.value, ValueError) and "'mnist'" in message
      assert f"tfds build mnist --data_dir={tmp_path / 'none'}" in message
      assert f"config.data.data_dir='{tmp_path / 'none'}', which does not exist" in message
  assert not (tmp_path / "none").exists()
  config.data_dir = str(tmp_path)  # Exists, without the dataset.
  with pytest.raises(input_pipeline.DatasetNotPreparedError, match="not prepared in /") as error:
    input_pipeline.make_eval_iterator(config, global_batch_size=2)
  assert "does not exist" not in str(error.value)


def test_labels_beyond_the_models_classes_stop_both_iterators(config):
  calls = [lambda n: input_pipeline.make_train_iterator(config, global_batch_size=2, seed=0,
                                                        num_classes=n),
           lambda n: input_pipeline.make_eval_iterator(config, global_batch_size=2,
                                                       num_classes=n)]
  for call in calls:  # From the ClassLabel info, before any data is read.
    with pytest.raises(ValueError, match="'sklearn_digits' has 10 classes .*config.model."
                                         "num_classes=5"):
      call(5)
    call(10)


def test_labels_without_class_info_are_checked_in_every_batch():
  config = data_config.default_config()
  batches = [{"label": np.array([0, 2]), "mask": np.ones(2)},
             {"label": np.array([1, 7]), "mask": np.array([1.0, 0.0])},  # 7 is padding.
             {"label": np.array([3, 1]), "mask": np.ones(2)}]
  checked = input_pipeline._checked_labels(iter(batches), config, 3)
  assert len(_take(checked, 2)) == 2
  with pytest.raises(ValueError, match=r"labels in \[1, 3\] .*config.model.num_classes=3"):
    next(checked)


def test_failed_offline_build_says_it_builds_offline(tmp_path):
  config = _with(data_config.default_config(), data_dir=str(tmp_path))

  def broken(self, indices):
    raise OSError("scikit-learn data missing")

  with mock.patch.object(digits.SklearnDigits, "_generate_examples", broken):
    with pytest.raises(input_pipeline.DatasetNotPreparedError,
                       match="builds offline") as error:
      input_pipeline.make_eval_iterator(config, global_batch_size=2)
  assert "tfds build sklearn_digits --imports=perceiver_jax.data.datasets" in str(error.value)


@pytest.mark.parametrize("field, value", [
    ("task", "segmentation"), ("train_augment", "mixup"), ("image_size", (0, 8)),
    ("randaugment_layers", -1), ("randaugment_magnitude", 11.0), ("eval_crop_fraction", 1.5),
    ("std", (0.0,)), ("max_seq_len", 0), ("shuffle_buffer", 0), ("prefetch", -1),
    ("num_threads", 0), ("eval_block_size", 2048), ("eval_block_size", 4)])
def test_bad_config_values_name_the_field(config, field, value):
  with pytest.raises(ValueError, match=f"data_config.{field} must be"):
    input_pipeline.make_eval_iterator(_with(config, **{field: value}), global_batch_size=2)


def test_bad_features_and_channel_counts_name_the_field(config):
  with pytest.raises(ValueError, match="data_config.image_feature='img' is not a feature"):
    input_pipeline.make_eval_iterator(_with(config, image_feature="img"), global_batch_size=2)
  with pytest.raises(ValueError, match=r"data_config.mean needs one value per channel \(1"):
    input_pipeline.make_eval_iterator(_with(config, mean=(0.5, 0.5, 0.5)), global_batch_size=2,
                                      process_index=0, process_count=1)


def test_bad_process_arguments(config):
  make = input_pipeline.make_train_iterator
  with pytest.raises(ValueError, match="global_batch_size must be a positive multiple of"):
    make(config, global_batch_size=5, seed=0, process_index=0, process_count=2)
  with pytest.raises(ValueError, match="process_index must be in"):
    make(config, global_batch_size=4, seed=0, process_index=2, process_count=2)
  with pytest.raises(ValueError, match="Pass both process_index and process_count"):
    make(config, global_batch_size=4, seed=0, process_index=0)
  with pytest.raises(ValueError, match="start_step must be >= 0"):
    make(config, global_batch_size=4, seed=0, start_step=-1, process_index=0, process_count=1)


# --- mocked TFDS image datasets: shapes, no downloads --------------------------------------------


@pytest.mark.parametrize("name, augment, image_size, shape", [
    ("cifar10", "inception_crop_flip", (16, 16), (16, 16, 3)),
    ("mnist", "flip", None, (28, 28, 1))])
def test_mocked_tfds_datasets_give_batches_of_the_right_shape(name, augment, image_size, shape):
  channels = shape[-1]
  config = _with(data_config.default_config(), name=name, train_augment=augment,
                 image_size=image_size, mean=(0.5,) * channels, std=(0.5,) * channels,
                 num_threads=1, shuffle_buffer=8)
  with tfds.testing.mock_data(num_examples=6), forbid_downloads():
    batch = next(input_pipeline.make_train_iterator(config, global_batch_size=4, seed=0))
    assert batch["image"].shape == (4,) + shape and batch["image"].dtype == np.float32
    assert batch["label"].shape == (4,) and batch["label"].dtype == np.int32
    assert np.abs(batch["image"]).max() <= 1.0 + 1e-6
    batches = list(input_pipeline.make_eval_iterator(config, global_batch_size=4))
  assert [b["mask"].tolist() for b in batches] == [[1, 1, 1, 1], [1, 1, 0, 0]]
  assert all(b["image"].shape == (4,) + shape for b in batches)


# --- text_mlm on an in-memory corpus -----------------------------------------------------------


DOCS = [f"document {i}: " + "é" * (i % 4) + "x" * (i % 7) for i in range(30)]


@pytest.fixture
def corpus():
  def as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False, **kwargs):
    return tf.data.Dataset.from_tensor_slices({"text": DOCS, "label": np.arange(30) % 2})

  with tfds.testing.mock_data(as_dataset_fn=as_dataset), forbid_downloads():
    yield _with(data_config.default_config(), name="imdb_reviews", task="text_mlm",
                max_seq_len=16, num_threads=1, shuffle_buffer=8)


def _documents_in(rows):
  """The documents in packed rows, split at EOS."""
  data = np.concatenate(rows).ravel()
  ends = np.flatnonzero(data == EOS)
  starts = np.concatenate([[0], ends[:-1] + 1])
  return [TOKENIZER.decode(data[s:e]) for s, e in zip(starts, ends)]


def test_text_eval_rows_equal_numpy_packing_and_padding(corpus):
  tokens = np.concatenate([TOKENIZER.encode(d, add_eos=True) for d in DOCS])
  expected = np.zeros(-(-len(tokens) // 16) * 16, np.int32)
  expected[:len(tokens)] = tokens
  expected = expected.reshape(-1, 16)
  batches = list(input_pipeline.make_eval_iterator(corpus, global_batch_size=8))
  ids = np.concatenate([b["ids"] for b in batches])
  mask = np.concatenate([b["mask"] for b in batches])
  assert ids.dtype == np.int32 and len(ids) % 8 == 0
  np.testing.assert_array_equal(ids[mask == 1], expected)
  assert not ids[mask == 0].any()
  unpacked = input_pipeline.make_eval_iterator(_with(corpus, pack=False), global_batch_size=8)
  ids = np.concatenate([b["ids"] for b in unpacked])[:30]
  np.testing.assert_array_equal(ids, _rows([[doc] for doc in DOCS], 16))


def test_text_train_packs_shuffled_epochs_shuffles_rows_and_resumes(corpus, monkeypatch):
  """Each epoch is the corpus in a new order, packed on its own (its last row padded), so it
  has ceil(tokens / 16) rows, and its rows are shuffled (a document's rows do not follow each
  other); a resume from any step, in the first epoch or after several, continues exactly and
  starts reading at its own epoch."""
  corpus_tokens = np.concatenate([TOKENIZER.encode(doc, add_eos=True) for doc in DOCS])
  rows_per_epoch = -(-len(corpus_tokens) // 16)
  assert rows_per_epoch % 4 and len(corpus_tokens) % 16  # Epochs end mid-batch and mid-row.
  batches = _take(input_pipeline.make_train_iterator(corpus, global_batch_size=4, seed=1), 40)
  assert batches[0]["ids"].shape == (4, 16) and batches[0]["ids"].dtype == np.int32
  rows = np.concatenate([b["ids"] for b in batches])
  epochs = [rows[e * rows_per_epoch:(e + 1) * rows_per_epoch] for e in range(3)]
  for epoch in epochs:  # The corpus's tokens once; one row (the packed epoch's last) padded.
    np.testing.assert_array_equal(np.sort(epoch[epoch != PAD]), np.sort(corpus_tokens))
    assert (epoch == PAD).any(axis=1).sum() == 1
    assert sorted(_documents_in(epoch)) != sorted(DOCS)  # Rows are out of packing order.
  assert not np.array_equal(epochs[0], epochs[1])
  first_epochs, epochs_from = [], input_pipeline._epochs
  monkeypatch.setattr(input_pipeline, "_epochs", lambda records, config, first_epoch, *args: (
      first_epochs.append(first_epoch) or epochs_from(records, config, first_epoch, *args)))
  for start_step in (3, 17, 31):
    resumed = _take(input_pipeline.make_train_iterator(corpus, global_batch_size=4, seed=1,
                                                       start_step=start_step), 3)
    for first, second in zip(resumed, batches[start_step:start_step + 3], strict=True):
      _assert_same(first, second)
  assert first_epochs == [4 * step // rows_per_epoch for step in (3, 17, 31)] != [0, 0, 0]


def test_packed_rows_per_epoch_are_counted_once_per_run(corpus, monkeypatch, tmp_path):
  """With cache_dir, the first resume counts an epoch's rows and keeps the count; later
  resumes read it instead of the epoch and continue exactly as before; another max_seq_len
  is another count."""
  straight = _take(input_pipeline.make_train_iterator(corpus, global_batch_size=4, seed=1), 33)
  counts, count_rows = [], text_ops.count_packed_rows
  monkeypatch.setattr(text_ops, "count_packed_rows", lambda *args: (
      counts.append(args[-1]) or count_rows(*args)))
  for start_step in (17, 31, 30):
    resumed = _take(input_pipeline.make_train_iterator(
        corpus, global_batch_size=4, seed=1, start_step=start_step, cache_dir=str(tmp_path)), 2)
    for first, second in zip(resumed, straight[start_step:start_step + 2], strict=True):
      _assert_same(first, second)
  assert counts == [16]  # Counted at the first resume only.
  assert len(list((tmp_path / "packed_rows").glob("*.json"))) == 1
  _take(input_pipeline.make_train_iterator(_with(corpus, max_seq_len=8), global_batch_size=4,
                                           seed=1, start_step=5, cache_dir=str(tmp_path)), 1)
  assert counts == [16, 8] and len(list((tmp_path / "packed_rows").glob("*.json"))) == 2

def test_text_train_unpacked_rows_are_documents_and_resume(corpus):
  corpus = _with(corpus, pack=False)
  batches = _take(input_pipeline.make_train_iterator(corpus, global_batch_size=4, seed=2), 10)
  rows = np.concatenate([b["ids"] for b in batches])
  expected = {tuple(row) for row in _rows([[doc] for doc in DOCS], 16)}
  assert {tuple(row) for row in rows[:30]} == expected  # Epoch 0 is the corpus, once.
  assert not (rows == PAD).all(axis=1).any()
  resumed = _take(input_pipeline.make_train_iterator(corpus, global_batch_size=4, seed=2,
                                                     start_step=7), 3)  # Step 7 spans epochs.
  for first, second in zip(resumed, batches[7:]):
    _assert_same(first, second)


# --- text_classification on in-memory sentence pairs -------------------------------------------


PAIRS = [(f"first {i} " + "é" * (i % 3), "second " + "y" * (i % 9)) for i in range(20)]
PAIR_LABELS = [(3 * i) % 2 + (i % 5 == 0) for i in range(20)]  # 0, 1 and 2 occur.


@pytest.fixture
def pairs():
  def as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False, **kwargs):
    first, second = zip(*PAIRS)
    return tf.data.Dataset.from_tensor_slices({
        "sentence1": list(first), "sentence2": list(second), "label": PAIR_LABELS,
        "idx": np.arange(20)})

  with tfds.testing.mock_data(as_dataset_fn=as_dataset), forbid_downloads():
    yield _with(data_config.default_config(), name="glue/mrpc", task="text_classification",
                text_features=("sentence1", "sentence2"), eval_split="validation",
                max_seq_len=24, num_threads=1, shuffle_buffer=8)


def _pair_rows(length, features=(0, 1)):
  """Expected ids [20, length] of the chosen sentences of each pair."""
  return _rows([[pair[i] for i in features] for pair in PAIRS], length)


def test_text_classification_eval_rows_join_pairs_with_sep(pairs):
  expected = _pair_rows(24)
  assert (expected != PAD).all(axis=1).sum() > 3  # Some pairs are cut ...
  assert (expected == PAD).any(axis=1).sum() > 3  # ... and some padded.
  batches = list(input_pipeline.make_eval_iterator(pairs, global_batch_size=8))
  assert len(batches) == 3
  ids = np.concatenate([b["ids"] for b in batches])
  assert ids.dtype == np.int32 and batches[0]["label"].dtype == np.int32
  np.testing.assert_array_equal(ids[:20], expected)
  np.testing.assert_array_equal(np.concatenate([b["label"] for b in batches])[:20], PAIR_LABELS)
  np.testing.assert_array_equal(np.concatenate([b["mask"] for b in batches]),
                                np.arange(24) < 20)
  assert not ids[20:].any()
  single = list(input_pipeline.make_eval_iterator(
      _with(pairs, text_features=("sentence2",), max_seq_len=10), global_batch_size=4))
  np.testing.assert_array_equal(np.concatenate([b["ids"] for b in single]),
                                _pair_rows(10, features=(1,)))


def test_text_classification_train_epochs_shuffle_and_resume(pairs):
  batches = _take(input_pipeline.make_train_iterator(pairs, global_batch_size=4, seed=3), 12)
  assert batches[0]["ids"].shape == (4, 24) and batches[0]["label"].shape == (4,)
  examples = [(tuple(row), int(label)) for b in batches for row, label in zip(b["ids"], b["label"])]
  expected = sorted(zip(map(tuple, _pair_rows(24)), PAIR_LABELS))
  assert sorted(examples[:20]) == sorted(examples[20:40]) == expected  # Each epoch: all, once.
  assert examples[:20] != examples[20:40]  # Reshuffled.
  resumed = _take(input_pipeline.make_train_iterator(pairs, global_batch_size=4, seed=3,
                                                     start_step=4), 3)  # Step 4 ends epoch 0.
  for first, second in zip(resumed, batches[4:]):
    _assert_same(first, second)


def test_text_classification_bad_features_name_the_field(pairs):
  with pytest.raises(ValueError, match="data_config.text_features must be a non-empty tuple"):
    input_pipeline.make_eval_iterator(_with(pairs, text_features=()), global_batch_size=4)
  with pytest.raises(ValueError, match="data_config.text_features entry 'premise' is not a "
                                       "feature of 'glue/mrpc'; it has"):
    input_pipeline.make_eval_iterator(_with(pairs, text_features=("sentence1", "premise")),
                                      global_batch_size=4)
  with pytest.raises(ValueError, match="data_config.label_feature='gold' is not a feature"):
    input_pipeline.make_eval_iterator(_with(pairs, label_feature="gold"), global_batch_size=4)


def test_text_classification_hidden_labels_stop_with_a_clear_error():
  def as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False, **kwargs):
    return tf.data.Dataset.from_tensor_slices({"sentence": ["a", "b"], "label": [-1, -1],
                                               "idx": np.arange(2)})

  config = _with(data_config.default_config(), name="glue/sst2", task="text_classification",
                 eval_split="test", max_seq_len=8, num_threads=1)
  with tfds.testing.mock_data(as_dataset_fn=as_dataset), forbid_downloads():
    with pytest.raises(tf.errors.InvalidArgumentError, match="label -1.*eval_split=validation"):
      list(input_pipeline.make_eval_iterator(config, global_batch_size=2))


# --- language-model eval windows (data_config.eval_block_size) on in-memory documents ---------


# 11 documents, one empty, two longer than the windows below; 6 and 5 per process.
EVAL_DOCS = [DOCS[i] for i in range(0, 30, 3)] + ["", "long " * 9]


@pytest.fixture
def documents():
  """The in-memory EVAL_DOCS as a TFDS text dataset whose process splits are TFDS's even
  splits (the first processes take one more document when they do not divide)."""
  def as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False, **kwargs):
    docs = EVAL_DOCS
    if hasattr(split, "index"):  # tfds.split_for_jax_process's _EvenSplit.
      docs = [EVAL_DOCS[i] for i in np.array_split(np.arange(len(EVAL_DOCS)), split.count)[
          split.index]]
    return tf.data.Dataset.from_tensor_slices({"text": docs})

  with tfds.testing.mock_data(as_dataset_fn=as_dataset), forbid_downloads():
    yield _with(data_config.default_config(), name="imdb_reviews", task="text_mlm",
                max_seq_len=12, eval_block_size=4, num_threads=1)


def test_eval_windows_score_every_document_token_once_on_every_process(documents):
  batches = [list(input_pipeline.make_eval_iterator(
      documents, global_batch_size=6, process_index=index, process_count=2))
      for index in range(2)]
  assert len(batches[0]) == len(batches[1]) > 1  # Every process runs the same steps.
  for index, process_docs in enumerate(np.array_split(np.array(EVAL_DOCS, object), 2)):
    windows = [{key: batch[key][row] for key in batch}
               for batch in batches[index] for row in range(3)]
    real = [w for w in windows if w["mask"] == 1.0]
    padding = windows[len(real):]
    assert padding and all(w["mask"] == 0.0 for w in padding)  # A padded last batch.
    assert all(not w["ids"].any() and not w["target_mask"].any() for w in padding)
    expected = list(text_ops.eval_windows(
        tf.data.Dataset.from_tensor_slices(list(process_docs)).map(text_ops.tokenize), 12,
        4).as_numpy_iterator())
    assert len(real) == len(expected)
    for window, reference in zip(real, expected):
      np.testing.assert_array_equal(window["ids"], reference["ids"])
      np.testing.assert_array_equal(window["target_mask"], reference["target_mask"])
    scored = sum(w["target_mask"].sum() for w in real)
    assert scored == sum(len(doc.encode("utf-8")) + 1 for doc in process_docs)


def test_eval_bits_per_byte_through_windows_equals_scoring_each_document_directly(documents):
  """A model whose latents cover its whole 64-byte context scores each document (all shorter)
  in one causal pass; the eval windows of blocks of 8, through the objective, give the same
  bits per byte."""
  config = common.get_config()
  config.model = tasks.tiny_config("language_modeling")
  config.model.perceiver_ar.update(max_context=64, num_latents=64, num_layers=1)
  config.data = _with(documents, max_seq_len=65, eval_block_size=8)
  model, objective = tasks.build(config.model), make_objective(config)
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), np.zeros((1, 64), np.int32))
  rng = np.random.default_rng(1)
  variables = jax.tree_util.tree_map(  # Non-zero logits.
      lambda x: x + 0.1 * rng.standard_normal(x.shape, np.float32), variables)

  @jax.jit
  def evaluate(batch):
    inputs, kwargs, targets = objective.prepare(batch, jax.random.PRNGKey(0), False)
    _, weight, metrics = objective.score(model.apply(variables, inputs, **kwargs), targets)
    return metrics["bits_per_byte"], weight

  bits = weight = 0.0
  for batch in input_pipeline.make_eval_iterator(config.data, global_batch_size=16):
    batch_bits, batch_weight = evaluate(batch)
    bits, weight = bits + float(batch_bits), weight + float(batch_weight)
  # Directly: every document from its start, right-padded (causal: later PADs change nothing).
  rows = np.full((len(EVAL_DOCS), 65), PAD, np.int32)
  for row, doc in zip(rows, EVAL_DOCS):
    tokens = [EOS, *TOKENIZER.encode(doc), EOS]
    row[:len(tokens)] = tokens
  logits = np.asarray(jax.jit(model.apply)(variables, rows[:, :-1]), np.float64)
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  nats = -np.take_along_axis(log_probs, rows[:, 1:, None], 2)[..., 0]
  scored = rows[:, 1:] != PAD
  assert weight == scored.sum() == sum(len(doc.encode("utf-8")) + 1 for doc in EVAL_DOCS)
  np.testing.assert_allclose(bits / weight, nats[scored].sum() / weight / np.log(2), rtol=1e-5)
