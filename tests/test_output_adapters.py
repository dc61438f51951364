"""Output queries and output adapters: values, subsampling, errors, stats, flow and MLM models."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver_jax import (PerceiverDecoder, PerceiverEncoder, PerceiverIO, TrainableQuery,
                           fourier_features)
from perceiver_jax.io.adapters import TextAdapter
from perceiver_jax.nn.model_stats import count_params, param_count, stats
from perceiver_jax.io.output_adapters import (AudioOutput, ClassificationOutput, EmbeddingOutput,
                                              FlowOutput, GridOutput, MultimodalOutput)
from perceiver_jax.io.output_queries import (FourierQuery, InputQuery, MultimodalQuery,
                                             TrainableGridQuery)
from random_params import param_shapes as _shapes, random_data as _data, random_params as _params

POINTS = np.array([5, 0, 11])  # Indices into a flattened (3, 4) grid.
BATCH_POINTS = np.array([[1, 7], [10, 2]])


def _encoder():
  return PerceiverEncoder(num_latents=4, num_latent_channels=8, num_self_attention_blocks=1,
                          num_self_attention_layers_per_block=1, num_self_attention_heads=2)


# Output queries.

def test_fourier_query_is_fourier_features_of_the_grid_and_subsamples_rows():
  query = FourierQuery((3, 4), num_frequency_bands=2, max_resolution=(5, 6))
  features = fourier_features((3, 4), 2, (5, 6))
  inputs = jnp.zeros((2, 7, 1))
  full = query.apply({}, inputs)
  assert full.shape == (2, 12, features.shape[-1])
  np.testing.assert_allclose(full, np.broadcast_to(features, full.shape))
  # Subsampled features are computed at the points in float32: rounding only.
  np.testing.assert_allclose(query.apply({}, inputs, subsampled_points=POINTS),
                             np.broadcast_to(features[POINTS], (2, 3, features.shape[-1])),
                             rtol=0, atol=1e-5)
  np.testing.assert_allclose(query.apply({}, inputs, subsampled_points=BATCH_POINTS),
                             features[BATCH_POINTS], rtol=0, atol=1e-5)
  assert stats(query, (7, 1)).output_shape == full.shape[1:]


def test_fourier_query_cell_start_positions_match_numpy():
  # Grid point i of n at -1 + 2 i / n (the official subsampled decoder), full and subsampled.
  query = FourierQuery((3, 4), num_frequency_bands=2, max_resolution=(5, 6),
                       grid_positions="cell_start")
  axes = [-1 + 2 * np.arange(n) / n for n in (3, 4)]
  pos = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(12, 2)
  freqs = np.stack([np.linspace(1, 5 / 2, 2), np.linspace(1, 6 / 2, 2)])
  scaled = np.pi * (pos[:, :, None] * freqs).reshape(12, 4)
  want = np.concatenate([pos, np.sin(scaled), np.cos(scaled)], axis=-1)
  inputs = jnp.zeros((2, 7, 1))
  np.testing.assert_allclose(query.apply({}, inputs), np.broadcast_to(want, (2, 12, 10)),
                             rtol=0, atol=1e-5)
  np.testing.assert_allclose(query.apply({}, inputs, subsampled_points=BATCH_POINTS),
                             want[BATCH_POINTS], rtol=0, atol=1e-5)
  with pytest.raises(ValueError, match="FourierQuery.grid_positions"):
    FourierQuery((3,), grid_positions="centre")


def test_trainable_grid_query_shape_and_subsampling():
  query = TrainableGridQuery((3, 4), num_channels=5)
  inputs = jnp.zeros((2, 7, 1))
  params = _params(query, inputs)
  table = np.asarray(params["queries"]["embeddings"])
  full = query.apply({"params": params}, inputs)
  assert full.shape == (2, 12, 5)
  np.testing.assert_array_equal(full, np.broadcast_to(table, (2, 12, 5)))
  np.testing.assert_array_equal(query.apply({"params": params}, inputs, subsampled_points=POINTS),
                                np.broadcast_to(table[POINTS], (2, 3, 5)))
  np.testing.assert_array_equal(
      query.apply({"params": params}, inputs, subsampled_points=BATCH_POINTS), table[BATCH_POINTS])
  assert param_count(query, (7, 1)) == count_params(_shapes(query, inputs)) == 60


def test_input_query_returns_the_inputs_and_subsamples_them():
  inputs = _data(0, 2, 12, 3)
  np.testing.assert_array_equal(InputQuery().apply({}, inputs), inputs)
  np.testing.assert_array_equal(InputQuery().apply({}, inputs, subsampled_points=POINTS),
                                np.asarray(inputs)[:, POINTS])
  np.testing.assert_array_equal(InputQuery().apply({}, inputs, subsampled_points=BATCH_POINTS),
                                np.asarray(inputs)[np.arange(2)[:, None], BATCH_POINTS])


def test_bad_fields_and_subsampled_points_raise():
  with pytest.raises(ValueError, match="FourierQuery.output_index_dims"):
    FourierQuery((3, 0))
  with pytest.raises(ValueError, match="FourierQuery.max_resolution"):
    FourierQuery((3, 4), max_resolution=(3,))
  with pytest.raises(ValueError, match="FourierQuery.num_frequency_bands"):
    FourierQuery((3,), num_frequency_bands=0)
  with pytest.raises(ValueError, match="TrainableGridQuery.num_channels"):
    TrainableGridQuery((3,), num_channels=0)
  with pytest.raises(ValueError, match="GridOutput.output_index_dims"):
    GridOutput(())
  with pytest.raises(ValueError, match="EmbeddingOutput.vocab_size"):
    EmbeddingOutput(0)
  with pytest.raises(ValueError, match="subsampled_points"):
    InputQuery().apply({}, jnp.zeros((2, 12, 3)), subsampled_points=np.zeros((3, 2), np.int32))
  with pytest.raises(ValueError, match="subsampled_points"):
    InputQuery().apply({}, jnp.zeros((2, 12, 3)), subsampled_points=np.zeros(2))


# Output adapters.

def test_classification_output_squeezes_the_query_axis():
  decoded = _data(0, 2, 1, 5)
  np.testing.assert_array_equal(ClassificationOutput().apply({}, decoded), np.asarray(decoded)[:, 0])
  assert stats(ClassificationOutput(), (1, 5)).output_shape == (5,)
  with pytest.raises(ValueError, match="ClassificationOutput"):
    ClassificationOutput().apply({}, _data(0, 2, 3, 5))


def test_grid_output_reshapes_scales_and_passes_subsampled_points_through():
  decoded = _data(0, 2, 12, 2)
  out = GridOutput((3, 4), scale=2.0).apply({}, decoded)
  np.testing.assert_allclose(out, 2.0 * np.asarray(decoded).reshape(2, 3, 4, 2))
  assert stats(GridOutput((3, 4)), (12, 2)).output_shape == (3, 4, 2)
  np.testing.assert_allclose(FlowOutput((3, 4)).apply({}, decoded),
                             np.asarray(decoded).reshape(2, 3, 4, 2) / 100, rtol=1e-6)
  sub = _data(1, 2, 5, 2)
  np.testing.assert_allclose(FlowOutput((3, 4)).apply({}, sub, subsampled_points=np.arange(5)),
                             np.asarray(sub) / 100, rtol=1e-6)
  with pytest.raises(ValueError, match="GridOutput expects"):
    GridOutput((3, 4)).apply({}, _data(0, 2, 11, 2))


# Whole models.

def _flow_model():
  return PerceiverIO(_encoder(), InputQuery(), PerceiverDecoder(output_channels=2),
                     output_adapter=FlowOutput((4, 4)))


def test_flow_model_full_and_subsampled_decodes_agree():
  model = _flow_model()
  inputs = _data(0, 2, 16, 6)
  params = {"params": _params(model, inputs)}
  apply = jax.jit(model.apply)
  full = apply(params, inputs)
  assert full.shape == (2, 4, 4, 2)
  flat = np.asarray(full).reshape(2, 16, 2)
  sub = apply(params, inputs, subsampled_points=POINTS)
  assert sub.shape == (2, 3, 2)
  np.testing.assert_allclose(sub, flat[:, POINTS], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(apply(params, inputs, subsampled_points=BATCH_POINTS),
                             flat[np.arange(2)[:, None], BATCH_POINTS], rtol=1e-5, atol=1e-6)
  assert param_count(model, (16, 6)) == count_params(_shapes(model, inputs))
  assert stats(model, (16, 6)).output_shape == full.shape[1:]


def _mlm_model():
  return PerceiverIO(_encoder(), InputQuery(), PerceiverDecoder(output_channels=6),
                     input_adapter=TextAdapter(num_channels=6, max_seq_len=8),
                     output_adapter=EmbeddingOutput(262))


def test_mlm_model_logits_shape_and_one_embedding_matrix():
  model = _mlm_model()
  ids = jnp.asarray(np.random.default_rng(0).integers(0, 262, (2, 7)), jnp.int32)
  shapes = _shapes(model, ids)
  assert jax.eval_shape(model.apply, {"params": shapes}, ids).shape == (2, 7, 262)
  vocab_leaves = [leaf for leaf in jax.tree_util.tree_leaves(shapes) if 262 in leaf.shape]
  assert sorted(leaf.shape for leaf in vocab_leaves) == [(262,), (262, 6)]  # Bias, embedding.
  assert param_count(model, (7,)) == count_params(shapes)
  assert stats(model, (7,)).output_shape == (7, 262)
  with pytest.raises(ValueError, match="input_adapter"):
    EmbeddingOutput(262).apply({}, jnp.zeros((2, 7, 6)))


def _stop_gradient_on(side):
  """Interceptor stopping the embedding's gradient through the 'input' or 'output' side."""

  def interceptor(next_fun, args, kwargs, context):
    if not isinstance(context.module, TextAdapter):
      return next_fun(*args, **kwargs)
    if side == "input" and context.method_name == "__call__":
      return jax.lax.stop_gradient(next_fun(*args, **kwargs))
    if side == "output" and context.method_name == "attend":
      table = context.module.variables["params"]["embedding"]["embedding"]
      return args[0] @ jax.lax.stop_gradient(table).T
    return next_fun(*args, **kwargs)

  return interceptor


def test_mlm_embedding_gradient_comes_from_input_and_output_sides():
  model = _mlm_model()
  ids = jnp.asarray(np.random.default_rng(0).integers(0, 262, (2, 7)), jnp.int32)
  params = _params(model, ids)
  weights = _data(1, 2, 7, 262)

  @jax.jit
  def embedding_grads(params):
    def grad(side):
      def loss(params):
        if side is None:
          return jnp.sum(model.apply({"params": params}, ids) * weights)
        with nn.intercept_methods(_stop_gradient_on(side)):
          return jnp.sum(model.apply({"params": params}, ids) * weights)
      return jax.grad(loss)(params)["input_adapter"]["embedding"]["embedding"]
    return grad(None), grad("output"), grad("input")

  both, input_side, output_side = embedding_grads(params)
  assert np.linalg.norm(input_side) > 1e-3 and np.linalg.norm(output_side) > 1e-3
  np.testing.assert_allclose(both, input_side + output_side, rtol=1e-4, atol=1e-6)


# Projections, audio and multimodal decoding.

def test_classification_output_projects_to_num_classes():
  decoded = _data(0, 2, 1, 5)
  head = ClassificationOutput(num_classes=3)
  params = _params(head, decoded)
  dense = params["projection"]
  np.testing.assert_allclose(head.apply({"params": params}, decoded),
                             np.asarray(decoded)[:, 0] @ dense["kernel"] + dense["bias"],
                             rtol=1e-5, atol=1e-6)
  assert param_count(head, (1, 5)) == count_params(params) == 18
  assert stats(head, (1, 5)).output_shape == (3,)


def test_grid_output_projects_before_reshaping_video():
  decoded = _data(0, 2, 24, 5)
  head = GridOutput((2, 3, 4), num_output_channels=3, scale=0.5)
  params = _params(head, decoded)
  dense = params["projection"]
  projected = 0.5 * (np.asarray(decoded) @ dense["kernel"] + dense["bias"])
  np.testing.assert_allclose(head.apply({"params": params}, decoded),
                             projected.reshape(2, 2, 3, 4, 3), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
      head.apply({"params": params}, decoded[:, :7], subsampled_points=np.arange(7)),
      projected[:, :7], rtol=1e-5, atol=1e-6)
  assert param_count(head, (24, 5)) == count_params(params)
  assert stats(head, (24, 5)).output_shape == (2, 3, 4, 3)


def test_audio_output_projects_patches_to_samples_and_flattens():
  decoded = _data(0, 2, 6, 5)
  head = AudioOutput(samples_per_patch=4)
  params = _params(head, decoded)
  dense = params["projection"]
  expected = (np.asarray(decoded) @ dense["kernel"] + dense["bias"]).reshape(2, 24)
  np.testing.assert_allclose(head.apply({"params": params}, decoded), expected,
                             rtol=1e-5, atol=1e-6)
  assert stats(head, (6, 5)).output_shape == (24,)
  with pytest.raises(ValueError, match="AudioOutput.samples_per_patch"):
    AudioOutput(samples_per_patch=0)


def test_trainable_query_subsamples():
  query = TrainableQuery(6, 3)
  inputs = jnp.zeros((2, 1, 1))
  params = _params(query, inputs)
  table = np.asarray(params["queries"]["embeddings"])
  np.testing.assert_array_equal(query.apply({"params": params}, inputs, subsampled_points=POINTS[:2]),
                                np.broadcast_to(table[POINTS[:2]], (2, 2, 3)))


MULTIMODAL_QUERIES = {"video": FourierQuery((3, 4), num_frequency_bands=2),
                      "label": TrainableQuery(1, 7)}


def test_multimodal_query_pads_each_modality_and_concatenates_in_sorted_order():
  query = MultimodalQuery(MULTIMODAL_QUERIES, min_padding_size=3)
  inputs = jnp.zeros((2, 5, 1))
  params = _params(query, inputs)
  out = query.apply({"params": params}, inputs)
  video_channels = fourier_features((3, 4), 2).shape[-1]  # 10
  channels = max(video_channels, 7) + 3
  assert out.shape == (2, 13, channels)
  label = np.asarray(params["queries_label"]["queries"]["embeddings"])
  np.testing.assert_array_equal(out[:, 0, :7], np.broadcast_to(label, (2, 1, 7))[:, 0])
  np.testing.assert_array_equal(out[:, 0, 7:], np.broadcast_to(params["label_padding"], (2, 6)))
  np.testing.assert_allclose(out[:, 1:, :video_channels],
                             np.broadcast_to(fourier_features((3, 4), 2), (2, 12, 10)), atol=1e-6)
  np.testing.assert_array_equal(out[:, 1:, video_channels:],
                                np.broadcast_to(params["video_padding"], (2, 12, 3)))
  assert param_count(query, (5, 1)) == count_params(params) == 7 + 6 + 3
  sub = query.apply({"params": params}, inputs, subsampled_points={"video": POINTS})
  assert sub.shape == (2, 4, channels)
  np.testing.assert_allclose(sub[:, 1:], out[:, 1 + POINTS], atol=1e-5)


def test_multimodal_output_splits_and_applies_each_adapter():
  head = MultimodalOutput({"video": GridOutput((3, 4), scale=2.0), "label": ClassificationOutput()},
                          num_outputs={"video": 12, "label": 1})
  decoded = _data(0, 2, 13, 4)
  out = head.apply({}, decoded)
  np.testing.assert_array_equal(out["label"], decoded[:, 0])
  np.testing.assert_allclose(out["video"], 2.0 * np.asarray(decoded[:, 1:]).reshape(2, 3, 4, 4))
  sub = head.apply({}, decoded[:, :4], subsampled_points={"video": POINTS})
  np.testing.assert_allclose(sub["video"], 2.0 * np.asarray(decoded[:, 1:4]))
  assert stats(head, (13, 4)).output_shape == {"label": (4,), "video": (3, 4, 4)}
  with pytest.raises(ValueError, match="sum of sizes"):
    head.apply({}, decoded[:, :5], subsampled_points={"video": POINTS})


def test_multimodal_errors():
  with pytest.raises(ValueError, match="InputQuery"):
    MultimodalQuery({"video": InputQuery()})
  with pytest.raises(ValueError, match="at least one modality"):
    MultimodalQuery({})
  with pytest.raises(ValueError, match="same, non-empty set"):
    MultimodalOutput({"video": GridOutput((3, 4))}, num_outputs={"audio": 3})
  query = MultimodalQuery(MULTIMODAL_QUERIES)
  with pytest.raises(ValueError, match="mapping"):
    query.init(jax.random.PRNGKey(0), jnp.zeros((2, 5, 1)), subsampled_points=POINTS)
  with pytest.raises(ValueError, match="mapping"):
    query.init(jax.random.PRNGKey(0), jnp.zeros((2, 5, 1)), subsampled_points={"audio": POINTS})

