"""TextAdapter: byte (or token) ids -> embeddings plus trainable position embeddings.

ids [batch, length] (int) -> embedding[ids] + position_embeddings[:length] -> [batch, length,
num_channels]. Any length <= max_seq_len works; the first `length` positions are used.

Options (the defaults are the Perceiver IO paper's adapter):
- `position_init`: 'normal' (truncated normal, std init_scale) or 'sinusoidal' (the
  Transformer's sin/cos table at the same per-channel std, still trained): nearby positions
  start with similar embeddings, so attention can tell positions apart from the first step.
- `conv_width`: 0 (none) or an odd width w: a learned 1-D convolution over the token
  embeddings (centred, zero-padded at the row ends) is added, so each position also carries
  its (w - 1) / 2 neighbours on either side (CANINE's local context for byte models).
`attend(x)` maps [batch, outputs, num_channels] to logits x @ embedding^T [batch, outputs,
vocab_size], so a masked-language-model head can tie its weights to the input embedding.
"""

import flax.linen as nn
import jax.numpy as jnp

from perceiver_jax.nn.model_stats import Stats
from perceiver_jax.nn.position_encoding import sinusoidal_table
from perceiver_jax.data.tokenizer import VOCAB_SIZE
from perceiver_jax.nn.typing import DType
from perceiver_jax.nn.validation import check_choice, check_positive

POSITION_INITS = ("normal", "sinusoidal")


class TextAdapter(nn.Module):
  """Token embedding + learned positions; see the module docstring."""
  num_channels: int
  vocab_size: int = VOCAB_SIZE
  max_seq_len: int = 2048
  init_scale: float = 0.02
  position_init: str = "normal"
  conv_width: int = 0
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32

  def __post_init__(self):
    check_positive(self, "num_channels", "vocab_size", "max_seq_len")
    check_choice(self, "position_init", POSITION_INITS)
    if not isinstance(self.conv_width, int) or self.conv_width < 0 or (
        self.conv_width and self.conv_width % 2 == 0):
      raise ValueError(f"TextAdapter.conv_width must be 0 (no convolution) or an odd width "
                       f"(centred on each position, e.g. 3 or 5), got {self.conv_width!r}.")
    super().__post_init__()

  def setup(self):
    init = nn.initializers.truncated_normal(self.init_scale)
    self.embedding = nn.Embed(self.vocab_size, self.num_channels, dtype=self.dtype,
                              param_dtype=self.param_dtype, embedding_init=init)
    if self.position_init == "sinusoidal":
      position_init = lambda key, shape, dtype: sinusoidal_table(
          *shape, self.init_scale).astype(dtype)
    else:
      position_init = init
    self.position_embeddings = self.param("position_embeddings", position_init,
                                          (self.max_seq_len, self.num_channels), self.param_dtype)
    if self.conv_width:
      self.conv = nn.Conv(self.num_channels, (self.conv_width,), padding="SAME", use_bias=False,
                          dtype=self.dtype, param_dtype=self.param_dtype)

  def __call__(self, inputs, deterministic: bool = True) -> jnp.ndarray:
    del deterministic  # No dropout.
    if inputs.ndim != 2:
      raise ValueError(f"TextAdapter expects ids [batch, length], got shape {inputs.shape}.")
    length = inputs.shape[1]
    if length > self.max_seq_len:
      raise ValueError(
          f"TextAdapter got {length} tokens but TextAdapter.max_seq_len={self.max_seq_len}; "
          "truncate the inputs or raise max_seq_len.")
    x = self.embedding(inputs)
    if self.conv_width:
      x = x + self.conv(x)
    return x + self.position_embeddings[:length].astype(self.dtype)

  def attend(self, x: jnp.ndarray) -> jnp.ndarray:
    """Logits [..., vocab_size] = x [..., num_channels] @ embedding^T (weights tied)."""
    return self.embedding.attend(x)

  @nn.nowrap
  def stats(self, input_shape) -> Stats:
    """Ids [length] -> embeddings [length, num_channels] (token and position tables)."""
    (length,) = input_shape
    if length > self.max_seq_len:
      raise ValueError(f"{length} tokens exceed TextAdapter.max_seq_len={self.max_seq_len}.")
    params = (self.vocab_size + self.max_seq_len + self.conv_width * self.num_channels
              ) * self.num_channels
    flops = 2 * length * self.conv_width * self.num_channels ** 2
    return Stats(params, flops, (length, self.num_channels))
