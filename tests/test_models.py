"""Perceiver and PerceiverIO: shapes, Fourier inputs, masks, adapters, gradients, learning."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from perceiver_jax import (ClassificationDecoder, Perceiver, PerceiverDecoder, PerceiverEncoder,
                           PerceiverIO, ProjectionDecoder, TrainableQuery)
from random_params import param_shapes as _shapes, random_data as _data, random_params as _params

BANDS = 2
NUM_CLASSES = 5


def _encoder(**overrides):
  settings = dict(num_latents=4, num_latent_channels=8, num_self_attention_blocks=1,
                  num_self_attention_layers_per_block=1, num_self_attention_heads=2)
  return PerceiverEncoder(**dict(settings, **overrides))


def _init(module, *args):
  """Real initial params; an 'rbg' key compiles much faster on CPU than threefry."""
  return jax.jit(module.init)(jax.random.key(0, impl="rbg"), *args)["params"]


def _fourier_features(index_dims, num_bands):
  """[prod(index_dims), d * (2K + 1)]: positions, then sines, then cosines (dim-major)."""
  grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in index_dims], indexing="ij")
  positions = np.stack([g.reshape(-1) for g in grids], axis=-1)
  sines, cosines = [], []
  for dim, n in enumerate(index_dims):
    for freq in np.linspace(1.0, n / 2, num_bands):
      sines.append(np.sin(np.pi * freq * positions[:, dim]))
      cosines.append(np.cos(np.pi * freq * positions[:, dim]))
  return np.concatenate([positions, np.stack(sines, -1), np.stack(cosines, -1)], axis=-1)


SHAPES = [(7, 3), (4, 5, 3), (2, 3, 4, 2)]  # [T, C], [H, W, C], [D, H, W, C].


@pytest.mark.parametrize("index_shape", SHAPES)
@pytest.mark.parametrize("decoder", [ProjectionDecoder(NUM_CLASSES),
                                     ClassificationDecoder(num_classes=NUM_CLASSES)])
def test_perceiver_logits_shape_and_fourier_width(index_shape, decoder):
  x = jnp.zeros((2,) + index_shape)
  model = Perceiver(_encoder(), decoder, num_frequency_bands=BANDS)
  params = _shapes(model, x)
  d, c = len(index_shape) - 1, index_shape[-1]
  key_kernel = params["encoder"]["cross_attention_first"]["attention"]["key"]["kernel"]
  assert key_kernel.shape[0] == c + d * (2 * BANDS + 1)
  out = jax.eval_shape(model.apply, {"params": params}, x)
  assert out.shape == (2, NUM_CLASSES) and out.dtype == jnp.float32


def test_perceiver_feeds_inputs_concatenated_with_fourier_features():
  index_shape = SHAPES[2]  # Three index dims: checks their order in the features and flattening.
  x = _data(0, 2, *index_shape)
  encoder, decoder = _encoder(), ProjectionDecoder(NUM_CLASSES)
  model = Perceiver(encoder, decoder, num_frequency_bands=BANDS)
  params = _params(model, x)
  features = _fourier_features(index_shape[:-1], BANDS)
  flat = np.asarray(x).reshape(2, -1, index_shape[-1])
  encoder_inputs = np.concatenate([flat, np.broadcast_to(features, (2,) + features.shape)], -1)

  @jax.jit
  def outputs(params, encoder_inputs):
    latents = encoder.apply({"params": params["encoder"]}, encoder_inputs)
    return model.apply({"params": params}, x), decoder.apply({"params": params["decoder"]}, latents)

  out, expected = outputs(params, jnp.asarray(encoder_inputs, jnp.float32))
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_perceiver_pad_mask_masks_positions():
  x = _data(0, 2, 4, 5, 3)
  mask = np.ones((2, 4, 5), bool)
  mask[0, 2:, :] = False
  mask[1, :, 3:] = False
  model = Perceiver(_encoder(), ProjectionDecoder(NUM_CLASSES), num_frequency_bands=BANDS)
  params = {"params": _params(model, x)}
  changed = jnp.where(jnp.asarray(mask)[..., None], x, 50.0 * _data(1, 2, 4, 5, 3))
  out = model.apply(params, x, jnp.asarray(mask))
  np.testing.assert_allclose(out, model.apply(params, changed, jnp.asarray(mask)),
                             rtol=1e-6, atol=1e-6)
  assert not np.allclose(out, model.apply(params, x), atol=1e-3)
  assert not np.allclose(model.apply(params, x), model.apply(params, changed), atol=1e-3)


@pytest.mark.parametrize("mask_shape", [(2, 20), (2, 5, 4), (1, 4, 5), (2, 4, 5, 3)])
def test_perceiver_rejects_wrong_pad_mask_shape(mask_shape):
  model = Perceiver(_encoder(), ProjectionDecoder(NUM_CLASSES), num_frequency_bands=BANDS)
  with pytest.raises(ValueError, match="pad_mask"):
    _shapes(model, jnp.zeros((2, 4, 5, 3)), jnp.ones(mask_shape, bool))


def test_perceiver_rejects_inputs_without_index_dims():
  model = Perceiver(_encoder(), ProjectionDecoder(NUM_CLASSES), num_frequency_bands=BANDS)
  with pytest.raises(ValueError, match="index_dims"):
    _shapes(model, jnp.zeros((2, 3)))


class _TokenAdapter(nn.Module):
  """Input adapter: token ids [b, t] -> embeddings + learned positions [b, t, channels]."""
  vocab_size: int
  length: int
  channels: int

  @nn.compact
  def __call__(self, tokens, deterministic=True):
    embedded = nn.Embed(self.vocab_size, self.channels)(tokens)
    positions = self.param("positions", nn.initializers.normal(0.02), (self.length, self.channels))
    return nn.Dropout(0.0)(embedded + positions, deterministic=deterministic)


class _Logits(nn.Module):
  """Output adapter: a linear map of the decoded channels."""
  features: int

  @nn.compact
  def __call__(self, x, deterministic=True):
    return nn.Dense(self.features)(x)


class _KeepsIndexDims(nn.Module):
  """A broken input adapter that does not flatten: [b, h, w, c] -> [b, h, w, 4]."""

  @nn.compact
  def __call__(self, x, deterministic=True):
    return nn.Dense(4)(x)


def test_perceiver_io_with_adapters_shapes_and_gradients_reach_every_parameter():
  vocab, length, outputs = 11, 9, 3
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, vocab, (2, length)))
  model = PerceiverIO(
      encoder=_encoder(num_cross_attention_heads=2), output_query=TrainableQuery(outputs, 6),
      decoder=PerceiverDecoder(output_channels=10), input_adapter=_TokenAdapter(vocab, length, 12),
      output_adapter=_Logits(vocab))
  params = _params(model, tokens)
  assert set(params) == {"encoder", "output_query", "decoder", "input_adapter", "output_adapter"}
  out = model.apply({"params": params}, tokens)
  assert out.shape == (2, outputs, vocab)
  targets = jnp.asarray(np.random.default_rng(1).integers(0, vocab, (2, outputs)))

  def loss(params):
    logits = model.apply({"params": params}, tokens)
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

  grads = jax.jit(jax.grad(loss))(params)
  flat, _ = jax.tree_util.tree_flatten_with_path(grads)
  zero = [jax.tree_util.keystr(path) for path, g in flat if not np.any(np.asarray(g) != 0)]
  # Only the one-head decoder's key bias: a softmax ignores it (its gradient is exactly zero
  # with the folded key/value projections of multi_head_attention.py).
  assert zero == ["['decoder']['attention']['key']['bias']"], zero
  assert all(np.all(np.isfinite(np.asarray(g))) for _, g in flat)


class _QueriesFromInputs(nn.Module):
  """Output queries computed from the adapted inputs: one query per input position."""
  channels: int

  @nn.compact
  def __call__(self, adapted):
    return nn.Dense(self.channels)(adapted)


def test_perceiver_io_output_query_sees_the_adapted_inputs():
  vocab, length = 11, 9
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, vocab, (2, length)))
  adapter, encoder, query = _TokenAdapter(vocab, length, 12), _encoder(), _QueriesFromInputs(6)
  decoder = PerceiverDecoder(output_channels=vocab)
  model = PerceiverIO(encoder, query, decoder, input_adapter=adapter)
  params = _params(model, tokens)
  out = model.apply({"params": params}, tokens)
  assert out.shape == (2, length, vocab)
  adapted = adapter.apply({"params": params["input_adapter"]}, tokens)
  latents = encoder.apply({"params": params["encoder"]}, adapted)
  queries = query.apply({"params": params["output_query"]}, adapted)
  np.testing.assert_allclose(out, decoder.apply({"params": params["decoder"]}, queries, latents),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("output_channels", [None, 4])
def test_perceiver_io_without_adapters(output_channels):
  x, mask = _data(0, 2, 7, 6), jnp.asarray(np.arange(7)[None] < np.array([[7], [3]]))
  encoder, query = _encoder(), TrainableQuery(3, 10)
  decoder = PerceiverDecoder(output_channels=output_channels)
  model = PerceiverIO(encoder, query, decoder)
  params = _params(model, x)
  assert set(params) == {"encoder", "output_query", "decoder"}
  out = model.apply({"params": params}, x, mask)
  assert out.shape == (2, 3, output_channels or 10)
  latents = encoder.apply({"params": params["encoder"]}, x, mask)
  queries = query.apply({"params": params["output_query"]}, x)
  np.testing.assert_allclose(out, decoder.apply({"params": params["decoder"]}, queries, latents),
                             rtol=1e-6, atol=1e-6)
  assert not np.allclose(out, model.apply({"params": params}, x), atol=1e-4)  # The mask is used.


def test_perceiver_io_rejects_adapter_output_that_is_not_3d():
  model = PerceiverIO(_encoder(), TrainableQuery(3, 10), PerceiverDecoder(),
                      input_adapter=_KeepsIndexDims())
  with pytest.raises(ValueError, match="input adapter"):
    _shapes(model, jnp.zeros((2, 4, 4, 3)))
  with pytest.raises(ValueError, match="input adapter"):  # No adapter: inputs must be 3-D.
    _shapes(PerceiverIO(_encoder(), TrainableQuery(3, 10), PerceiverDecoder()),
            jnp.zeros((2, 4, 4, 3)))


def test_tiny_perceiver_overfits_a_random_batch():
  x = _data(0, 8, 4, 4, 3)
  labels = jnp.asarray(np.arange(8) % 4)
  model = Perceiver(_encoder(num_latents=8, num_latent_channels=16), ProjectionDecoder(4),
                    num_frequency_bands=BANDS)
  params = _init(model, x)
  optimizer = optax.adam(3e-3)

  def loss_fn(params):
    logits = model.apply({"params": params}, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), logits

  @jax.jit
  def step(params, state):
    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, state = optimizer.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss, logits

  state = optimizer.init(params)
  losses = []
  for _ in range(60):
    params, state, loss, logits = step(params, state)
    losses.append(float(loss))
  assert losses[0] == pytest.approx(np.log(4), rel=1e-4)  # The head is zero-initialised.
  assert losses[-1] < 0.1 * losses[0], losses
  np.testing.assert_array_equal(np.argmax(logits, -1), labels)  # Logits of the last step.
