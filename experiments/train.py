"""Train a config: python -m experiments.train --config=configs/X.py[:options] --workdir=DIR.

Resumes from DIR's newest checkpoint when there is one, and saves the run's config as
DIR/config.json (eval, plot and sample read it); see perceiver_jax/train/trainer.py.
"""

from absl import app, flags

from experiments import launch
from experiments.launch import FLAGS, setup_processes
from perceiver_jax.train import trainer

flags.adopt_module_key_flags(launch)  # --help lists --config, --workdir, --cpu_devices...
flags.mark_flags_as_required(["config"])


def main(argv):
  del argv
  setup_processes()
  trainer.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  app.run(main)
