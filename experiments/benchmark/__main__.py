"""`python -m experiments.benchmark`: runs the benchmark launcher (launcher.py)."""

from absl import app, flags

from experiments.benchmark import launcher

flags.adopt_module_key_flags(launcher)  # --help lists the launcher's flags.

if __name__ == "__main__":
  app.run(launcher.main)
