"""The launchers as a user runs them: --help lists each launcher's own flags; eval, plot and
sample restore the newest readable checkpoint past a damaged newer one; evaluating a
checkpoint writes one eval record for its step and no progress bar."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from configs import digits_perceiver
from perceiver_jax.train import trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = ("--config", "--workdir", "--cpu_devices", "--coordinator_address")


def test_help_of_every_launcher_lists_its_flags():
  expected = {"train": SHARED, "eval": SHARED + ("--step",),
              "plot": SHARED + ("--num_images", "--step"),
              "sample": SHARED + ("--prompt", "--prompts_file", "--cache", "--max_latents",
                                  "--[no]eos", "--step"),
              "benchmark": ("--configs", "--output", "--cpu_devices")}
  processes = {name: subprocess.Popen([sys.executable, "-m", f"experiments.{name}", "--help"],
                                      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True) for name in expected}
  for name, process in processes.items():
    output, _ = process.communicate(timeout=300)  # absl's --help exits with status 1.
    missing = [flag for flag in expected[name] if f"  {flag}:" not in output]
    assert not missing, f"experiments.{name} --help lacks {missing}:\n{output[-3000:]}"


def _config(data_dir):
  config = digits_perceiver.get_config("tiny")  # Checkpoints at steps 3 and 6, eval at 6.
  config.data.data_dir = data_dir
  return config


@pytest.fixture(scope="module")
def trained(digits_data_dir, tmp_path_factory):
  """A trained digits tiny workdir (copy it before changing it)."""
  workdir = str(tmp_path_factory.mktemp("trained") / "work")
  trainer.train_and_evaluate(_config(digits_data_dir), workdir)
  return workdir


def _copy(workdir, tmp_path, name):
  copy = str(tmp_path / name)
  shutil.copytree(workdir, copy)
  return copy


def _eval_records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [r for r in map(json.loads, f) if r["split"] == "eval"]


def test_evaluating_a_checkpoint_replaces_its_eval_record_without_a_progress_bar(
    digits_data_dir, trained, tmp_path, capfd):
  workdir = _copy(trained, tmp_path, "work")
  (trained_record,) = _eval_records(workdir)
  capfd.readouterr()
  for _ in range(2):
    metrics = trainer.evaluate_checkpoint(_config(digits_data_dir), workdir)
  (record,) = _eval_records(workdir)  # The training run's step-6 record, replaced.
  assert record == {"step": 6, "split": "eval", **metrics}
  assert record.keys() == trained_record.keys()
  assert "step/s" not in capfd.readouterr().err


def _damage_newest(workdir, how):
  state = os.path.join(workdir, "checkpoints", "6", "state")
  files = [os.path.join(root, name) for root, _, names in os.walk(state) for name in names]
  if how == "truncate":
    for path in files:
      if os.path.basename(os.path.dirname(path)) == "d":
        os.truncate(path, os.path.getsize(path) // 2)
  else:
    with open(os.path.join(state, "_METADATA"), "w") as f:
      f.write("{not json")


def test_eval_and_plot_fall_back_past_a_damaged_newest_checkpoint(digits_data_dir, trained,
                                                                   tmp_path):
  runs = {"eval": _copy(trained, tmp_path, "eval"), "plot": _copy(trained, tmp_path, "plot")}
  _damage_newest(runs["eval"], "truncate")  # Tensorstore: OUT_OF_RANGE / DATA_LOSS.
  _damage_newest(runs["plot"], "metadata")  # JSONDecodeError.
  processes = {name: subprocess.Popen(
      [sys.executable, "-m", f"experiments.{name}", "--config=configs/digits_perceiver.py:tiny",
       f"--workdir={workdir}", f"--config.data.data_dir={digits_data_dir}"],
      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for name, workdir in runs.items()}
  for name, process in processes.items():
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]
    assert "cannot restore step 6" in stderr and "(unreadable: [6])" in stderr, stderr[-3000:]
    assert "Event loop is closed" not in stderr
  assert sorted(r["step"] for r in _eval_records(runs["eval"])) == [3, 6]
  assert os.path.getsize(os.path.join(runs["plot"], "plots", "cross_attention.png")) > 1000
  with pytest.raises(ValueError, match=r"step 6 in .* is unreadable .*readable steps \[3\]"):
    trainer.evaluate_checkpoint(_config(digits_data_dir), runs["eval"], step=6)


def test_the_checkpoint_readers_import_into_one_process():
  """eval, plot and sample share --step (experiments/checkpoint_flag.py): a notebook or a test
  may import all three without absl's DuplicateFlagError."""
  code = "import experiments.eval, experiments.plot, experiments.sample"
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]


def test_sample_batches_prompts_of_different_lengths_with_the_latent_cache(tmp_path):
  """sample_from_checkpoint (experiments/sample.py) on a saved random tiny Perceiver AR: two
  prompts of different lengths in one left-padded batch, the latent cache, ending at EOS; the
  longer prompt's row equals its sample alone, and new tokens/s come back."""
  # pylint: disable=import-outside-toplevel
  import jax
  import numpy as np
  from configs import perceiver_ar_bytes
  from experiments.sample import sample_from_checkpoint
  from perceiver_jax.train.experiment import build_experiment
  config = perceiver_ar_bytes.get_config("stdlib,tiny")
  workdir = str(tmp_path / "work")
  experiment = build_experiment(config, workdir)
  state, _ = experiment.restore_or_init()
  rng = np.random.default_rng(0)  # Random weights: the zero-initialised head emits only PAD.
  params = jax.tree_util.tree_map(lambda p: p + 0.3 * rng.normal(size=p.shape).astype(p.dtype),
                                  state.params)
  experiment.checkpointer.save(1, state.replace(params=params), force=True)
  experiment.checkpointer.close()
  kwargs = dict(temperature=0.0, cache="latents", max_latents=12, stop_at_eos=True)
  texts, tokens_per_s = sample_from_checkpoint(config, workdir, ["a", "def main():"], 20,
                                               return_speed=True, **kwargs)
  assert len(texts) == 2 and tokens_per_s > 0
  assert texts[1] == sample_from_checkpoint(config, workdir, "def main():", 20, **kwargs)[0]
