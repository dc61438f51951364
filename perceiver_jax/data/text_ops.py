"""tf.data text ops for byte-level language modelling, matching `perceiver_jax.data.tokenizer`.

- `tokenize`: UTF-8 strings -> byte ids (byte b -> b + 6): a scalar string gives int32 [n],
  strings [batch] give an int32 RaggedTensor [batch, None].
- `pad_or_truncate`: int32 [n] -> [max_seq_len], cut or right-padded with PAD (0).
- `pack`: a dataset of documents (int32 [n] each) -> a dataset of int32 [max_seq_len] rows cut
  from the documents concatenated, each followed by EOS (2); a finite dataset's last row is
  padded with PAD, so no token is lost.
- `count_packed_rows`: how many rows `pack` makes of a finite dataset of texts, from their
  byte lengths alone: ceil(sum(bytes + 1) / max_seq_len), whatever the documents' order.
- `eval_windows`: documents (int32 [n] each) -> language-model eval windows that score every
  token of each document once: {'ids': int32 [max_seq_len], 'target_mask': float32
  [max_seq_len - 1]}. A document is read as training packs it, [EOS] + ids + [EOS]; its n + 1
  targets (the ids and the closing EOS) fall in blocks of `block_size`, and a block's window
  is the max_seq_len ids ending at its last target, left-padded with PAD where the document
  starts inside the window. `target_mask` marks the block's targets (the last ones of the
  window), so each has at least max_seq_len - block_size earlier ids of context (counting
  the window's first id), or the whole document before it.
- `count_eval_windows`: how many windows `eval_windows` makes of a finite dataset of texts:
  sum(ceil((bytes + 1) / block_size)), from byte lengths alone.
"""

from perceiver_jax.data.tensorflow_cpu import tf
from perceiver_jax.data.tokenizer import EOS, NUM_SPECIAL, PAD


def _check_length(max_seq_len: int, op: str):
  if max_seq_len < 1:
    raise ValueError(f"{op}: max_seq_len must be >= 1, got {max_seq_len}.")


def _bytes_to_ids(byte_strings):
  """One-byte strings [n] -> int32 ids [n]."""
  values = tf.reshape(tf.io.decode_raw(byte_strings, tf.uint8), [-1])
  return tf.cast(values, tf.int32) + NUM_SPECIAL


def tokenize(text):
  """Byte ids of UTF-8 text, as `BytesTokenizer().encode`; see the module docstring."""
  text = tf.convert_to_tensor(text, tf.string)
  if text.shape.rank not in (0, 1):
    raise ValueError(f"tokenize: text must be a string or strings [batch], got shape "
                     f"{text.shape}.")
  return tf.ragged.map_flat_values(_bytes_to_ids, tf.strings.bytes_split(text))


def pad_or_truncate(ids, max_seq_len: int):
  """int32 [n] -> [max_seq_len]: the first max_seq_len ids, right-padded with PAD."""
  _check_length(max_seq_len, "pad_or_truncate")
  ids = ids[:max_seq_len]
  ids = tf.pad(ids, [[0, max_seq_len - tf.shape(ids)[0]]], constant_values=PAD)
  return tf.ensure_shape(ids, [max_seq_len])


def pack(ds: tf.data.Dataset, max_seq_len: int) -> tf.data.Dataset:
  """Documents (int32 [n]) -> rows int32 [max_seq_len]; see the module docstring."""
  _check_length(max_seq_len, "pack")
  spec = ds.element_spec
  if not isinstance(spec, tf.TensorSpec) or spec.shape.rank != 1 or spec.dtype != tf.int32:
    raise ValueError(f"pack: ds must yield int32 ids [n] (one document each), got {spec}; "
                     "map text_ops.tokenize over the text first.")
  documents = ds.map(lambda ids: (tf.concat([ids, [EOS]], 0), False))
  flush = tf.data.Dataset.from_tensors((tf.zeros([0], tf.int32), True))

  def cut_rows(carry, element):
    ids, is_flush = element
    tokens = tf.concat([carry, ids], 0)
    length = tf.shape(tokens)[0]
    # At the end of a finite dataset, pad the remaining tokens to a whole row.
    padded_length = tf.where(is_flush, -(-length // max_seq_len) * max_seq_len, length)
    tokens = tf.pad(tokens, [[0, padded_length - length]], constant_values=PAD)
    num_rows = padded_length // max_seq_len
    rows = tf.reshape(tokens[:num_rows * max_seq_len], [num_rows, max_seq_len])
    return tokens[num_rows * max_seq_len:], rows

  rows = documents.concatenate(flush).scan(tf.zeros([0], tf.int32), cut_rows)
  return rows.unbatch()


def count_packed_rows(texts: tf.data.Dataset, max_seq_len: int) -> int:
  """Rows `pack` makes of the tokenized texts (scalar strings) of a finite dataset, counted
  from byte lengths without tokenizing: each document adds its bytes and an EOS."""
  _check_length(max_seq_len, "count_packed_rows")
  if texts.element_spec != tf.TensorSpec([], tf.string):
    raise ValueError(f"count_packed_rows: texts must yield scalar strings, got "
                     f"{texts.element_spec}.")
  tokens = texts.reduce(tf.constant(0, tf.int64), lambda total, text: total + 1 + tf.cast(
      tf.strings.length(text, unit="BYTE"), tf.int64))
  return -(-int(tokens) // max_seq_len)


def _check_block_size(block_size: int, max_seq_len: int, op: str):
  if not 1 <= block_size < max_seq_len:
    raise ValueError(f"{op}: block_size must be in [1, max_seq_len - 1 = {max_seq_len - 1}], "
                     f"got {block_size}.")


def eval_windows(ds: tf.data.Dataset, max_seq_len: int, block_size: int) -> tf.data.Dataset:
  """Documents (int32 [n]) -> eval windows; see the module docstring."""
  _check_length(max_seq_len, "eval_windows")
  _check_block_size(block_size, max_seq_len, "eval_windows")
  context = max_seq_len - 1

  def windows(ids):
    tokens = tf.concat([[EOS], ids, [EOS]], 0)  # Targets: tokens[1:].
    num_targets = tf.shape(ids)[0] + 1
    starts = tf.range(0, num_targets, block_size)  # Each block's first target (in tokens[1:]).
    ends = tf.minimum(starts + block_size, num_targets)  # Its last target is tokens[end].
    # tokens[end - context:end + 1], left-padded: padded[i] = tokens[i - context].
    padded = tf.concat([tf.fill([context], PAD), tokens], 0)
    rows = tf.gather(padded, ends[:, None] + tf.range(max_seq_len)[None, :])
    scored = tf.range(context)[None, :] >= context - (ends - starts)[:, None]
    return tf.data.Dataset.from_tensor_slices(
        {"ids": tf.ensure_shape(rows, [None, max_seq_len]),
         "target_mask": tf.ensure_shape(tf.cast(scored, tf.float32), [None, context])})

  return ds.flat_map(windows)


def count_eval_windows(texts: tf.data.Dataset, block_size: int) -> int:
  """Windows `eval_windows` makes of the texts (scalar strings) of a finite dataset, counted
  from byte lengths without tokenizing."""
  if block_size < 1:
    raise ValueError(f"count_eval_windows: block_size must be >= 1, got {block_size}.")
  if texts.element_spec != tf.TensorSpec([], tf.string):
    raise ValueError(f"count_eval_windows: texts must yield scalar strings, got "
                     f"{texts.element_spec}.")
  return int(texts.reduce(tf.constant(0, tf.int64), lambda total, text: total + (
      tf.cast(tf.strings.length(text, unit="BYTE"), tf.int64) + block_size) // block_size))
