"""Decoders against float64 numpy references computed from their own (randomised) params."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver_jax.nn.attention import AttentionConfig
from perceiver_jax import ClassificationDecoder, PerceiverDecoder, ProjectionDecoder, TrainableQuery
from random_params import param_shapes as _shapes, random_data as _data, random_params as _params

B, N, D = 2, 5, 8  # batch, latents, latent channels.
O, Q = 3, 6  # output queries, query channels.


def _np(tree):
  return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), tree)


def _ln(x, p):
  mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + 1e-5) * p["scale"] + p["bias"]


def dense_stats(x, p):
  return x @ p["kernel"] + p["bias"]


def _mlp(x, p):
  h = dense_stats(x, p["Dense_0"])
  h = 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h ** 3)))
  return dense_stats(h, p["Dense_1"])


def _attention(q_in, kv_in, p):
  q = np.einsum("btc,chd->bthd", q_in, p["query"]["kernel"]) + p["query"]["bias"]
  k = np.einsum("bsc,chd->bshd", kv_in, p["key"]["kernel"]) + p["key"]["bias"]
  v = np.einsum("bsc,chd->bshd", kv_in, p["value"]["kernel"]) + p["value"]["bias"]
  logits = np.einsum("bthd,bshd->bhts", q, k) / np.sqrt(q.shape[-1])
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  out = np.einsum("bhts,bshd->bthd", weights, v)
  return np.einsum("bthd,hdc->btc", out, p["out"]["kernel"]) + p["out"]["bias"]


def _decoder_ref(queries, latents, p, use_query_residual, use_mlp, output_channels):
  x = _attention(_ln(queries, p["query_norm"]), _ln(latents, p["latent_norm"]), p["attention"])
  if use_query_residual:
    x = x + queries
  if use_mlp:
    x = x + _mlp(_ln(x, p["mlp_norm"]), p["mlp"])
  if output_channels is not None:
    x = dense_stats(x, p["output"])
  return x


@pytest.mark.parametrize("use_query_residual", [False, True])
@pytest.mark.parametrize("use_mlp", [True, False])
@pytest.mark.parametrize("output_channels", [None, 11])
def test_perceiver_decoder_matches_reference(use_query_residual, use_mlp, output_channels):
  queries, latents = _data(0, B, O, Q), _data(1, B, N, D)
  dec = PerceiverDecoder(use_query_residual=use_query_residual, use_mlp=use_mlp,
                         output_channels=output_channels)
  params = _params(dec, queries, latents)
  expected_keys = {"attention", "query_norm", "latent_norm"}
  expected_keys |= {"mlp", "mlp_norm"} if use_mlp else set()
  expected_keys |= {"output"} if output_channels else set()
  assert set(params) == expected_keys
  # qk defaults to the latent width; the attention output has the query width.
  assert params["attention"]["key"]["kernel"].shape == (D, 1, D)
  assert params["attention"]["out"]["kernel"].shape == (1, D, Q)
  out = dec.apply({"params": params}, queries, latents)
  assert out.shape == (B, O, output_channels or Q)
  ref = _decoder_ref(np.asarray(queries, np.float64), np.asarray(latents, np.float64), _np(params),
                     use_query_residual, use_mlp, output_channels)
  np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


def test_perceiver_decoder_custom_widths_and_heads():
  queries, latents = _data(0, B, O, Q), _data(1, B, N, D)
  dec = PerceiverDecoder(num_heads=2, qk_channels=4, v_channels=10, widening_factor=3,
                         use_query_residual=True, output_channels=3)
  params = _params(dec, queries, latents)
  assert params["attention"]["query"]["kernel"].shape == (Q, 2, 2)
  assert params["attention"]["value"]["kernel"].shape == (D, 2, 5)
  assert params["mlp"]["Dense_0"]["kernel"].shape == (Q, 3 * Q)
  ref = _decoder_ref(np.asarray(queries, np.float64), np.asarray(latents, np.float64), _np(params),
                     True, True, 3)
  np.testing.assert_allclose(dec.apply({"params": params}, queries, latents), ref,
                             rtol=1e-4, atol=1e-4)


def test_decoder_queries_are_independent():
  """Each output depends only on its own query (and the latents), not on the other queries."""
  queries, latents = _data(0, B, O, Q), _data(1, B, N, D)
  dec = PerceiverDecoder(use_query_residual=True, output_channels=4)
  params = {"params": _params(dec, queries, latents)}
  out = dec.apply(params, queries, latents)
  changed = dec.apply(params, queries.at[:, 0].set(_data(2, B, Q)), latents)
  np.testing.assert_allclose(out[:, 1:], changed[:, 1:], rtol=1e-6, atol=1e-6)
  assert not np.allclose(out[:, 0], changed[:, 0], atol=1e-3)


def test_decoder_dropout_needs_not_deterministic():
  queries, latents = _data(0, B, O, Q), _data(1, B, N, D)
  dec = PerceiverDecoder(dropout_rate=0.5, attention=AttentionConfig(dropout_rate=0.5))
  params = {"params": _params(dec, queries, latents)}
  out = dec.apply(params, queries, latents)
  np.testing.assert_allclose(out, PerceiverDecoder().apply(params, queries, latents),
                             rtol=1e-6, atol=1e-6)
  dropped = dec.apply(params, queries, latents, deterministic=False,
                      rngs={"dropout": jax.random.PRNGKey(0)})
  assert not np.allclose(out, dropped, atol=1e-3)


def test_decoder_bfloat16_compute_with_float32_params():
  queries, latents = _data(0, B, O, Q), _data(1, B, N, D)
  dec = PerceiverDecoder(output_channels=4, dtype=jnp.bfloat16)
  shapes = _shapes(dec, queries, latents)
  assert all(s.dtype == jnp.float32 for s in jax.tree_util.tree_leaves(shapes))
  params = {"params": _params(dec, queries, latents)}
  out = dec.apply(params, queries, latents)
  assert out.dtype == jnp.bfloat16
  full = PerceiverDecoder(output_channels=4).apply(params, queries, latents)
  np.testing.assert_allclose(np.asarray(out, np.float32), full, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("bad", [dict(widening_factor=0), dict(output_channels=0),
                                 dict(num_heads=0), dict(dropout_rate=1.0)])
def test_perceiver_decoder_bad_fields(bad):
  with pytest.raises(ValueError, match=next(iter(bad))):
    PerceiverDecoder(**bad)


@pytest.mark.parametrize("cls", [ClassificationDecoder, ProjectionDecoder])
def test_classification_heads_need_classes(cls):
  with pytest.raises(ValueError, match=f"{cls.__name__}.num_classes"):
    cls(num_classes=0)


def test_trainable_query_is_a_learned_array_broadcast_over_batch():
  inputs = jnp.zeros((3, 17, 2))  # Only the batch size of `inputs` is used.
  query = TrainableQuery(num_queries=4, num_channels=6, init_scale=0.5)
  variables = query.init(jax.random.PRNGKey(0), inputs)
  table = variables["params"]["queries"]["embeddings"]
  assert table.shape == (4, 6)
  assert np.abs(np.asarray(table)).max() <= 2 * 0.5 and np.asarray(table).std() > 0.1
  out = query.apply(variables, inputs)
  assert out.shape == (3, 4, 6)
  for b in range(3):
    np.testing.assert_array_equal(out[b], table)
  assert query.apply(variables, jnp.zeros((1, 5, 5))).shape == (1, 4, 6)


@pytest.mark.parametrize("num_query_channels", [None, 12])
def test_classification_decoder(num_query_channels):
  latents = _data(1, B, N, D)
  dec = ClassificationDecoder(num_classes=7, num_query_channels=num_query_channels,
                              use_query_residual=True)
  params = _params(dec, latents)
  channels = num_query_channels or D
  query_shapes = jax.tree_util.tree_map(jnp.shape, params["query"])
  assert query_shapes == {"queries": {"embeddings": (1, channels)}}
  assert set(params) == {"query", "decoder"}
  assert params["decoder"]["output"]["kernel"].shape == (channels, 7)
  out = dec.apply({"params": params}, latents)
  assert out.shape == (B, 7)
  query = np.broadcast_to(np.asarray(params["query"]["queries"]["embeddings"], np.float64),
                          (B, 1, channels))
  ref = _decoder_ref(query, np.asarray(latents, np.float64), _np(params["decoder"]), True, True, 7)
  np.testing.assert_allclose(out, ref[:, 0], rtol=1e-4, atol=1e-4)


def test_classification_decoder_rejects_output_channels():
  with pytest.raises(ValueError, match="output_channels"):
    ClassificationDecoder(num_classes=3, output_channels=5)


def test_projection_decoder_is_mean_then_zero_initialised_linear():
  latents = _data(1, B, N, D)
  dec = ProjectionDecoder(num_classes=5)
  variables = dec.init(jax.random.PRNGKey(0), latents)
  assert jax.tree_util.tree_map(jnp.shape, variables["params"]) == {
      "logits": {"kernel": (D, 5), "bias": (5,)}}
  np.testing.assert_array_equal(variables["params"]["logits"]["kernel"], 0.0)
  np.testing.assert_array_equal(dec.apply(variables, latents), np.zeros((B, 5)))
  params = _params(dec, latents)
  ref = dense_stats(np.asarray(latents, np.float64).mean(axis=1), _np(params["logits"]))
  np.testing.assert_allclose(dec.apply({"params": params}, latents), ref, rtol=1e-5, atol=1e-5)
  # Any permutation of the latents gives the same logits (it is a mean).
  np.testing.assert_allclose(dec.apply({"params": params}, latents[:, ::-1]),
                             dec.apply({"params": params}, latents), rtol=1e-5, atol=1e-6)


def test_decoder_activation_is_the_mlps():
  queries, latents = _data(0, 2, 3, 6), _data(1, 2, 4, 8)
  params = _params(PerceiverDecoder(), queries, latents)
  outputs = {a: PerceiverDecoder(activation=a).apply({"params": params}, queries, latents)
             for a in ("gelu", "gelu_exact", "relu")}
  assert not np.allclose(outputs["gelu"], outputs["gelu_exact"], atol=1e-6)
  assert not np.allclose(outputs["gelu"], outputs["relu"], atol=1e-6)
  with pytest.raises(ValueError, match="PerceiverDecoder.activation"):
    PerceiverDecoder(activation="swish")
