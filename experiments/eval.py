"""Evaluate a checkpoint: python -m experiments.eval --config=... --workdir=DIR [--step=N].

Prints the eval split's metrics and writes them to DIR/metrics.jsonl (split 'eval'), replacing
the record of that step the training run wrote. With no --step: the newest readable checkpoint
(an unreadable newer one is named in a warning).
"""

import json

from absl import app, flags

from experiments import checkpoint_flag, launch
from experiments.launch import FLAGS, setup_processes
from perceiver_jax.train import trainer

flags.adopt_module_key_flags(launch)  # --help lists --config, --workdir, --cpu_devices...
flags.adopt_module_key_flags(checkpoint_flag)  # --step.


def main(argv):
  del argv
  setup_processes()
  metrics = trainer.evaluate_checkpoint(FLAGS.config, FLAGS.workdir, FLAGS.step)
  print(json.dumps(metrics))


if __name__ == "__main__":
  app.run(main)
