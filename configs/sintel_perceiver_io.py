"""The Perceiver IO paper's optical-flow model on MPI-Sintel (TFDS 'mpi_sintel', manual).

The paper's model (perceiver_jax/tasks/optical_flow.py: 368x496 crops, 2048 latents x 512,
24 self-attention layers) reaches an end-point error of 1.81 (clean) / 2.42 (final) over
Sintel's training pairs after training on AutoFlow, which TFDS lacks; here it trains on
Sintel's own pairs instead: random 368x496 crops with random scaling, flips and brightness /
contrast jitter of `train[:90%]`, evaluated on the centre 368x496 crop of the held-out final
scenes `train[90%:]` (the paper evaluates whole frames, tiled). Prepare the data once:

  tfds build mpi_sintel --imports=perceiver_jax.data.datasets --manual_dir=DIR

with MPI-Sintel-complete.zip in DIR. Options: the pass, 'clean' (default) or 'final'; the size,
'full' (default) or 'tiny' (the test-size model on 6x8 crops for 2 steps).

  python -m experiments.train --config=configs/sintel_perceiver_io.py:final \\
      --workdir=workdirs/sintel_final
"""

import ml_collections

from configs import common
from perceiver_jax import tasks

OPTIONS = {"render_pass": ("clean", "final"), "size": common.SIZES}
PAPER_EPE = {"clean": 1.81, "final": 2.42}  # Sintel train, after AutoFlow training.


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """The Sintel experiment with the options `arg` (see the module docstring)."""
  options = common.parse_options(arg, OPTIONS)
  c = common.get_config()
  c.model = tasks.default_config("optical_flow")
  c.data.update(name=f"mpi_sintel/{options.render_pass}", task="optical_flow",
                train_split="train[:90%]", eval_split="train[90%:]", shuffle_buffer=1000)
  c.data.flow.update(crop_size=tuple(c.model.image_size), max_scale=0.2, flip_horizontal=True,
                     flip_vertical=True, brightness=0.1, contrast=0.1)
  c.optimizer.update(name="adamw", learning_rate=4e-4, weight_decay=1e-4,
                     schedule="warmup_cosine", warmup_steps=1000, clip_norm=1.0)
  c.checkpoint.update(best_metric="epe", best_mode="min")
  c.batch_size = 16
  c.eval_batch_size = 8
  c.num_train_steps = 50_000
  c.log_every_steps = 100
  c.eval_every_steps = 5000
  c.checkpoint_every_steps = 5000
  if options.size == "tiny":
    c.model = tasks.tiny_config("optical_flow")
    c.data.flow.crop_size = tuple(c.model.image_size)
    common.tiny_run(c)
  return c
