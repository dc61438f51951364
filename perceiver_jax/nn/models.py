"""Whole models: the Perceiver classifier and the Perceiver IO composition.

`Perceiver`: inputs [batch, *index_dims, channels] (+ pad_mask [batch, *index_dims]) ->
  concat Fourier features of the index grid -> flatten to [batch, prod(index_dims), channels']
  -> PerceiverEncoder -> classification decoder (ProjectionDecoder or ClassificationDecoder)
  -> logits [batch, num_classes].

`PerceiverIO`: inputs -> input_adapter -> [batch, index, channels] -> PerceiverEncoder ->
  latents; output_query(adapted inputs) -> queries [batch, outputs, query_channels];
  PerceiverDecoder(queries, latents) -> output_adapter -> task outputs.
  Adapter protocol (the task adapters are linen modules following it):
    input_adapter(inputs, deterministic=...) -> [batch, index, channels]
    output_query(adapted_inputs)              -> [batch, outputs, query_channels]
    output_adapter(decoded, deterministic=...) -> outputs
  A missing input or output adapter is the identity.
  Subsampled decoding: `subsampled_points` (int [k] or [batch, k] indices into the output
  queries; a {modality: indices} mapping for MultimodalQuery) is passed on as
  output_query(adapted_inputs, subsampled_points=...) -> [batch, k, q] and
  output_adapter(decoded, ..., subsampled_points=...); without it both are called as above.
  `input_masked` (e.g. {modality: bool [batch]}), when given, is passed on as
  input_adapter(inputs, deterministic=..., masked=...) (MultimodalAdapter's mask override).
  An output adapter with class attribute `uses_input_adapter = True` (e.g. an MLM head tied to
  the input embedding) also receives `input_adapter=` the model's (bound) input adapter.

Both compose modules given as fields, so each part keeps its own dtype and param_dtype. An
empty batch, or inputs whose channels (patch or frame sizes) differ from those the parameters
were initialised for, raise a ValueError naming the expected input shape (checked on static
shapes while tracing, so nothing runs per step).
"""

from typing import Optional, Sequence

import flax.linen as nn
import numpy as np

from perceiver_jax.nn import model_stats
from perceiver_jax.nn.decoder import PerceiverDecoder
from perceiver_jax.nn.encoder import PerceiverEncoder
from perceiver_jax.nn.model_stats import Stats
from perceiver_jax.nn.position_encoding import concat_fourier_features, fourier_num_channels
from perceiver_jax.nn.validation import check_batch, params_fit_inputs


class Perceiver(nn.Module):
  """Classifier over any [batch, *index_dims, channels] input with Fourier features."""
  encoder: PerceiverEncoder
  decoder: nn.Module
  num_frequency_bands: int = 64
  max_resolution: Optional[Sequence[int]] = None  # Defaults to the input's index dims.
  concat_pos: bool = True
  sine_only: bool = False

  @nn.compact
  def __call__(self, inputs, pad_mask=None, deterministic: bool = True):
    if inputs.ndim < 3:
      raise ValueError(
          f"Perceiver expects inputs [batch, *index_dims, channels], got shape {inputs.shape}.")
    check_batch("Perceiver", inputs)
    self._check_channels(inputs)
    x = concat_fourier_features(inputs, self.num_frequency_bands, self.max_resolution,
                                self.concat_pos, self.sine_only, self.encoder.dtype)
    if pad_mask is not None:
      if pad_mask.shape != inputs.shape[:-1]:
        raise ValueError(
            f"pad_mask must have shape [batch, *index_dims]={inputs.shape[:-1]}, got {pad_mask.shape}.")
      pad_mask = pad_mask.reshape(x.shape[:2])
    latents = self.encoder(x, pad_mask, deterministic)
    return self.decoder(latents, deterministic)

  def _check_channels(self, inputs):
    """When applied with parameters: inputs have the channels they were initialised for."""
    if not self.has_variable("params", "encoder"):
      return
    encoder = self.variables["params"]["encoder"]
    layer = encoder.get("cross_attention_first") or encoder["cross_attention_shared"]
    channels = layer["input_norm"]["scale"].shape[-1] - fourier_num_channels(
        inputs.ndim - 2, self.num_frequency_bands, self.concat_pos, self.sine_only)
    if inputs.shape[-1] != channels:
      raise ValueError(f"Perceiver's parameters were initialised for inputs [batch, "
                       f"*index_dims, {channels}] ({inputs.ndim - 2} index dims), got shape "
                       f"{inputs.shape}.")

  @nn.nowrap
  def stats(self, input_shape) -> Stats:
    """Parameters and FLOPs for inputs [*index_dims, channels] -> logits [num_classes]."""
    index_dims, channels = tuple(input_shape[:-1]), input_shape[-1]
    channels += fourier_num_channels(len(index_dims), self.num_frequency_bands, self.concat_pos,
                                     self.sine_only)
    encoder = model_stats.stats(self.encoder, (int(np.prod(index_dims)), channels))
    return encoder + model_stats.stats(self.decoder, encoder.output_shape)


class PerceiverIO(nn.Module):
  """input_adapter -> encoder -> (output_query, latents) -> decoder -> output_adapter."""
  encoder: PerceiverEncoder
  output_query: nn.Module
  decoder: PerceiverDecoder
  input_adapter: Optional[nn.Module] = None
  output_adapter: Optional[nn.Module] = None

  @nn.compact
  def __call__(self, inputs, pad_mask=None, deterministic: bool = True, subsampled_points=None,
               input_masked=None):
    check_batch("PerceiverIO", inputs)
    expected = ("[batch, index, channels]" if self.input_adapter is None
                else f"of the shape {type(self.input_adapter).__name__} takes")
    with params_fit_inputs("PerceiverIO", inputs, expected):
      return self._call(inputs, pad_mask, deterministic, subsampled_points, input_masked)

  def _call(self, inputs, pad_mask, deterministic, subsampled_points, input_masked):
    x = inputs
    if self.input_adapter is not None:
      masked = {} if input_masked is None else {"masked": input_masked}
      x = self.input_adapter(inputs, deterministic=deterministic, **masked)
    if x.ndim != 3:
      raise ValueError(
          "the input adapter must return [batch, index, channels], got shape "
          f"{x.shape}; give PerceiverIO an input_adapter that flattens the index dims.")
    latents = self.encoder(x, pad_mask, deterministic)
    if subsampled_points is None:
      queries, adapter_kwargs = self.output_query(x), {}
    else:
      queries = self.output_query(x, subsampled_points=subsampled_points)
      adapter_kwargs = {"subsampled_points": subsampled_points}
    decoded = self.decoder(queries, latents, deterministic)
    if self.output_adapter is None:
      return decoded
    if getattr(self.output_adapter, "uses_input_adapter", False):
      adapter_kwargs["input_adapter"] = self.input_adapter
    return self.output_adapter(decoded, deterministic=deterministic, **adapter_kwargs)

  @nn.nowrap
  def stats(self, input_shape) -> Stats:
    """Parameters and FLOPs of every part for inputs of `input_shape` (what the input adapter
    takes; [index, channels] without one) -> the output adapter's output shape."""
    adapted = Stats(0, 0, tuple(input_shape))
    if self.input_adapter is not None:
      adapted = model_stats.stats(self.input_adapter, input_shape)
    encoder = model_stats.stats(self.encoder, adapted.output_shape)
    query = model_stats.stats(self.output_query, adapted.output_shape)
    decoded = model_stats.stats(self.decoder, query.output_shape, encoder.output_shape)
    total = adapted + encoder + query + decoded
    if self.output_adapter is not None:
      total = total + model_stats.stats(self.output_adapter, decoded.output_shape)
    return total
