"""Plots: learning curves and cross-attention maps (the softmax weights the model sows) render
to PNG."""

import json
import os
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib.image
import numpy as np

from configs import digits_perceiver
from experiments.plot import plot_run
from perceiver_jax import tasks
from experiments import plots
from perceiver_jax.nn.attention import AttentionConfig
from perceiver_jax.nn.attention_maps import cross_attention_maps
from random_params import random_params


def _model():
  config = digits_perceiver.get_config("tiny")
  return config, tasks.build(config.model)


def test_cross_attention_maps_are_distributions_over_pixels():
  _, model = _model()
  images = jnp.asarray(np.random.default_rng(0).uniform(size=(3, 8, 8, 1)), jnp.float32)
  params = random_params(model, images)
  maps = cross_attention_maps(model, {"params": params}, images)
  latents = model.encoder.num_latents
  assert maps.shape == (3, latents, 8, 8)
  assert np.all(maps >= 0)
  np.testing.assert_allclose(maps.sum(axis=(-2, -1)), 1.0, rtol=1e-5)
  assert not np.allclose(maps[0], maps[1])  # They depend on the image.
  # Without keys every pixel is equally likely: uniform maps.
  attention = params["encoder"]["cross_attention_first"]["attention"]
  zeroed = jax.tree_util.tree_map(jnp.zeros_like, attention["key"])
  params["encoder"]["cross_attention_first"]["attention"] = dict(attention, key=zeroed)
  uniform = cross_attention_maps(model, {"params": params}, images)
  np.testing.assert_allclose(uniform, 1 / 64, rtol=1e-5)


def test_cross_attention_maps_are_the_weights_the_model_applies():
  """The maps weight the values exactly as the model's first cross-attention does: the
  attention output (the input of its 'out' projection) equals maps @ (LN(inputs) Wv + bv)."""
  _, model = _model()
  images = jnp.asarray(np.random.default_rng(3).uniform(size=(2, 8, 8, 1)), jnp.float32)
  params = random_params(model, images)
  maps = cross_attention_maps(model, {"params": params}, images)
  seen = {}

  def record(next_fun, args, kwargs, context):
    path = context.module.path
    if path[-3:] == ("cross_attention_first", "attention", "out"):
      seen["attended"] = args[0]  # [b, latents, 1 head, v]
    if path[-2:] == ("cross_attention_first", "input_norm"):
      seen["inputs"] = args[0]  # [b, inputs, c]
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    model.apply({"params": params}, images)
  layer = params["encoder"]["cross_attention_first"]
  normed = nn.LayerNorm(epsilon=1e-5).apply({"params": layer["input_norm"]}, seen["inputs"])
  value = layer["attention"]["value"]
  values = jnp.einsum("bkc,chd->bkhd", normed, value["kernel"]) + value["bias"]
  expected = jnp.einsum("bqk,bkhd->bqhd", maps.reshape(maps.shape[:2] + (-1,)), values)
  np.testing.assert_allclose(seen["attended"], expected, rtol=1e-4, atol=1e-5)


def test_cross_attention_maps_do_not_depend_on_the_backend_and_nothing_is_sown_by_default():
  """A model whose cross-attention runs 'chunked' (which keeps no weights) gives the maps of
  the 'xla' one; run as built, the model sows nothing."""
  config, model = _model()
  images = jnp.asarray(np.random.default_rng(5).uniform(size=(2, 8, 8, 1)), jnp.float32)
  params = random_params(model, images)
  config.model.encoder.cross_attention.implementation = "chunked"
  chunked = tasks.build(config.model)
  assert chunked.encoder.cross_attention == AttentionConfig("chunked")
  np.testing.assert_allclose(cross_attention_maps(chunked, {"params": params}, images),
                             cross_attention_maps(model, {"params": params}, images), rtol=1e-6)
  _, state = model.apply({"params": params}, images, mutable=["intermediates"])
  assert not state.get("intermediates")


def test_learning_curves_read_the_last_record_of_each_step():
  records = [{"step": s, "split": "train", "loss": 1.0} for s in (1, 2, 3, 4)]
  records += [{"step": 2, "split": "eval", "loss": 0.9}]  # A resume from step 2 replays 3, 4.
  records += [{"step": s, "split": "train", "loss": 0.5} for s in (3, 4)]
  records += [{"step": 4, "split": "eval", "loss": 0.4}]
  assert [(r["split"], r["step"], r["loss"]) for r in plots.latest_records(records)] == [
      ("train", 1, 1.0), ("train", 2, 1.0), ("eval", 2, 0.9), ("train", 3, 0.5),
      ("train", 4, 0.5), ("eval", 4, 0.4)]


def test_pngs_have_the_figure_size(tmp_path):
  records = [{"step": s, "split": "train", "loss": 2.0 / s, "accuracy": 1 - 1.0 / s}
             for s in range(1, 6)] + [{"step": 5, "split": "eval", "loss": 0.5, "accuracy": 0.8}]
  path = plots.plot_learning_curves(records, str(tmp_path / "curves.png"))
  assert matplotlib.image.imread(path).shape[:2] == (400, 1000)
  for record in records:  # A language model's records: a third panel for bits per byte.
    record["bits_per_byte"] = record["loss"] / np.log(2)
  path = plots.plot_learning_curves(records, str(tmp_path / "lm_curves.png"))
  assert matplotlib.image.imread(path).shape[:2] == (400, 1500)
  images = np.random.default_rng(1).uniform(size=(2, 8, 8, 1))
  maps = np.random.default_rng(2).uniform(size=(2, 6, 8, 8))
  path = plots.plot_attention_grid(images, maps, [3, 4], [3, 1], str(tmp_path / "grid.png"),
                                   latents_shown=3)
  assert matplotlib.image.imread(path).shape[:2] == (320, 640)


def test_plot_run_writes_both_plots_for_a_trained_digits_run(digits_data_dir, digits_tiny_run,
                                                             tmp_path):
  config = digits_perceiver.get_config("tiny")
  config.data.data_dir = digits_data_dir
  shutil.copytree(digits_tiny_run, tmp_path / "work")
  paths = plot_run(config, str(tmp_path / "work"), num_images=3)
  assert [os.path.basename(p) for p in paths] == ["learning_curves.png", "cross_attention.png"]
  assert all(os.path.getsize(p) > 1000 for p in paths)
  with open(tmp_path / "work" / "metrics.jsonl") as f:
    assert any(json.loads(line)["split"] == "eval" for line in f)
