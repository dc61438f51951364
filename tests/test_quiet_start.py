"""`make demo`'s console: the launchers show the run (its devices, progress bar and
evaluations, the plots written) without TensorFlow's start-up INFO lines, JAX's backend probe
or tf.data's warning about a partly read cache; other stderr lines pass."""

import os
import subprocess
import sys

from perceiver_jax.data import tensorflow_cpu

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOISE = ("oneDNN custom operations", "absl::InitializeLog()", "Unable to initialize backend",
         "did not fully read the dataset being cached")


def _launch(module, workdir, data_dir):
  command = [sys.executable, "-m", module, "--config=configs/digits_perceiver.py:tiny",
             f"--workdir={workdir}", f"--config.data.data_dir={data_dir}",
             "--config.num_train_steps=2", "--config.eval_every_steps=2",
             "--config.checkpoint_every_steps=2", "--config.optimizer.warmup_steps=1"]
  run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  return run


def test_train_and_plot_show_the_run_and_no_start_up_noise(digits_data_dir, tmp_path):
  workdir = tmp_path / "work"
  train = _launch("experiments.train", workdir, digits_data_dir)
  plot = _launch("experiments.plot", workdir, digits_data_dir)
  for run in (train, plot):
    assert [noise for noise in NOISE if noise in run.stderr] == [], run.stderr
    assert "Process 0 of 1;" in run.stderr
  assert "2/2 [" in train.stderr  # The progress bar, finished.
  assert "step 2 eval: accuracy=" in train.stdout
  assert plot.stdout.split() == [str(workdir / "plots" / name)
                                 for name in ("learning_curves.png", "cross_attention.png")]


def test_stderr_filter_drops_only_the_matching_lines(capfd):
  with tensorflow_cpu._stderr_without(tensorflow_cpu._NOISE):
    os.write(2, b"I0000 00:00:17.5 port.cc:153] oneDNN custom operations are on.\n"
                b"W0000 00:00:17.6 cache_dataset_ops.cc:912] a warning\n"
                b"module.py:3: UserWarning: a Python warning\n")
  assert capfd.readouterr().err == ("W0000 00:00:17.6 cache_dataset_ops.cc:912] a warning\n"
                                    "module.py:3: UserWarning: a Python warning\n")
