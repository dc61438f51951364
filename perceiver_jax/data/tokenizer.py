"""Byte-level tokenizer of Perceiver IO: 6 special ids followed by the 256 byte values.

ids: PAD 0, BOS 1, EOS 2, MASK 3, CLS 4, SEP 5, byte b -> b + 6; vocabulary 262.
`encode` turns UTF-8 text into ids, `decode` drops special ids and undoes the offset
(invalid UTF-8 from a model's output is replaced, never raised).
"""

from typing import Sequence

import numpy as np

PAD, BOS, EOS, MASK, CLS, SEP = range(6)
NUM_SPECIAL = 6
VOCAB_SIZE = NUM_SPECIAL + 256


class BytesTokenizer:
  """Encodes text to byte ids and back; see the module docstring."""
  pad_id, bos_id, eos_id, mask_id, cls_id, sep_id = PAD, BOS, EOS, MASK, CLS, SEP
  vocab_size = VOCAB_SIZE
  num_special = NUM_SPECIAL

  def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> np.ndarray:
    ids = np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32) + NUM_SPECIAL
    return np.concatenate([[BOS] * add_bos, ids, [EOS] * add_eos]).astype(np.int32)

  def decode(self, ids: Sequence[int]) -> str:
    ids = np.asarray(ids).reshape(-1)
    data = (ids[ids >= NUM_SPECIAL] - NUM_SPECIAL).astype(np.uint8).tobytes()
    return data.decode("utf-8", errors="replace")
