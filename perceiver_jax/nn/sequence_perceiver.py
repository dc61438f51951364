"""SequencePerceiver: Edifice's Perceiver (an Elixir library) as a PerceiverEncoder.

inputs [batch, seq, input_dim] (+ pad_mask [batch, seq], True = real input)
  -> num_latents learned latents [num_latents, latent_dim] cross-attend the sequence
     num_cross_layers times, each cross-attention followed by num_layers // num_cross_layers
     self-attention layers (PerceiverEncoder; MLPs 4 x latent_dim wide, num_heads heads in
     every attention, `dropout` after every attention and MLP)
  -> LayerNorm -> mean over the latents -> [batch, latent_dim] (`output_size`).

Weights are shared as the encoder shares them: cross-attentions 2..num_cross_layers share one
set, and every group of self-attention layers shares one (the original Perceiver's sharing), so
more cross-attention passes add FLOPs, not parameters. The fields' defaults are Edifice's
recommended configuration (`recommended_defaults()`).
"""

import dataclasses
from typing import Any, Dict

import flax.linen as nn
import jax.numpy as jnp

from perceiver_jax.nn.encoder import PerceiverEncoder
from perceiver_jax.nn.layers import layer_norm
from perceiver_jax.nn.model_stats import Stats, layer_norm_stats
from perceiver_jax.nn.typing import DType
from perceiver_jax.nn.validation import check_positive, check_rate

MLP_WIDENING_FACTOR = 4  # Edifice's feed-forward blocks are 4 x latent_dim wide.


class SequencePerceiver(nn.Module):
  """[batch, seq, input_dim] (+ pad_mask [batch, seq]) -> [batch, latent_dim]; see the module
  docstring."""
  input_dim: int
  latent_dim: int = 256
  num_latents: int = 64
  num_layers: int = 4
  num_cross_layers: int = 1
  num_heads: int = 4
  dropout: float = 0.1
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32

  def __post_init__(self):
    check_positive(self, "input_dim", "latent_dim", "num_latents", "num_layers",
                   "num_cross_layers", "num_heads")
    check_rate(self, "dropout")
    if self.latent_dim % self.num_heads:
      raise ValueError(
          f"SequencePerceiver.latent_dim={self.latent_dim} is not divisible by "
          f"SequencePerceiver.num_heads={self.num_heads}; set latent_dim to a multiple of it.")
    if self.num_layers % self.num_cross_layers:
      raise ValueError(
          f"SequencePerceiver.num_layers={self.num_layers} is not a multiple of "
          f"SequencePerceiver.num_cross_layers={self.num_cross_layers}: each cross-attention is "
          "followed by num_layers // num_cross_layers self-attention layers; set num_layers to a "
          "multiple of num_cross_layers.")
    super().__post_init__()

  @classmethod
  def recommended_defaults(cls) -> Dict[str, Any]:
    """Edifice's recommended configuration for sequences (the fields' defaults)."""
    return {field.name: field.default for field in dataclasses.fields(cls)
            if field.name in ("latent_dim", "num_latents", "num_layers", "num_cross_layers",
                              "num_heads", "dropout")}

  @property
  def output_size(self) -> int:
    """The width of the pooled output: latent_dim."""
    return self.latent_dim

  @nn.nowrap
  def _encoder(self, name=None) -> PerceiverEncoder:
    return PerceiverEncoder(
        num_latents=self.num_latents, num_latent_channels=self.latent_dim,
        num_cross_attention_layers=self.num_cross_layers,
        num_self_attention_blocks=self.num_cross_layers,
        num_self_attention_layers_per_block=self.num_layers // self.num_cross_layers,
        num_cross_attention_heads=self.num_heads, num_self_attention_heads=self.num_heads,
        cross_attention_qk_channels=self.latent_dim, cross_attention_v_channels=self.latent_dim,
        cross_attention_widening_factor=MLP_WIDENING_FACTOR,
        self_attention_widening_factor=MLP_WIDENING_FACTOR, dropout_rate=self.dropout,
        dtype=self.dtype, param_dtype=self.param_dtype, name=name)

  @nn.nowrap
  def _check_input_shape(self, shape):
    if len(shape) != 3 or shape[-1] != self.input_dim:
      raise ValueError(
          f"SequencePerceiver expects inputs [batch, seq, input_dim={self.input_dim}], got shape "
          f"{tuple(shape)}; set SequencePerceiver.input_dim to the inputs' last dim.")

  @nn.compact
  def __call__(self, inputs, pad_mask=None, deterministic: bool = True):
    self._check_input_shape(inputs.shape)
    latents = self._encoder(name="encoder")(inputs, pad_mask, deterministic)
    normed = layer_norm(self.param_dtype, "final_norm")(latents)
    return jnp.mean(normed, axis=1).astype(self.dtype)

  @nn.nowrap
  def stats(self, input_shape) -> Stats:
    """Parameters and FLOPs for a sequence [seq, input_dim] -> [latent_dim]."""
    self._check_input_shape((None,) + tuple(input_shape))
    encoder = self._encoder().stats(tuple(input_shape))
    total = encoder + layer_norm_stats(encoder.output_shape)
    return Stats(total.params, total.flops, (self.latent_dim,))
