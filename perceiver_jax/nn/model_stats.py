"""Analytic parameter counts and forward FLOPs, computed from a model's hyper-parameters.

A model's fields are its configuration, so these need no `init`:

  param_count(model, input_shape) -> int   # == count_params(model.init(...)) exactly
  flops(model, input_shape) -> int         # forward matmul + attention FLOPs per example
  count_params(variables) -> int           # parameters in an initialised variable tree

`input_shape` excludes the batch dim, e.g. (224, 224, 3) for a Perceiver on images,
(index, channels) for PerceiverIO without an input adapter, or {modality: shape} for a
multimodal adapter. FLOPs count 2 per multiply-add
of every dense projection and of the attention logits and weighted values (shared weights
count once for parameters and once per application for FLOPs); norms, activations and
softmax are left out, so benchmarks compute model FLOPs utilisation the usual way.

New modules (e.g. task adapters) join by registering with `stats.register`.
"""

import dataclasses
import functools
from typing import Mapping, Sequence, Tuple, Union

import jax
import numpy as np

from perceiver_jax.nn.decoder import (ClassificationDecoder, PerceiverDecoder, ProjectionDecoder,
                                      TrainableQuery)
from perceiver_jax.nn.encoder import PerceiverEncoder
from perceiver_jax.nn.models import Perceiver, PerceiverIO
from perceiver_jax.nn.multi_head_attention import MultiHeadAttention
from perceiver_jax.nn.position_encoding import fourier_num_channels
from perceiver_jax.nn.typing import hyperparameters


@dataclasses.dataclass(frozen=True)
class Stats:
  """Parameters, forward FLOPs per example and the output shape (no batch dim; a
  {modality: shape} mapping for multimodal outputs)."""
  params: int
  flops: int
  output_shape: Union[Tuple[int, ...], Mapping[str, Tuple[int, ...]]]

  def __add__(self, other: "Stats") -> "Stats":
    return Stats(self.params + other.params, self.flops + other.flops, other.output_shape)


def dense_stats(d_in: int, d_out: int, tokens: int) -> Stats:
  """A Dense layer [tokens, d_in] -> [tokens, d_out]."""
  return Stats(d_in * d_out + d_out, 2 * tokens * d_in * d_out, (tokens, d_out))


def _layer_norm(shape) -> Stats:
  return Stats(2 * shape[-1], 0, tuple(shape))


def _attention(q_shape, kv_shape, module: MultiHeadAttention) -> Stats:
  """`module` on queries [t, c_q] and inputs [s, c_kv]: four projections plus logits and
  weighted values; where the module folds its key/value projections
  (`MultiHeadAttention.folds_kv_projections`) the query is mapped into the input space and
  attends to the inputs, then the value projection applies to t rows."""
  (t, c_q), (s, c_kv) = q_shape, kv_shape
  qk, v = module.channels(c_kv)
  out = module.output_channels or c_q
  projections = [dense_stats(c_q, qk, t), dense_stats(c_kv, qk, s), dense_stats(c_kv, v, s),
                 dense_stats(v, out, t)]
  total = functools.reduce(Stats.__add__, projections)
  if module.folds_kv_projections(t, s, c_kv):
    flops = 2 * (t * c_q * qk + t * qk * c_kv + 2 * t * s * c_kv + t * c_kv * v + t * v * out)
    return Stats(total.params, flops, (t, out))
  return Stats(total.params, total.flops + 2 * t * s * (qk + v), (t, out))


def _mlp(shape, widening_factor: int) -> Stats:
  tokens, channels = shape
  return dense_stats(channels, widening_factor * channels, tokens) + dense_stats(
      widening_factor * channels, channels, tokens)


def _cross_layer(q_shape, kv_shape, attention: MultiHeadAttention, widening_factor) -> Stats:
  attn = _attention(q_shape, kv_shape, attention)
  return (_layer_norm(q_shape) + _layer_norm(kv_shape) + attn + _layer_norm(attn.output_shape)
          + _mlp(attn.output_shape, widening_factor))


def _self_layer(shape, attention: MultiHeadAttention, widening_factor) -> Stats:
  return (_layer_norm(shape) + _attention(shape, shape, attention)
          + _layer_norm(shape) + _mlp(shape, widening_factor))


@functools.singledispatch
def stats(module, *input_shapes: Sequence[int]) -> Stats:
  """Analytic Stats of `module` applied to inputs of `input_shapes` (no batch dims)."""
  raise TypeError(
      f"no analytic stats for {type(module).__name__}; register a function with "
      "perceiver_jax.nn.model_stats.stats.register.")


@stats.register
def _(module: PerceiverEncoder, input_shape) -> Stats:
  p, l = module.num_cross_attention_layers, module.num_self_attention_blocks
  latent_shape = (module.num_latents, module.num_latent_channels)
  cross_attention = MultiHeadAttention(
      module.num_cross_attention_heads, module.cross_attention_qk_channels,
      module.cross_attention_v_channels, attention=module.cross_attention_config,
      dtype=module.dtype)
  self_attention = MultiHeadAttention(
      module.num_self_attention_heads, module.self_attention_qk_channels,
      module.self_attention_v_channels, attention=module.attention, dtype=module.dtype)
  cross = _cross_layer(latent_shape, tuple(input_shape), cross_attention,
                       module.cross_attention_widening_factor)
  layer = _self_layer(latent_shape, self_attention, module.self_attention_widening_factor)
  per_block = module.num_self_attention_layers_per_block  # Distinct layers.
  block = Stats(per_block * layer.params, per_block * layer.flops, latent_shape)
  distinct_cross = (1 if p > 1 or module.first_cross_attention_layer_shared else 0) + (
      0 if module.first_cross_attention_layer_shared else 1)
  distinct_blocks = (1 if l > 1 or module.first_self_attention_block_shared else 0) + (
      0 if module.first_self_attention_block_shared else 1)
  latents = Stats(int(np.prod(latent_shape)), 0, latent_shape)
  return Stats(latents.params + distinct_cross * cross.params + distinct_blocks * block.params,
               p * cross.flops + l * block.flops, latent_shape)


@stats.register
def _(module: PerceiverDecoder, query_shape, latent_shape) -> Stats:
  query_shape = tuple(query_shape)
  attention = MultiHeadAttention(module.num_heads, module.qk_channels, module.v_channels,
                                 attention=module.attention, dtype=module.dtype)
  attn = _attention(query_shape, tuple(latent_shape), attention)
  total = _layer_norm(query_shape) + _layer_norm(latent_shape) + attn
  if module.use_mlp:
    total = total + _layer_norm(query_shape) + _mlp(query_shape, module.widening_factor)
  if module.output_channels is not None:
    total = total + dense_stats(query_shape[-1], module.output_channels, query_shape[0])
  return total


@stats.register
def _(module: TrainableQuery, input_shape) -> Stats:
  del input_shape  # Queries depend only on the batch size.
  shape = (module.num_queries, module.num_channels)
  return Stats(int(np.prod(shape)), 0, shape)


@stats.register
def _(module: ClassificationDecoder, latent_shape) -> Stats:
  query = (1, module.num_query_channels or latent_shape[-1])
  decoder = PerceiverDecoder(**dict(hyperparameters(module, PerceiverDecoder),
                                    output_channels=module.num_classes))
  total = Stats(int(np.prod(query)), 0, query) + stats(decoder, query, latent_shape)
  return Stats(total.params, total.flops, (module.num_classes,))


@stats.register
def _(module: ProjectionDecoder, latent_shape) -> Stats:
  dense = dense_stats(latent_shape[-1], module.num_classes, 1)
  return Stats(dense.params, dense.flops, (module.num_classes,))


@stats.register
def _(module: Perceiver, input_shape) -> Stats:
  index_dims, channels = tuple(input_shape[:-1]), input_shape[-1]
  channels += fourier_num_channels(len(index_dims), module.num_frequency_bands,
                                   module.concat_pos, module.sine_only)
  encoder = stats(module.encoder, (int(np.prod(index_dims)), channels))
  return encoder + stats(module.decoder, encoder.output_shape)


@stats.register
def _(module: PerceiverIO, input_shape) -> Stats:
  adapted = Stats(0, 0, tuple(input_shape))
  if module.input_adapter is not None:
    adapted = stats(module.input_adapter, input_shape)
  encoder = stats(module.encoder, adapted.output_shape)
  query = stats(module.output_query, adapted.output_shape)
  decoded = stats(module.decoder, query.output_shape, encoder.output_shape)
  total = adapted + encoder + query + decoded
  if module.output_adapter is not None:
    total = total + stats(module.output_adapter, decoded.output_shape)
  return total


def _as_shape(input_shape):
  """A shape as a tuple; a {modality: shape} mapping as a dict of tuples."""
  if isinstance(input_shape, Mapping):
    return {name: tuple(shape) for name, shape in input_shape.items()}
  return tuple(input_shape)


def param_count(model, input_shape: Sequence[int]) -> int:
  """Number of parameters `model.init` creates for inputs of `input_shape` (no batch dim)."""
  return stats(model, _as_shape(input_shape)).params


def flops(model, input_shape: Sequence[int]) -> int:
  """Forward FLOPs per example (matmuls and attention) for inputs of `input_shape`."""
  return stats(model, _as_shape(input_shape)).flops


def count_params(variables) -> int:
  """Parameters in `variables` (its 'params' collection when present)."""
  tree = variables.get("params", variables) if hasattr(variables, "get") else variables
  return int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(tree)))
