"""Task models: every task and variant builds from its tiny config, runs forward and backward
with its loss, and matches the analytic parameter count; paper configs have the paper's sizes."""

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from perceiver_jax import tasks
from perceiver_jax.nn.attention import AttentionConfig
from perceiver_jax.train import losses
from perceiver_jax.data.masking import mask_tokens
from perceiver_jax.nn.model_stats import count_params, param_count
from perceiver_jax.data.tokenizer import NUM_SPECIAL, PAD, VOCAB_SIZE

CASES = [(name, variant) for name, module in tasks.TASKS.items() for variant in module.VARIANTS]


def _shapes(inputs):
  if isinstance(inputs, dict):
    return {name: x.shape[1:] for name, x in inputs.items()}
  return inputs.shape[1:]


def _random_inputs(config, batch_size, seed=0):
  """Random inputs of example_inputs' shapes: ids in the byte range, one-hot labels."""
  rng = np.random.default_rng(seed)

  def draw(name, x):
    if jnp.issubdtype(x.dtype, jnp.integer):
      return jnp.asarray(rng.integers(NUM_SPECIAL, VOCAB_SIZE, x.shape), x.dtype)
    if name == "label":
      return jax.nn.one_hot(rng.integers(0, x.shape[-1], x.shape[0]), x.shape[-1])
    return jnp.asarray(rng.uniform(-1, 1, x.shape), x.dtype)

  example = tasks.example_inputs(config, batch_size)
  if isinstance(example, dict):
    return {name: draw(name, x) for name, x in example.items()}
  return draw(None, example)


def _loss(config, model, variables, inputs, rng):
  """The task's training loss on random targets; returns (loss, (outputs, new_state))."""
  rngs = {"dropout": rng, "masking": rng}
  mutable = [k for k in variables if k != "params"]
  if config.task == "masked_language_modeling":
    inputs, labels, weights = mask_tokens(rng, inputs, mask_prob=0.5)
  out, state = model.apply(variables, inputs, deterministic=False, rngs=rngs, mutable=mutable)
  batch = out["label"].shape[0] if isinstance(out, dict) else out.shape[0]
  targets = np.random.default_rng(1)
  cross_entropy = optax.softmax_cross_entropy_with_integer_labels
  if config.task == "masked_language_modeling":
    loss = jnp.sum(cross_entropy(out, labels) * weights) / jnp.sum(weights)
  elif config.task == "optical_flow":
    loss = losses.end_point_error(out, jnp.asarray(targets.normal(size=out.shape), jnp.float32))
  elif config.task == "multimodal_autoencoding":
    loss = losses.multimodal_autoencoding_loss(
        config.loss_weights, out, dict(inputs, label=jnp.argmax(inputs["label"], -1)))
  elif config.task == "language_modeling":
    loss = jnp.mean(cross_entropy(out, targets.integers(0, out.shape[-1], out.shape[:2])))
  elif config.task == "audio_classification":
    loss = jnp.mean(optax.sigmoid_binary_cross_entropy(out, targets.integers(0, 2, out.shape)))
  else:
    loss = jnp.mean(cross_entropy(out, targets.integers(0, out.shape[-1], batch)))
  return loss, (out, state)


@pytest.mark.parametrize("name,variant", CASES)
def test_tiny_task_model_forward_backward_and_param_count(name, variant):
  config = tasks.tiny_config(name, variant)
  assert config.task == name
  model = tasks.build(config)
  inputs = _random_inputs(config, 2)
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), inputs)
  assert param_count(model, _shapes(inputs)) == count_params(variables)

  # Zero-initialised leaves (e.g. the original Perceiver's zero logits layer, which passes no
  # gradient back at init) get small values, so every parameter can show a gradient.
  noise = np.random.default_rng(2)
  params = jax.tree_util.tree_map(
      lambda x: x if np.any(np.asarray(x)) else jnp.asarray(0.1 * noise.normal(size=x.shape), x.dtype),
      variables["params"])
  rng = jax.random.PRNGKey(1)
  loss_fn = lambda p: _loss(config, model, dict(variables, params=p), inputs, rng)
  (loss, (out, _)), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params)
  assert np.isfinite(float(loss)) and float(loss) > 0
  assert jax.tree_util.tree_map(lambda x: x.shape, out) == _expected_output_shapes(config, 2)
  chex.assert_tree_all_finite(grads)
  # Every parameter array takes part (a non-zero gradient entry), except in the multimodal
  # input: the label is always masked (its padding is overwritten by the mask token) and
  # the image/audio mask tokens are never used (mask probability 0), as in the official model;
  # and the key biases of one-head attentions, which a softmax ignores (exactly zero with the
  # folded key/value projections of multi_head_attention.py).
  unused = {"['input_adapter']['label_padding']", "['input_adapter']['image_mask_token']",
            "['input_adapter']['audio_mask_token']"} if name == "multimodal_autoencoding" else set()
  dead = {jax.tree_util.keystr(path) for path, g in jax.tree_util.tree_leaves_with_path(grads)
          if not np.any(np.asarray(g))}
  key_biases = {p for p in dead if p.endswith("['attention']['key']['bias']")}
  assert dead - key_biases == unused
  assert all(_one_head_attention(params, p) for p in key_biases)


def _one_head_attention(params, key_bias_path: str) -> bool:
  """Whether the attention owning the key bias at `key_bias_path` has one head."""
  node = params
  for name in key_bias_path.strip("[]'").split("']['"):
    node = node[name]
  return node.shape[0] == 1  # A key bias is [heads, head_channels].


def _expected_output_shapes(c, b):
  if c.task == "masked_language_modeling":
    return (b, c.max_seq_len, c.vocab_size)
  if c.task == "language_modeling":
    return (b, c.perceiver_ar.num_latents, c.perceiver_ar.vocab_size)
  if c.task == "optical_flow":
    return (b,) + tuple(c.image_size) + (2,)
  if c.task == "multimodal_autoencoding":
    return {"image": (b, c.num_frames, c.image_size, c.image_size, 3),
            "audio": (b, c.num_frames * c.audio_samples_per_frame), "label": (b, c.num_classes)}
  return (b, c.num_classes)


@pytest.mark.parametrize("name", sorted(tasks.TASKS))
def test_the_first_variant_is_the_default_and_an_unknown_one_raises(name):
  assert tasks.default_config(name).variant == tasks.get(name).VARIANTS[0]
  with pytest.raises(ValueError, match=f"{name} variant must be one of"):
    tasks.default_config(name, "sinusoidal")


@pytest.mark.parametrize("name,variant,millions", [
    ("perceiver_classification", "imagenet", 44.9),  # Perceiver paper, ImageNet table.
    ("image_classification", "fourier", 48.4),  # Perceiver IO paper, ImageNet table.
    ("image_classification", "learned", 62.3),
    ("image_classification", "conv", 48.6),
    ("masked_language_modeling", "bytes", 201.1),  # Perceiver IO paper, GLUE table (201M).
])
def test_paper_configs_have_the_papers_parameter_counts(name, variant, millions):
  config = tasks.default_config(name, variant)
  shapes = _shapes(tasks.example_inputs(config, 1))
  assert round(param_count(tasks.build(config), shapes) / 1e6, 1) == millions


def _tiny_multimodal():
  """The tiny multimodal autoencoder: (config, random inputs, variables, jitted apply)."""
  config = tasks.tiny_config("multimodal_autoencoding")
  model = tasks.build(config)
  inputs = _random_inputs(config, 2)
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), inputs)
  return config, inputs, variables, jax.jit(model.apply)


def test_multimodal_subsampled_decoding_equals_the_full_decode_at_those_points():
  config, inputs, variables, apply = _tiny_multimodal()
  full = apply(variables, inputs)
  image_points, audio_points = np.array([7, 0, 100, 127]), np.array([3, 1])
  sub = apply(variables, inputs, subsampled_points={"image": image_points, "audio": audio_points})
  spp = config.samples_per_patch
  assert sub["image"].shape == (2, 4, 3) and sub["audio"].shape == (2, 2 * spp)
  np.testing.assert_allclose(sub["image"], full["image"].reshape(2, -1, 3)[:, image_points],
                             rtol=1e-4, atol=1e-5)
  audio_patches = full["audio"].reshape(2, -1, spp)[:, audio_points].reshape(2, -1)
  np.testing.assert_allclose(sub["audio"], audio_patches, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(sub["label"], full["label"], rtol=1e-4, atol=1e-5)
  # Per-example points and a modality left out (decoded in full).
  batch_points = np.array([[5, 9], [120, 3]])
  sub = apply(variables, inputs, subsampled_points={"image": batch_points})
  np.testing.assert_allclose(sub["image"], full["image"].reshape(2, -1, 3)[
      np.arange(2)[:, None], batch_points], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(sub["audio"], full["audio"], rtol=1e-4, atol=1e-5)


def test_multimodal_label_is_masked_so_outputs_ignore_the_input_label():
  config, inputs, variables, apply = _tiny_multimodal()
  out = apply(variables, inputs)
  other = apply(variables, dict(inputs, label=jnp.roll(inputs["label"], 1, axis=-1)))
  np.testing.assert_array_equal(out["label"], other["label"])
  config.mask_probs.label = 0.0  # Unmasked, the label input reaches every output.
  unmasked = jax.jit(tasks.build(config).apply)
  rolled = dict(inputs, label=jnp.roll(inputs["label"], 1, axis=-1))
  assert not np.allclose(unmasked(variables, inputs)["label"], unmasked(variables, rolled)["label"])


def test_bfloat16_compute_keeps_float32_params():
  config = tasks.tiny_config("image_classification", "conv")
  config.dtype = "bfloat16"
  model = tasks.build(config)
  inputs = _random_inputs(config, 2)
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), inputs)
  assert {x.dtype for x in jax.tree_util.tree_leaves(variables)} == {jnp.dtype(jnp.float32)}
  assert model.apply(variables, inputs).dtype == jnp.bfloat16


@pytest.mark.parametrize("name", sorted(tasks.TASKS))
def test_attention_settings_are_in_every_config_and_reach_the_modules(name):
  """Every task config carries its modules' attention settings (AttentionConfig's fields as a
  sub-dict), so the command line can set them; set values reach the built module as one
  AttentionConfig, and the encoder's cross_attention keys left None follow its attention."""
  for config in (tasks.default_config(name), tasks.tiny_config(name)):
    sections = [s for s in ("encoder", "decoder", "perceiver_ar") if s in config]
    assert sections
    for section in sections:
      assert config[section].attention.to_dict() == dict(
          implementation="xla", chunk_size=1024, dropout_rate=0.0, sow_weights=False)
    if "encoder" in config:
      assert set(config.encoder.cross_attention.values()) == {None}
  config = tasks.tiny_config(name)
  for section in sections:
    config[section].attention.implementation = "chunked"
    config[section].attention.chunk_size = 8
  modules = lambda model: [model if section == "perceiver_ar" else getattr(model, section)
                           for section in sections]
  model = tasks.build(config)
  assert all(m.attention == AttentionConfig("chunked", chunk_size=8) for m in modules(model))
  if "encoder" in config:
    assert model.encoder.cross_attention is None
    config.encoder.cross_attention.implementation = "xla"
    encoder = tasks.build(config).encoder
    assert encoder.cross_attention == AttentionConfig("xla", chunk_size=8)
    assert encoder.attention == AttentionConfig("chunked", chunk_size=8)


def test_attention_config_errors_name_the_path():
  config = tasks.tiny_config("image_classification")
  config.encoder.attention.chunk = 8
  with pytest.raises(ValueError, match=r"config.encoder.attention has \['chunk'\], not fields "
                                       r"of AttentionConfig; its fields are \['chunk_size'"):
    tasks.build(config)
  config = tasks.tiny_config("image_classification")
  config.encoder.cross_attention.implementation = "flash"
  with pytest.raises(ValueError, match=r"config.encoder.cross_attention: AttentionConfig."
                                       r"implementation must be one of"):
    tasks.build(config)


def test_config_errors_name_the_field():
  config = tasks.tiny_config("image_classification")
  config.encoder.num_latent = 8
  with pytest.raises(ValueError, match=r"config.encoder has \['num_latent'\].*PerceiverEncoder"):
    tasks.build(config)
  config = tasks.tiny_config("optical_flow")
  config.dtype = "float8"
  with pytest.raises(ValueError, match="config.dtype"):
    tasks.build(config)
  config = tasks.tiny_config("sequence_classification")
  config.input_adapter.vocab_size = 300
  with pytest.raises(ValueError, match="config.input_adapter sets.*vocab_size"):
    tasks.build(config)
  config = tasks.tiny_config("multimodal_autoencoding")
  config.image_size = 10
  with pytest.raises(ValueError, match="config.image_size"):
    tasks.build(config)
  with pytest.raises(ValueError, match="unknown task"):
    tasks.default_config("segmentation")
  config = tasks.tiny_config("masked_language_modeling")
  config.encoder.num_self_attention_heads = 3  # 16 latent channels are not divisible by 3.
  with pytest.raises(ValueError, match="num_self_attention_heads"):
    jax.eval_shape(tasks.build(config).init, jax.random.PRNGKey(0),
                   tasks.example_inputs(config, 1))


def test_mlm_input_queries_are_the_adapted_inputs():
  config = tasks.tiny_config("masked_language_modeling")
  config.output_query = "inputs"
  config.input_adapter.update(conv_width=3, position_init="sinusoidal")
  model = tasks.build(config)
  ids = _random_inputs(config, 2)
  variables = model.init(jax.random.PRNGKey(0), ids)
  assert "output_query" not in variables["params"]  # No learned queries.
  assert variables["params"]["input_adapter"]["conv"]["kernel"].shape == (3, 8, 8)
  logits, state = model.apply(variables, ids, capture_intermediates=True)
  assert logits.shape == (2, config.max_seq_len, VOCAB_SIZE)
  captured = state["intermediates"]
  np.testing.assert_array_equal(captured["output_query"]["__call__"][0],
                                captured["input_adapter"]["__call__"][0])
  assert param_count(model, ids.shape[1:]) == count_params(variables)


def test_mlm_output_query_errors_name_the_field():
  config = tasks.tiny_config("masked_language_modeling")
  config.output_query = "fourier"
  with pytest.raises(ValueError, match="config.output_query must be one of"):
    tasks.build(config)
  config.output_query, config.output_query_channels = "inputs", 12
  with pytest.raises(ValueError, match="config.output_query_channels to None"):
    tasks.build(config)


@pytest.mark.parametrize("name", ["sequence_classification", "masked_language_modeling"])
def test_text_tasks_ignore_padded_bytes_under_the_pad_mask(name):
  config = tasks.tiny_config(name)
  model = tasks.build(config)
  ids = _random_inputs(config, 2)
  ids = ids.at[:, 8:].set(PAD)
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), ids)
  apply = jax.jit(model.apply)
  scored = lambda x: x[:, :8] if name == "masked_language_modeling" else x  # Unpadded outputs.
  junk = ids.at[:, 8:].set(77)  # Other bytes where the mask says padding.
  masked = [scored(apply(variables, x, pad_mask=ids != PAD)) for x in (ids, junk)]
  np.testing.assert_allclose(masked[0], masked[1], rtol=1e-5, atol=1e-6)
  unmasked = [scored(apply(variables, x)) for x in (ids, junk)]
  assert not np.allclose(unmasked[0], unmasked[1], rtol=1e-5, atol=1e-6)


def _apply_shapes(config, variables_for, inputs):
  """Traces (no compile) the built model of `config`, initialised for `variables_for` inputs,
  on `inputs`."""
  model = tasks.build(config)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), variables_for)
  return jax.eval_shape(model.apply, variables, inputs)


def _with_batch(tree, batch):
  return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct((batch,) + x.shape[1:], x.dtype),
                                tree)


@pytest.mark.parametrize("task, model", [("perceiver_classification", "Perceiver"),
                                         ("image_classification", "PerceiverIO"),
                                         ("multimodal_autoencoding", "PerceiverIO"),
                                         ("language_modeling", "PerceiverAR")])
def test_an_empty_batch_is_a_clear_error(task, model):
  config = tasks.tiny_config(task)
  inputs = tasks.example_inputs(config, 1)
  with pytest.raises(ValueError, match=f"{model} got an empty batch \\(inputs of shapes "):
    _apply_shapes(config, inputs, _with_batch(inputs, 0))


def test_inputs_with_other_channels_than_at_init_name_the_expected_shape():
  config = tasks.tiny_config("perceiver_classification")
  init = jax.ShapeDtypeStruct((1, 8, 8, 3), jnp.float32)
  with pytest.raises(ValueError, match=re.escape(
      "Perceiver's parameters were initialised for inputs [batch, *index_dims, 3] (2 index "
      "dims), got shape (1, 8, 8, 4).")):
    _apply_shapes(config, init, jax.ShapeDtypeStruct((1, 8, 8, 4), jnp.float32))
  for task, variant, adapter, param, existing, needed in [
      ("image_classification", "conv", "ImageAdapter", "input_adapter/conv/kernel",
       (7, 7, 3, 6), (7, 7, 4, 6)),
      ("point_cloud_classification", None, "PointCloudAdapter",
       "encoder/cross_attention_first/input_norm/scale", (24,), (25,))]:
    config = tasks.tiny_config(task, variant)
    init = tasks.example_inputs(config, 1)
    other = jax.ShapeDtypeStruct(init.shape[:-1] + (init.shape[-1] + 1,), init.dtype)
    with pytest.raises(ValueError, match=re.escape(
        f"PerceiverIO expects inputs of the shape {adapter} takes with the channels (and patch "
        f"or frame sizes) its parameters were initialised for, got shape {other.shape}: "
        f"parameter /{param} has shape {existing}, these inputs need {needed}.")):
      _apply_shapes(config, init, other)
