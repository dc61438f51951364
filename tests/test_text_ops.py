"""text_ops: tf.data tokenization equals BytesTokenizer; packing and padding equal numpy; eval
windows score each token once with its block's context."""

import numpy as np
import pytest
import tensorflow as tf

from perceiver_jax.data import text_ops
from perceiver_jax.data.tokenizer import EOS, PAD, BytesTokenizer

TOKENIZER = BytesTokenizer()
CORPUS = ["hello world", "", "héllo wörld ✓", "日本語 🚀 text", "x",
          "a somewhat longer document"]


def _documents(corpus=CORPUS):
  return tf.data.Dataset.from_tensor_slices(corpus).map(text_ops.tokenize)


def _np_pack(corpus, max_seq_len):
  """Reference: documents + EOS concatenated, cut into rows, the last padded with PAD."""
  tokens = np.concatenate([TOKENIZER.encode(text, add_eos=True) for text in corpus])
  num_rows = -(-len(tokens) // max_seq_len)
  padded = np.full(num_rows * max_seq_len, PAD, np.int32)
  padded[:len(tokens)] = tokens
  return padded.reshape(num_rows, max_seq_len)


def test_tokenize_matches_bytes_tokenizer_on_unicode():
  for text in CORPUS + ["\x00\xff", "Ünïcödé ∑ 𝔘"]:
    ids = text_ops.tokenize(tf.constant(text)).numpy()
    assert ids.dtype == np.int32
    np.testing.assert_array_equal(ids, TOKENIZER.encode(text))


def test_tokenize_batch_gives_one_ragged_row_per_string():
  ids = text_ops.tokenize(tf.constant(CORPUS))
  assert isinstance(ids, tf.RaggedTensor) and ids.dtype == tf.int32
  for row, text in zip(ids.to_list(), CORPUS):
    np.testing.assert_array_equal(row, TOKENIZER.encode(text))


def test_tokenize_rejects_a_matrix_of_strings():
  with pytest.raises(ValueError, match="tokenize: text must be"):
    text_ops.tokenize(tf.constant([["a", "b"]]))


def test_pad_or_truncate_matches_numpy():
  ids = TOKENIZER.encode("héllo")  # 6 ids.
  for length in (1, 4, 6, 9):
    expected = np.zeros(length, np.int32)
    expected[:min(length, len(ids))] = ids[:length]
    out = text_ops.pad_or_truncate(tf.constant(ids), length)
    assert out.shape == (length,)
    np.testing.assert_array_equal(out.numpy(), expected)
  with pytest.raises(ValueError, match="max_seq_len must be >= 1"):
    text_ops.pad_or_truncate(tf.constant(ids), 0)


@pytest.mark.parametrize("max_seq_len", [1, 5, 16, 200])
def test_pack_concatenates_documents_with_eos_and_pads_the_last_row(max_seq_len):
  rows = np.stack(list(text_ops.pack(_documents(), max_seq_len).as_numpy_iterator()))
  expected = _np_pack(CORPUS, max_seq_len)
  assert rows.dtype == np.int32
  np.testing.assert_array_equal(rows, expected)
  # Every byte of every document is there once, and one EOS per document.
  assert (rows == EOS).sum() == len(CORPUS)
  assert (rows > PAD).sum() == sum(len(t.encode("utf-8")) + 1 for t in CORPUS)


@pytest.mark.parametrize("max_seq_len", [1, 5, 16, 200])
def test_count_packed_rows_equals_the_rows_pack_makes(max_seq_len):
  for corpus in (CORPUS, CORPUS[::-1], ["abcd"] * 4):  # The last: 20 tokens, exact for 5.
    texts = tf.data.Dataset.from_tensor_slices(corpus)
    rows = len(list(text_ops.pack(_documents(corpus), max_seq_len).as_numpy_iterator()))
    assert text_ops.count_packed_rows(texts, max_seq_len) == rows
  with pytest.raises(ValueError, match="scalar strings"):
    text_ops.count_packed_rows(_documents(), 5)


def test_pack_of_an_endless_stream_cuts_rows_across_repeats():
  rows = np.stack(list(text_ops.pack(_documents().repeat(), 7).take(20).as_numpy_iterator()))
  np.testing.assert_array_equal(rows, _np_pack(CORPUS * 10, 7)[:20])


def test_pack_rejects_text_and_bad_lengths():
  with pytest.raises(ValueError, match="map text_ops.tokenize"):
    text_ops.pack(tf.data.Dataset.from_tensor_slices(CORPUS), 8)
  with pytest.raises(ValueError, match="max_seq_len must be >= 1"):
    text_ops.pack(_documents(), 0)


def _scored(windows):
  """[(context, target)] of every scored position of eval windows, in order; the context is
  the window's ids before the target, PAD stripped (checked to be left padding)."""
  scored = []
  for window in windows:
    ids, target_mask = window["ids"], window["target_mask"]
    real = np.flatnonzero(ids != PAD)
    assert real.size and np.array_equal(real, np.arange(real[0], len(ids)))  # Left padding.
    for position in np.flatnonzero(target_mask):
      scored.append((tuple(ids[real[0]:position + 1]), int(ids[position + 1])))
  return scored


@pytest.mark.parametrize("max_seq_len, block_size", [(8, 3), (8, 7), (16, 4), (40, 1)])
def test_eval_windows_score_each_token_once_with_the_blocks_context(max_seq_len, block_size):
  corpus = CORPUS + ["z" * 23]
  windows = list(text_ops.eval_windows(_documents(corpus), max_seq_len,
                                       block_size).as_numpy_iterator())
  assert all(w["ids"].shape == (max_seq_len,) and w["ids"].dtype == np.int32 and
             w["target_mask"].shape == (max_seq_len - 1,) and
             w["target_mask"].dtype == np.float32 for w in windows)
  expected = []  # Independently: target j of [EOS] + doc + [EOS] sees the tokens before it
  for text in corpus:  # from the start of its block's window on.
    tokens = [EOS] + list(TOKENIZER.encode(text)) + [EOS]
    num_targets = len(tokens) - 1
    for j in range(1, num_targets + 1):
      window_end = min(-(-j // block_size) * block_size, num_targets)
      context = tokens[max(0, window_end - max_seq_len + 1):j]
      assert len(context) >= min(j, max_seq_len - block_size)  # The promised context.
      expected.append((tuple(context), tokens[j]))
  assert _scored(windows) == expected
  assert sum(w["target_mask"].sum() for w in windows) == sum(
      len(t.encode("utf-8")) + 1 for t in corpus)
  texts = tf.data.Dataset.from_tensor_slices(corpus)
  assert text_ops.count_eval_windows(texts, block_size) == len(windows)


def test_eval_windows_reject_bad_block_sizes():
  for block_size in (0, 8):
    with pytest.raises(ValueError, match=r"block_size must be in \[1, max_seq_len - 1 = 7\]"):
      text_ops.eval_windows(_documents(), 8, block_size)
  with pytest.raises(ValueError, match="block_size must be >= 1"):
    text_ops.count_eval_windows(tf.data.Dataset.from_tensor_slices(CORPUS), 0)
