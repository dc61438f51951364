"""The launchers as a user runs them: --help lists each launcher's own flags; eval, plot and
sample restore the newest readable checkpoint past a damaged newer one, and read the config a
run saved in its workdir (explicit overrides on top; a model that differs is named);
evaluating a checkpoint writes one eval record for its step and no progress bar."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from configs import common, digits_perceiver
from perceiver_jax.train import run_config, trainer
from perceiver_jax.train.experiment import validate_config

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


def _copy(workdir, tmp_path, name):
  copy = str(tmp_path / name)
  shutil.copytree(workdir, copy)
  return copy


def _eval_records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [r for r in map(json.loads, f) if r["split"] == "eval"]


def test_evaluating_a_checkpoint_replaces_its_eval_record_without_a_progress_bar(
    digits_data_dir, digits_tiny_run, tmp_path, capfd):
  workdir = _copy(digits_tiny_run, tmp_path, "work")
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


def test_eval_and_plot_fall_back_past_a_damaged_newest_checkpoint(digits_data_dir,
                                                                   digits_tiny_run, tmp_path):
  runs = {name: _copy(digits_tiny_run, tmp_path, name) for name in ("eval", "plot")}
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


# Perceiver AR: the run's saved config (workdir/config.json) serves eval, plot and sample.


def _ar_config(data_dir):
  from configs import perceiver_ar_bytes
  config = perceiver_ar_bytes.get_config("stdlib,tiny")  # python_stdlib_text/small: offline.
  config.data.update(data_dir=data_dir, eval_split="test[1:]", eval_block_size=8)  # 7.7 KB.
  config.model.perceiver_ar.num_layers = 1  # Not the file's 2: only the saved config knows.
  config.lm.minimum_crop_length = 8  # Cropped training rows, through the jitted step.
  config.update(num_train_steps=2, eval_every_steps=2, checkpoint_every_steps=2,
                eval_batch_size=128)
  config.optimizer.warmup_steps = 1
  return config


@pytest.fixture(scope="module")
def ar_trained(tmp_path_factory):
  """(workdir, data_dir) of a 2-step Perceiver AR run (copy the workdir before changing it)."""
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  workdir = str(tmp_path_factory.mktemp("ar") / "work")
  trainer.train_and_evaluate(_ar_config(data_dir), workdir)
  return workdir, data_dir


def test_the_launchers_read_the_runs_saved_config(ar_trained, tmp_path):
  workdir, data_dir = ar_trained
  saved = run_config.load(workdir)
  assert saved.to_dict() == _ar_config(data_dir).to_dict()
  copy = _copy(workdir, tmp_path, "copy")  # Evaluations lock their workdir.
  commands = {
      "eval": ["experiments.eval", f"--workdir={workdir}"],
      "eval_given": ["experiments.eval", "--config=configs/perceiver_ar_bytes.py:stdlib,tiny",
                     f"--workdir={copy}", "--config.eval_batch_size=64"],
      "sample": ["experiments.sample", f"--workdir={workdir}", "--prompt=def ",
                 "--max_new_tokens=3", "--temperature=0"],
      "plot": ["experiments.plot", f"--workdir={workdir}"]}
  processes = {name: subprocess.Popen([sys.executable, "-m", *command], cwd=REPO,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for name, command in commands.items()}
  outputs = {}
  for name, process in processes.items():
    outputs[name] = process.communicate(timeout=600)
    assert process.returncode == 0, (name, outputs[name][1][-3000:])
  metrics = json.loads(outputs["eval"][0].splitlines()[-1])
  assert metrics["tokens_per_second"] > 0 and metrics["bits_per_byte"] > 0
  # The saved 1-layer model restored under the file's 2-layer config, which is named.
  given = json.loads(outputs["eval_given"][0].splitlines()[-1])
  np.testing.assert_allclose(given["bits_per_byte"], metrics["bits_per_byte"], rtol=1e-5)
  assert "config.model.perceiver_ar.num_layers: 2 given, 1 saved" in outputs["eval_given"][1]
  assert outputs["sample"][0].startswith("def ")
  assert os.path.getsize(os.path.join(workdir, "plots", "learning_curves.png")) > 1000


def test_a_run_resumed_with_another_model_stops_naming_the_fields(ar_trained, tmp_path):
  workdir, data_dir = ar_trained
  copy = _copy(workdir, tmp_path, "copy")
  config = _ar_config(data_dir)
  config.model.perceiver_ar.update(num_layers=2, num_heads=4)
  config.num_train_steps = 4
  with pytest.raises(ValueError, match=r"(?s)holds checkpoints of a model with other settings.*"
                     r"num_heads: 4 given, 2 saved.*num_layers: 2 given, 1 saved"):
    trainer.train_and_evaluate(config, copy)
  assert run_config.load(copy).model.perceiver_ar.num_layers == 1  # Not replaced.


def test_resolve_applies_explicit_overrides_on_the_saved_config_and_names_model_changes(
    tmp_path, caplog):
  trained = digits_perceiver.get_config("tiny")
  trained.model.num_classes = 7
  run_config.record(trained, str(tmp_path), resuming=False)
  with pytest.raises(ValueError, match="config.json does not exist.*pass the run's --config"):
    run_config.resolve(str(tmp_path / "other"))
  assert run_config.resolve(str(tmp_path)).to_dict() == trained.to_dict()
  given = digits_perceiver.get_config("tiny")  # As --config=...:tiny --config.seed=3 gives it.
  given.seed = 3
  with caplog.at_level("WARNING"):
    config = run_config.resolve(str(tmp_path), given, {"seed": 3})
  assert config.seed == 3 and config.model.num_classes == 7
  assert "config.model.num_classes: 10 given, 7 saved" in caplog.text
  assert "may not restore" not in caplog.text
  caplog.clear()
  with caplog.at_level("WARNING"):
    config = run_config.resolve(str(tmp_path), given, {"model.num_classes": 10})
  assert config.model.num_classes == 10
  assert "config.model.num_classes: 10 now, 7 saved" in caplog.text


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


def test_a_config_saved_before_new_fields_existed_takes_their_defaults(tmp_path):
  trained = digits_perceiver.get_config("tiny")
  run_config.record(trained, str(tmp_path), resuming=False)
  saved = json.loads((tmp_path / "config.json").read_text())
  del saved["data"]["array"], saved["flow"]  # As a run saved before these sections existed.
  (tmp_path / "config.json").write_text(json.dumps(saved))
  config = run_config.resolve(str(tmp_path), defaults=common.get_config())
  assert config.flow.train_points == 0 and config.data.array.target == "label"
  assert config.to_dict() == trained.to_dict()
  validate_config(config)
