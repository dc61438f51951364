"""Analytic parameter counts and forward FLOPs, computed from a model's hyper-parameters.

A model's fields are its configuration, so these need no `init`:

  param_count(model, input_shape) -> int   # == count_params(model.init(...)) exactly
  flops(model, input_shape) -> int         # forward matmul + attention FLOPs per example
  count_params(variables) -> int           # parameters in an initialised variable tree

`input_shape` excludes the batch dim, e.g. (224, 224, 3) for a Perceiver on images,
(index, channels) for PerceiverIO without an input adapter, {modality: shape} for a
multimodal adapter, or one shape per input for a module called on several arrays
(((q_len, dim), (k_len, dim), (v_len, dim)) for PerceiverLayer(q, k, v)). FLOPs count 2 per
multiply-add of every dense projection and of the attention logits and weighted values
(shared weights count once for parameters and once per application for FLOPs); norms,
activations and softmax are left out, so benchmarks compute model FLOPs utilisation the usual way.

Each module computes its own: a method `stats(self, *input_shapes) -> Stats` (decorated
`nn.nowrap`, so it runs on an unbound module) built from the helpers here; composite modules
ask their parts through `stats(part, *shapes)`. This file imports no model, so any module may
import it; a module without a `stats` method is a TypeError.
"""

import dataclasses
import functools
from typing import Mapping, Tuple, Union

import jax
import numpy as np

Shape = Tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Stats:
  """Parameters, forward FLOPs per example and the output shape (no batch dim; a
  {modality: shape} mapping for multimodal outputs)."""
  params: int
  flops: int
  output_shape: Union[Shape, Mapping[str, Shape]]

  def __add__(self, other: "Stats") -> "Stats":
    return Stats(self.params + other.params, self.flops + other.flops, other.output_shape)


def stats(module, *input_shapes) -> Stats:
  """`module.stats(*input_shapes)`: its Stats for inputs of `input_shapes` (no batch dims)."""
  if not callable(getattr(module, "stats", None)):
    raise TypeError(
        f"no analytic stats for {type(module).__name__}; give it a method "
        "stats(self, *input_shapes) -> perceiver_jax.nn.model_stats.Stats (decorated nn.nowrap).")
  return module.stats(*input_shapes)


def dense_stats(d_in: int, d_out: int, tokens: int, bias: bool = True) -> Stats:
  """A Dense layer [tokens, d_in] -> [tokens, d_out] (with a bias unless `bias` is False)."""
  return Stats(d_in * d_out + (d_out if bias else 0), 2 * tokens * d_in * d_out, (tokens, d_out))


def layer_norm_stats(shape: Shape) -> Stats:
  """A LayerNorm (scale and bias) over the last dim of `shape`."""
  return Stats(2 * shape[-1], 0, tuple(shape))


def attention_stats(q_shape: Shape, kv_shape: Shape, module) -> Stats:
  """A MultiHeadAttention `module` on queries [t, c_q] and inputs [s, c_kv] -> [t, out]: four
  projections plus logits and weighted values; where the module folds its key/value
  projections (it says so: `module.folds_kv_projections`) the query is mapped into the input
  space and attends to the inputs, then the value projection applies to t rows."""
  (t, c_q), (s, c_kv) = q_shape, kv_shape
  qk, v = module.channels(c_kv)
  out = module.output_channels or c_q
  bias = module.qkv_bias
  projections = [dense_stats(c_q, qk, t, bias), dense_stats(c_kv, qk, s, bias),
                 dense_stats(c_kv, v, s, bias), dense_stats(v, out, t, module.out_bias)]
  total = functools.reduce(Stats.__add__, projections)
  if module.folds_kv_projections(t, s, c_kv):
    flops = 2 * (t * c_q * qk + t * qk * c_kv + 2 * t * s * c_kv + t * c_kv * v + t * v * out)
    return Stats(total.params, flops, (t, out))
  return Stats(total.params, total.flops + 2 * t * s * (qk + v), (t, out))


def mlp_stats(shape: Shape, widening_factor: int, bias: bool = True) -> Stats:
  """An MLP [tokens, c] -> [tokens, widening_factor * c] -> [tokens, c] (biases unless `bias`
  is False)."""
  tokens, channels = shape
  return dense_stats(channels, widening_factor * channels, tokens, bias) + dense_stats(
      widening_factor * channels, channels, tokens, bias)


def cross_layer_stats(q_shape: Shape, kv_shape: Shape, attention,
                      widening_factor: int) -> Stats:
  """A CrossAttentionLayer whose MultiHeadAttention is `attention`: queries [t, c_q] attend
  to inputs [s, c_kv] -> [t, c_q]."""
  attn = attention_stats(q_shape, kv_shape, attention)
  return (layer_norm_stats(q_shape) + layer_norm_stats(kv_shape) + attn
          + layer_norm_stats(attn.output_shape) + mlp_stats(attn.output_shape, widening_factor))


def self_layer_stats(shape: Shape, attention, widening_factor: int) -> Stats:
  """A SelfAttentionLayer on [t, c] -> [t, c] whose MultiHeadAttention is `attention`."""
  return (layer_norm_stats(shape) + attention_stats(shape, shape, attention)
          + layer_norm_stats(shape) + mlp_stats(shape, widening_factor))


def _input_shapes(input_shape) -> tuple:
  """The stats arguments for `input_shape`: one shape, one {modality: shape} mapping, or
  (for modules called on several arrays) a sequence of shapes, one per array."""
  if isinstance(input_shape, Mapping):
    return ({name: tuple(shape) for name, shape in input_shape.items()},)
  if all(isinstance(size, (int, np.integer)) for size in input_shape):
    return (tuple(input_shape),)
  return tuple(tuple(shape) for shape in input_shape)


def param_count(model, input_shape) -> int:
  """Number of parameters `model.init` creates for inputs of `input_shape` (no batch dim)."""
  return stats(model, *_input_shapes(input_shape)).params


def flops(model, input_shape) -> int:
  """Forward FLOPs per example (matmuls and attention) for inputs of `input_shape`."""
  return stats(model, *_input_shapes(input_shape)).flops


def count_params(variables) -> int:
  """Parameters in `variables` (its 'params' collection when present)."""
  tree = variables.get("params", variables) if hasattr(variables, "get") else variables
  return int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(tree)))
