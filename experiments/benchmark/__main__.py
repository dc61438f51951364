"""`python -m experiments.benchmark`: runs the benchmark launcher (launcher.py)."""

from absl import app

from experiments.benchmark import launcher

if __name__ == "__main__":
  app.run(launcher.main)
