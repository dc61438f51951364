"""TextAdapter: byte (or token) ids -> embeddings plus trainable position embeddings.

ids [batch, length] (int) -> embedding[ids] + position_embeddings[:length] -> [batch, length,
num_channels]. Any length <= max_seq_len works; the first `length` positions are used.
`attend(x)` maps [batch, outputs, num_channels] to logits x @ embedding^T [batch, outputs,
vocab_size], so a masked-language-model head can tie its weights to the input embedding.
"""

import flax.linen as nn
import jax.numpy as jnp

from perceiver_jax.nn.model_stats import Stats
from perceiver_jax.data.tokenizer import VOCAB_SIZE
from perceiver_jax.nn.typing import DType
from perceiver_jax.nn.validation import check_positive


class TextAdapter(nn.Module):
  """Token embedding + learned positions; see the module docstring."""
  num_channels: int
  vocab_size: int = VOCAB_SIZE
  max_seq_len: int = 2048
  init_scale: float = 0.02
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32

  def __post_init__(self):
    check_positive(self, "num_channels", "vocab_size", "max_seq_len")
    super().__post_init__()

  def setup(self):
    init = nn.initializers.truncated_normal(self.init_scale)
    self.embedding = nn.Embed(self.vocab_size, self.num_channels, dtype=self.dtype,
                              param_dtype=self.param_dtype, embedding_init=init)
    self.position_embeddings = self.param("position_embeddings", init,
                                          (self.max_seq_len, self.num_channels), self.param_dtype)

  def __call__(self, inputs, deterministic: bool = True) -> jnp.ndarray:
    del deterministic  # No dropout.
    if inputs.ndim != 2:
      raise ValueError(f"TextAdapter expects ids [batch, length], got shape {inputs.shape}.")
    length = inputs.shape[1]
    if length > self.max_seq_len:
      raise ValueError(
          f"TextAdapter got {length} tokens but TextAdapter.max_seq_len={self.max_seq_len}; "
          "truncate the inputs or raise max_seq_len.")
    return self.embedding(inputs) + self.position_embeddings[:length].astype(self.dtype)

  def attend(self, x: jnp.ndarray) -> jnp.ndarray:
    """Logits [..., vocab_size] = x [..., num_channels] @ embedding^T (weights tied)."""
    return self.embedding.attend(x)

  @nn.nowrap
  def stats(self, input_shape) -> Stats:
    """Ids [length] -> embeddings [length, num_channels] (token and position tables)."""
    (length,) = input_shape
    if length > self.max_seq_len:
      raise ValueError(f"{length} tokens exceed TextAdapter.max_seq_len={self.max_seq_len}.")
    params = (self.vocab_size + self.max_seq_len) * self.num_channels
    return Stats(params, 0, (length, self.num_channels))
