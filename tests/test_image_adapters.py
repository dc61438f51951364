"""Image, video and flow input adapters against numpy re-derivations; stats equal init."""

import functools
import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver_jax import PerceiverDecoder, PerceiverEncoder, PerceiverIO, TrainableQuery
from perceiver_jax.io.adapters import (FlowAdapter, ImageAdapter, VideoAdapter, extract_patches_3x3,
                                       space_to_depth)
from perceiver_jax.nn.model_stats import count_params, flops, param_count, stats
from perceiver_jax.nn.position_encoding import fourier_features, fourier_num_channels

KEY = jax.random.PRNGKey(0)


def _random(shape, seed=0):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _init_apply(model, x, **kwargs):
  variables = model.init(KEY, x)
  return variables, model.apply(variables, x, **kwargs)


# --- space_to_depth --------------------------------------------------------------------------


def _np_space_to_depth(x, s, t=1):
  """One output element at a time: channel index ((dt * s + dh) * s + dw) * C + c."""
  video = x.ndim == 5
  if not video:
    x = x[:, None]
  b, frames, h, w, c = x.shape
  out = np.zeros((b, frames // t, h // s, w // s, t * s * s * c), x.dtype)
  for n, i, j, k, dt, dh, dw, ch in itertools.product(
      range(b), range(frames // t), range(h // s), range(w // s), range(t), range(s), range(s),
      range(c)):
    out[n, i, j, k, ((dt * s + dh) * s + dw) * c + ch] = x[n, i * t + dt, j * s + dh, k * s + dw, ch]
  return out if video else out[:, 0]


@pytest.mark.parametrize("shape,s,t", [((2, 4, 6, 3), 2, None), ((1, 6, 6, 2), 3, None),
                                       ((2, 4, 4, 4, 2), 2, 2), ((1, 3, 4, 2, 1), 2, 3),
                                       ((1, 2, 2, 2, 3), 1, None)])
def test_space_to_depth_matches_loops_and_round_trips(shape, s, t):
  x = _random(shape)
  out = space_to_depth(jnp.asarray(x), s, t)
  np.testing.assert_array_equal(out, _np_space_to_depth(x, s, t or 1))
  # Inverse: split the channels back into blocks and interleave them with the grid.
  grid, blocks = out.shape[1:-1], ((t or 1,) if x.ndim == 5 else ()) + (s, s)
  d = len(grid)
  back = np.asarray(out).reshape(out.shape[:1] + grid + blocks + shape[-1:])
  order = [0] + [v for i in range(d) for v in (1 + i, 1 + d + i)] + [1 + 2 * d]
  np.testing.assert_array_equal(back.transpose(order).reshape(shape), x)


@pytest.mark.parametrize("shape,s,t", [((1, 5, 4, 3), 2, None), ((1, 4, 4, 3), 0, None),
                                       ((1, 3, 4, 4, 3), 2, 2), ((1, 4, 4, 3), 2, 2),
                                       ((4, 4, 3), 2, None)])
def test_space_to_depth_rejects_bad_shapes(shape, s, t):
  with pytest.raises(ValueError, match="space_to_depth"):
    space_to_depth(jnp.zeros(shape), s, t)


# --- ImageAdapter ----------------------------------------------------------------------------


@pytest.mark.parametrize("s", [1, 2, 3])
def test_pixels_are_the_input_plus_fourier_features(s):
  x = _random((2, 6, 7, 3))
  model = ImageAdapter("pixels", spatial_downsample=s, num_frequency_bands=3)
  _, out = _init_apply(model, x)
  sub = x[:, ::s, ::s]
  grid = sub.shape[1:3]
  assert out.shape == (2, grid[0] * grid[1], 3 + fourier_num_channels(2, 3))
  np.testing.assert_array_equal(out[..., :3], sub.reshape(2, -1, 3))
  np.testing.assert_array_equal(out[0, :, 3:], fourier_features(grid, 3))
  np.testing.assert_array_equal(out[1, :, 3:], fourier_features(grid, 3))


def test_fourier_settings_reach_the_features():
  x = _random((1, 4, 4, 2))
  model = ImageAdapter(num_frequency_bands=2, max_resolution=(10, 20), concat_pos=False,
                       sine_only=True)
  _, out = _init_apply(model, x)
  np.testing.assert_array_equal(out[0, :, 2:], fourier_features((4, 4), 2, (10, 20), False, True))


def test_patches_are_space_to_depth_and_optional_dense():
  x = _random((2, 4, 6, 3))
  _, out = _init_apply(ImageAdapter("patches", spatial_downsample=2, position_encoding="none"), x)
  np.testing.assert_array_equal(out, _np_space_to_depth(x, 2).reshape(2, 6, 12))
  model = ImageAdapter("patches", spatial_downsample=2, conv_after_patching=True, out_channels=5,
                       position_encoding="none")
  variables, out = _init_apply(model, x)
  dense = variables["params"]["patches_linear"]
  expected = _np_space_to_depth(x, 2).reshape(2, 6, 12) @ dense["kernel"] + dense["bias"]
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("s", [1, 2, 3])
def test_conv1x1_is_strided_subsampling_then_a_linear_map(s):
  x = _random((2, 7, 6, 3))
  model = ImageAdapter("conv1x1", spatial_downsample=s, out_channels=4, position_encoding="none")
  variables, out = _init_apply(model, x)
  conv = variables["params"]["conv1x1"]
  expected = x[:, ::s, ::s] @ conv["kernel"][0, 0] + conv["bias"]
  np.testing.assert_allclose(out, expected.reshape(2, -1, 4), rtol=1e-5, atol=1e-5)


def _conv7x7(x, params):
  return jax.lax.conv_general_dilated(x, params["conv"]["kernel"], (2, 2), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _reference_conv_prep(x, params, mean, var, eps=1e-5):
  """conv -> normalise with (mean, var) -> scale and bias -> ReLU -> 3x3 stride-2 max-pool."""
  norm = params["batch_norm"]
  y = (_conv7x7(x, params) - mean) / jnp.sqrt(var + eps) * norm["scale"] + norm["bias"]
  return jax.lax.reduce_window(jnp.maximum(y, 0), -jnp.inf, jax.lax.max, (1, 3, 3, 1),
                               (1, 2, 2, 1), "SAME")


def test_conv_prep_batch_norm_train_and_eval_modes():
  x = _random((3, 16, 12, 3)) + 2.0  # Off-centre, so batch and running statistics differ.
  model = ImageAdapter("conv", out_channels=8, position_encoding="none")
  variables = model.init(KEY, x)
  assert model.downsample == 4
  stats0 = variables["batch_stats"]["batch_norm"]
  np.testing.assert_array_equal(stats0["mean"], 0.0)
  np.testing.assert_array_equal(stats0["var"], 1.0)

  evaluated = model.apply(variables, x)
  trained, updates = model.apply(variables, x, deterministic=False, mutable=["batch_stats"])
  assert evaluated.shape == trained.shape == (3, 4 * 3, 8)  # 16x12 -> 4x3.

  params = variables["params"]
  expected_eval = _reference_conv_prep(x, params, stats0["mean"], stats0["var"])
  np.testing.assert_allclose(evaluated, expected_eval.reshape(3, -1, 8), rtol=1e-4, atol=1e-4)
  conv = _conv7x7(x, params)
  batch_mean, batch_var = conv.mean(axis=(0, 1, 2)), conv.var(axis=(0, 1, 2))
  expected_train = _reference_conv_prep(x, params, batch_mean, batch_var)
  np.testing.assert_allclose(trained, expected_train.reshape(3, -1, 8), rtol=1e-4, atol=1e-4)
  assert not np.allclose(trained, evaluated, atol=1e-3)

  new_stats = updates["batch_stats"]["batch_norm"]  # momentum 0.9: 0.9 * old + 0.1 * batch.
  np.testing.assert_allclose(new_stats["mean"], 0.1 * batch_mean, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(new_stats["var"], 0.9 + 0.1 * batch_var, rtol=1e-4, atol=1e-5)


def test_conv_prep_handles_sizes_not_divisible_by_four():
  model = ImageAdapter("conv", out_channels=4, num_frequency_bands=2)
  _, out = _init_apply(model, jnp.ones((1, 10, 7, 3)))
  assert out.shape == (1, 3 * 2, 4 + fourier_num_channels(2, 2))
  assert stats(model, (10, 7, 3)).output_shape == out.shape[1:]


def _np_transformers_stem(x, kernel, scale, bias, mean, var, eps=1e-5):
  """PyTorch's stem in numpy: conv zero-padded 3 each side, stride 2 -> eval BatchNorm -> ReLU
  -> 3x3 stride-2 max-pool without padding, one output pixel at a time."""
  padded = np.pad(x.astype(np.float64), ((0, 0), (3, 3), (3, 3), (0, 0)))
  rows, cols = (padded.shape[1] - 7) // 2 + 1, (padded.shape[2] - 7) // 2 + 1
  conv = np.zeros((x.shape[0], rows, cols, kernel.shape[-1]))
  for i, j in itertools.product(range(rows), range(cols)):
    window = padded[:, 2 * i:2 * i + 7, 2 * j:2 * j + 7]
    conv[:, i, j] = np.einsum("bhwc,hwco->bo", window, kernel)
  y = np.maximum((conv - mean) / np.sqrt(var + eps) * scale + bias, 0.0)
  rows, cols = (rows - 3) // 2 + 1, (cols - 3) // 2 + 1
  out = np.zeros((x.shape[0], rows, cols, y.shape[-1]))
  for i, j in itertools.product(range(rows), range(cols)):
    out[:, i, j] = y[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3].max(axis=(1, 2))
  return out


def test_transformers_stem_padding_matches_numpy():
  x = _random((2, 12, 9, 3))  # Even height: SAME would pad the conv (2, 3), PyTorch (3, 3).
  model = ImageAdapter("conv", out_channels=4, position_encoding="none",
                       stem_padding="transformers")
  variables = model.init(KEY, x)
  params = variables["params"]
  params["batch_norm"] = {"scale": _random(4, 1), "bias": _random(4, 2)}
  mean, var = _random(4, 3), 0.5 + np.abs(_random(4, 4))
  variables = {"params": params, "batch_stats": {"batch_norm": {"mean": mean, "var": var}}}
  out = model.apply(variables, x)
  norm = params["batch_norm"]
  expected = _np_transformers_stem(x, np.asarray(params["conv"]["kernel"]), norm["scale"],
                                   norm["bias"], mean, var)
  assert expected.shape == (2, 2, 2, 4)  # 12x9 -> conv 6x5 -> pool 2x2 (SAME: 3x3).
  np.testing.assert_allclose(out, expected.reshape(2, 4, 4), rtol=1e-4, atol=1e-4)
  same = ImageAdapter("conv", out_channels=4, position_encoding="none")
  assert same.apply(variables, x).shape == (2, 9, 4)


def test_trainable_concat_and_add():
  x = _random((2, 4, 4, 3))
  model = ImageAdapter(position_encoding="trainable", num_position_channels=5)
  variables, out = _init_apply(model, x)
  embeddings = variables["params"]["position_encoding"]["embeddings"]
  assert embeddings.shape == (16, 5) and out.shape == (2, 16, 8)
  np.testing.assert_array_equal(out[..., :3], x.reshape(2, 16, 3))
  np.testing.assert_array_equal(out[1, :, 3:], embeddings)

  model = ImageAdapter("conv1x1", out_channels=6, position_encoding="trainable",
                       concat_or_add="add")
  variables, out = _init_apply(model, x)
  embeddings = variables["params"]["position_encoding"]["embeddings"]
  assert embeddings.shape == (16, 6) and out.shape == (2, 16, 6)
  conv = variables["params"]["conv1x1"]
  expected = x.reshape(2, 16, 3) @ conv["kernel"][0, 0] + conv["bias"] + embeddings
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_projected_positions_are_a_linear_map_of_the_encoding():
  x = _random((2, 4, 4, 3))
  model = ImageAdapter("conv1x1", out_channels=5, position_encoding="trainable",
                       num_position_channels=6, project_pos_dim=4)
  variables, out = _init_apply(model, x)
  params = variables["params"]
  assert out.shape == (2, 16, 9)
  projection = params["position_projection"]
  expected = params["position_encoding"]["embeddings"] @ projection["kernel"] + projection["bias"]
  np.testing.assert_allclose(out[1, :, 5:], expected, rtol=1e-5, atol=1e-6)
  _, out = _init_apply(ImageAdapter(num_frequency_bands=2, project_pos_dim=3,
                                    concat_or_add="add"), x)
  assert out.shape == (2, 16, 3)


def test_trainable_defaults_to_the_feature_channels():
  _, out = _init_apply(ImageAdapter(position_encoding="trainable"), jnp.ones((1, 2, 2, 3)))
  assert out.shape == (1, 4, 6)


def test_fourier_add_when_channels_match():
  width = fourier_num_channels(2, 2)
  x = _random((1, 3, 4, width))
  _, out = _init_apply(ImageAdapter(num_frequency_bands=2, concat_or_add="add"), x)
  np.testing.assert_allclose(out[0], x.reshape(12, width) + fourier_features((3, 4), 2), rtol=1e-6)


# --- VideoAdapter ----------------------------------------------------------------------------


def test_video_patches_plus_3d_fourier_features():
  x = _random((2, 4, 6, 4, 3))
  model = VideoAdapter(temporal_downsample=2, spatial_downsample=2, num_frequency_bands=3)
  _, out = _init_apply(model, x)
  grid = (2, 3, 2)
  width = 2 * 2 * 2 * 3
  assert out.shape == (2, 12, width + fourier_num_channels(3, 3)) == (2, 12, width + 21)
  np.testing.assert_array_equal(out[..., :width], _np_space_to_depth(x, 2, 2).reshape(2, 12, -1))
  np.testing.assert_array_equal(out[1, :, width:], fourier_features(grid, 3))
  assert stats(model, x.shape[1:]).output_shape == out.shape[1:]


# --- FlowAdapter -----------------------------------------------------------------------------


def _np_flow_patches(frames):
  """Feature ((f * 3 + dy) * 3 + dx) * C + c = frames[f, i + dy - 1, j + dx - 1, c] or 0."""
  b, num_frames, h, w, c = frames.shape
  out = np.zeros((b, h, w, num_frames * 9 * c), frames.dtype)
  for n, i, j, f, dy, dx, ch in itertools.product(range(b), range(h), range(w), range(num_frames),
                                                  range(3), range(3), range(c)):
    y, x = i + dy - 1, j + dx - 1
    if 0 <= y < h and 0 <= x < w:
      out[n, i, j, ((f * 3 + dy) * 3 + dx) * c + ch] = frames[n, f, y, x, ch]
  return out


def test_flow_patches_match_loops_including_borders():
  frames = _random((2, 2, 4, 5, 3))
  np.testing.assert_array_equal(extract_patches_3x3(jnp.asarray(frames)), _np_flow_patches(frames))
  model = FlowAdapter(out_channels=None, num_frequency_bands=4)
  _, out = _init_apply(model, frames)
  assert out.shape == (2, 20, 54 + fourier_num_channels(2, 4))
  np.testing.assert_array_equal(out[..., :54], _np_flow_patches(frames).reshape(2, 20, 54))
  np.testing.assert_array_equal(out[0, :, 54:], fourier_features((4, 5), 4))


def test_flow_default_dense_to_64_channels():
  frames = _random((1, 2, 3, 4, 3))
  model = FlowAdapter(num_frequency_bands=2)
  variables, out = _init_apply(model, frames)
  assert out.shape == (1, 12, 64 + fourier_num_channels(2, 2))
  dense = variables["params"]["patches_linear"]
  expected = _np_flow_patches(frames).reshape(1, 12, 54) @ dense["kernel"] + dense["bias"]
  np.testing.assert_allclose(out[..., :64], expected, rtol=1e-5, atol=1e-5)
  assert FlowAdapter().num_frequency_bands == 64


# --- Validation ------------------------------------------------------------------------------


@pytest.mark.parametrize("make,match", [
    (lambda: ImageAdapter("sparkles"), "ImageAdapter.prep_type"),
    (lambda: ImageAdapter(position_encoding="rotary"), "ImageAdapter.position_encoding"),
    (lambda: ImageAdapter(concat_or_add="mul"), "ImageAdapter.concat_or_add"),
    (lambda: ImageAdapter("conv", spatial_downsample=2), "ImageAdapter.spatial_downsample"),
    (lambda: ImageAdapter(spatial_downsample=0), "ImageAdapter.spatial_downsample"),
    (lambda: ImageAdapter(out_channels=0), "ImageAdapter.out_channels"),
    (lambda: ImageAdapter(num_position_channels=0), "ImageAdapter.num_position_channels"),
    (lambda: ImageAdapter(max_resolution=(4,)), "ImageAdapter.max_resolution"),
    (lambda: ImageAdapter(project_pos_dim=0), "ImageAdapter.project_pos_dim"),
    (lambda: ImageAdapter(position_encoding="none", project_pos_dim=4),
     "ImageAdapter.project_pos_dim"),
    (lambda: ImageAdapter(batch_norm_momentum=1.0), "ImageAdapter.batch_norm_momentum"),
    (lambda: ImageAdapter("conv", stem_padding="valid"), "ImageAdapter.stem_padding"),
    (lambda: ImageAdapter("pixels", stem_padding="transformers"), "ImageAdapter.stem_padding"),
    (lambda: VideoAdapter(temporal_downsample=0), "VideoAdapter.temporal_downsample"),
    (lambda: VideoAdapter(max_resolution=(4, 4)), "VideoAdapter.max_resolution"),
    (lambda: FlowAdapter(out_channels=0), "FlowAdapter.out_channels"),
    (lambda: FlowAdapter(num_frequency_bands=0), "FlowAdapter.num_frequency_bands"),
])
def test_bad_fields_raise_at_construction(make, match):
  with pytest.raises(ValueError, match=match):
    make()


@pytest.mark.parametrize("model,shape,match", [
    (ImageAdapter("patches", spatial_downsample=2), (1, 5, 4, 3), "divide"),
    (VideoAdapter(temporal_downsample=2, spatial_downsample=1), (1, 3, 4, 4, 3), "divide"),
    (ImageAdapter(concat_or_add="add"), (1, 4, 4, 3), "concat_or_add='add'"),
    (ImageAdapter(position_encoding="trainable", num_position_channels=4, concat_or_add="add"),
     (1, 4, 4, 3), "concat_or_add='add'"),
    (ImageAdapter(), (1, 4, 4, 4, 3), r"\[batch, H, W, C\]"),
    (ImageAdapter("conv", stem_padding="transformers"), (1, 4, 6, 3), "at least 5x5"),
    (VideoAdapter(), (1, 4, 4, 3), r"\[batch, T, H, W, C\]"),
    (FlowAdapter(), (1, 4, 4, 3), r"\[batch, 2, H, W, C\]"),
])
def test_bad_inputs_raise_at_call_and_in_stats(model, shape, match):
  with pytest.raises(ValueError, match=match):
    model.init(KEY, jnp.zeros(shape))
  if len(shape) - 1 == (3 if isinstance(model, ImageAdapter) else 4):
    with pytest.raises(ValueError, match=match):
      stats(model, shape[1:])


# --- Stats -----------------------------------------------------------------------------------


ADAPTERS = [
    (ImageAdapter(num_frequency_bands=3), (6, 5, 3)),
    (ImageAdapter("pixels", spatial_downsample=2, position_encoding="trainable"), (5, 6, 3)),
    (ImageAdapter("patches", spatial_downsample=2, position_encoding="none"), (4, 6, 3)),
    (ImageAdapter("patches", spatial_downsample=2, conv_after_patching=True, out_channels=7,
                  position_encoding="trainable", num_position_channels=9), (4, 6, 3)),
    (ImageAdapter("conv1x1", spatial_downsample=3, out_channels=5, num_frequency_bands=2),
     (7, 8, 3)),
    (ImageAdapter("conv1x1", out_channels=5, position_encoding="trainable", num_position_channels=6,
                  project_pos_dim=4), (4, 3, 3)),
    (ImageAdapter(num_frequency_bands=2, project_pos_dim=3, concat_or_add="add"), (4, 3, 3)),
    (ImageAdapter("conv", out_channels=6, position_encoding="trainable", concat_or_add="add"),
     (10, 8, 3)),
    (ImageAdapter("conv", out_channels=fourier_num_channels(2, 2), num_frequency_bands=2,
                  concat_or_add="add"), (9, 9, 2)),
    (ImageAdapter("conv", out_channels=4, num_frequency_bands=2, stem_padding="transformers"),
     (12, 9, 3)),
    (VideoAdapter(temporal_downsample=2, spatial_downsample=2, num_frequency_bands=2),
     (4, 4, 6, 3)),
    (FlowAdapter(num_frequency_bands=2), (2, 3, 4, 3)),
    (FlowAdapter(out_channels=None, num_frequency_bands=2, sine_only=True), (2, 3, 4, 3)),
]


@pytest.mark.parametrize("model,input_shape", ADAPTERS)
def test_stats_match_init_and_output_shape(model, input_shape):
  x = jax.ShapeDtypeStruct((2,) + input_shape, jnp.float32)
  variables = jax.eval_shape(model.init, KEY, x)
  out = jax.eval_shape(model.apply, variables, x)
  assert param_count(model, input_shape) == count_params(variables)
  assert stats(model, input_shape).output_shape == out.shape[1:]


def test_flops_count_the_convs_and_denses():
  conv = ImageAdapter("conv", out_channels=8)
  assert flops(conv, (16, 12, 3)) == 2 * (8 * 6) * 49 * 3 * 8
  conv1x1 = ImageAdapter("conv1x1", spatial_downsample=2, out_channels=8)
  assert flops(conv1x1, (16, 12, 3)) == 2 * (8 * 6) * 3 * 8
  assert flops(FlowAdapter(), (2, 4, 4, 3)) == 2 * 16 * 54 * 64
  assert flops(ImageAdapter(), (4, 4, 3)) == flops(VideoAdapter(), (4, 4, 4, 3)) == 0


# --- End to end ------------------------------------------------------------------------------


def test_perceiver_io_with_conv_image_adapter_trains():
  adapter = ImageAdapter("conv", out_channels=8, num_frequency_bands=2)
  encoder = PerceiverEncoder(num_latents=4, num_latent_channels=16, num_self_attention_blocks=1,
                             num_self_attention_layers_per_block=1, num_self_attention_heads=2)
  model = PerceiverIO(encoder, TrainableQuery(3, 8), PerceiverDecoder(output_channels=5),
                      input_adapter=adapter)
  x = jnp.asarray(_random((2, 8, 8, 3)))
  variables = jax.jit(model.init)(KEY, x)
  assert count_params(variables) == param_count(model, (8, 8, 3))

  @jax.jit
  @functools.partial(jax.value_and_grad, has_aux=True)
  def loss(params):
    out, updates = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                               deterministic=False, mutable=["batch_stats"])
    return jnp.mean(out ** 2), (out, updates)

  (value, (out, updates)), grads = loss(variables["params"])
  assert out.shape == (2, 3, 5) and np.isfinite(value)
  chex.assert_tree_all_finite(grads)
  assert any(np.any(g != 0) for g in jax.tree_util.tree_leaves(grads["input_adapter"]))
  assert not np.allclose(
      updates["batch_stats"]["input_adapter"]["batch_norm"]["mean"],
      variables["batch_stats"]["input_adapter"]["batch_norm"]["mean"])
