"""BytesTokenizer: UTF-8 round trips, the 6-id offset and special ids."""

import numpy as np

from perceiver_jax.data.tokenizer import BOS, EOS, BytesTokenizer

TOKENIZER = BytesTokenizer()


def test_vocabulary_and_special_ids():
  t = TOKENIZER
  assert t.vocab_size == 262 and t.num_special == 6
  assert (t.pad_id, t.bos_id, t.eos_id, t.mask_id, t.cls_id, t.sep_id) == (0, 1, 2, 3, 4, 5)


def test_ids_are_bytes_offset_by_six():
  np.testing.assert_array_equal(TOKENIZER.encode("Ab\x00"), [65 + 6, 98 + 6, 0 + 6])
  ids = TOKENIZER.encode("é")  # Two UTF-8 bytes.
  np.testing.assert_array_equal(ids, np.frombuffer("é".encode(), np.uint8) + 6)
  assert ids.dtype == np.int32


def test_round_trip_ascii_and_multibyte_utf8():
  for text in ["hello world", "héllo wörld ✓", "日本語 🚀", ""]:
    ids = TOKENIZER.encode(text)
    assert len(ids) == len(text.encode("utf-8"))
    assert ids.min(initial=6) >= 6 and ids.max(initial=261) <= 261
    assert TOKENIZER.decode(ids) == text


def test_bos_eos_flags_and_decode_drops_specials():
  ids = TOKENIZER.encode("hi", add_bos=True, add_eos=True)
  np.testing.assert_array_equal(ids, [BOS, ord("h") + 6, ord("i") + 6, EOS])
  assert TOKENIZER.decode(ids) == "hi"
  assert TOKENIZER.decode([0, 3, ord("a") + 6, 4, 5, ord("b") + 6, 0, 0]) == "ab"


def test_decode_of_invalid_utf8_does_not_raise():
  text = TOKENIZER.decode([0xFF + 6, 0xC3 + 6, ord("x") + 6])  # Invalid byte, truncated pair.
  assert text.endswith("x") and "\ufffd" in text

