"""Plot a run: python -m experiments.plot --workdir=DIR [--num_images=8 --step=N --config...].

The config is the one the run saved (DIR/config.json) with any explicit --config.x=y on top
(experiments/launch.py).

Writes DIR/plots/learning_curves.png (from metrics.jsonl) and, for Perceiver image
classifiers, DIR/plots/cross_attention.png: test images from the eval split with the
cross-attention maps of the checkpoint's latents (the weights the model sows,
`perceiver_jax.nn.attention_maps`) at --step, by default the newest readable checkpoint; for
optical flow, DIR/plots/flow.png: eval frame pairs with their true and predicted flows in the
Middlebury colour coding.
"""

import json
import os

from absl import app, flags
import jax
import numpy as np

from experiments import checkpoint_flag, launch, plots
from experiments.launch import FLAGS, saved_run_config, setup_processes
from perceiver_jax.data import input_pipeline
from perceiver_jax.nn.attention_maps import cross_attention_maps
from perceiver_jax.train.experiment import build_experiment

flags.adopt_module_key_flags(launch)  # --help lists --config, --workdir, --cpu_devices...
flags.DEFINE_integer("num_images", 8, "Eval images in the attention grid.")
flags.adopt_module_key_flags(checkpoint_flag)  # --step.


def plot_run(config, workdir: str, num_images: int = 8, step=None) -> list:
  """Writes the run's plots; returns their paths."""
  directory = os.path.join(workdir, "plots")
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    records = [json.loads(line) for line in f]
  paths = [plots.plot_learning_curves(records, os.path.join(directory, "learning_curves.png"))]
  if config.model.task == "optical_flow":
    return paths + [_plot_flow(config, workdir, num_images, step, directory)]
  if config.model.task != "perceiver_classification" or config.data.task != "image_classification":
    return paths  # The attention grid draws images.
  experiment = build_experiment(config, workdir, read_only=True)  # A run may be saving.
  state, _ = experiment.restore_or_init(step)
  experiment.checkpointer.close()
  batch = next(iter(input_pipeline.make_eval_iterator(
      config.data, global_batch_size=config.eval_batch_size)))
  images = batch["image"][:num_images]
  variables = state.variables
  predictions = np.argmax(jax.device_get(experiment.model.apply(variables, images)), axis=-1)
  maps = cross_attention_maps(experiment.model, variables, images)
  paths.append(plots.plot_attention_grid(images, maps, batch["label"][:num_images],
                                         predictions, os.path.join(directory,
                                                                   "cross_attention.png")))
  return paths


def _plot_flow(config, workdir: str, num_images: int, step, directory: str) -> str:
  """DIR/plots/flow.png: eval pairs, true and predicted flow (the checkpoint at `step`)."""
  experiment = build_experiment(config, workdir, read_only=True)
  state, _ = experiment.restore_or_init(step)
  experiment.checkpointer.close()
  batch = next(iter(input_pipeline.make_eval_iterator(
      config.data, global_batch_size=config.eval_batch_size)))
  frames = batch["frames"][:num_images]
  predictions = jax.device_get(jax.jit(experiment.model.apply)(state.variables, frames))
  return plots.plot_flow_examples(frames, batch["flow"][:num_images], predictions,
                                  os.path.join(directory, "flow.png"))


def main(argv):
  del argv
  config = saved_run_config()
  setup_processes(config)
  for path in plot_run(config, FLAGS.workdir, FLAGS.num_images, FLAGS.step):
    print(path)


if __name__ == "__main__":
  app.run(main)
