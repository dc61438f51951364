"""Evaluate a checkpoint: python -m experiments.eval --workdir=DIR [--step=N] [--config...].

Prints the eval split's metrics as JSON (language modelling: with `bits_per_byte` and
`tokens_per_second`, scored tokens per second of evaluation) and writes them to
DIR/metrics.jsonl (split 'eval'), replacing the record of that step the training run wrote.
The config is the one the run saved (DIR/config.json) with any explicit --config.x=y on top
(experiments/launch.py). With no --step: the newest readable checkpoint (an unreadable newer
one is named in a warning).
"""

import json

from absl import app, flags

from experiments import checkpoint_flag, launch
from experiments.launch import FLAGS, saved_run_config, setup_processes
from perceiver_jax.train import trainer

flags.adopt_module_key_flags(launch)  # --help lists --config, --workdir, --cpu_devices...
flags.adopt_module_key_flags(checkpoint_flag)  # --step.


def main(argv):
  del argv
  config = saved_run_config()
  setup_processes(config)
  metrics = trainer.evaluate_checkpoint(config, FLAGS.workdir, FLAGS.step)
  print(json.dumps(metrics))


if __name__ == "__main__":
  app.run(main)
