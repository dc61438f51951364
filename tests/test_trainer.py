"""The training system end to end on the real digits data (built offline) and TFDS mock data:
sharding equivalences, gradient accumulation, resume after SIGKILL and a corrupt checkpoint,
SIGTERM, a two-process jax.distributed run, the NaN guard and evaluation of a checkpoint."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import types

import chex
import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import digits_perceiver
from experiments import cpu_devices
from perceiver_jax import tasks
from perceiver_jax.data import input_pipeline
from perceiver_jax.convert import pretrained
from perceiver_jax.train import trainer
from perceiver_jax.train.checkpointing import Checkpointer
from perceiver_jax.train.experiment import build_experiment
from perceiver_jax.train.sharding import global_batch, usable_cpu_cores
from perceiver_jax.train.workdir_lock import WorkdirLock

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(data_dir, **overrides):
  config = digits_perceiver.get_config("tiny")
  config.data.data_dir = data_dir
  for key, value in overrides.items():
    target = config
    *path, last = key.split(".")
    for part in path:
      target = target[part]
    target[last] = value
  return config


def _records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _final_params(config, workdir, step):
  experiment = build_experiment(config, workdir)
  state = experiment.checkpointer.restore(step, experiment.abstract_state)
  experiment.checkpointer.close()
  return jax.device_get(state.params)


def _launch(workdir, data_dir, *flags, env=None):
  command = [sys.executable, "-m", "experiments.train",
             "--config=configs/digits_perceiver.py:tiny", f"--workdir={workdir}",
             f"--config.data.data_dir={data_dir}", *flags]
  return subprocess.Popen(command, cwd=REPO, env=env or dict(os.environ),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _committed_steps(workdir):
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    return []
  return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


# In-process: one training step and evaluation on TFDS mock data.

def test_one_step_train_and_eval_under_mock_data(tmp_path):
  config = _config(str(tmp_path / "tfds"), **{"data.name": "cifar10", "num_train_steps": 1,
                                              "optimizer.warmup_steps": 0,
                                              "eval_every_steps": 1, "eval_batch_size": 16})
  config.model.input_shape = (32, 32, 3)
  config.model.fourier.max_resolution = (32, 32)
  with tfds.testing.mock_data(num_examples=24):
    metrics = trainer.train_and_evaluate(config, str(tmp_path / "work"))
  records = _records(str(tmp_path / "work"))
  assert [(r["step"], r["split"]) for r in records] == [(1, "train"), (1, "eval")]
  for key in ("loss", "accuracy", "top5", "grad_norm", "learning_rate", "examples_per_second",
              "step_time"):
    assert np.isfinite(records[0][key])
  assert metrics == {k: v for k, v in records[1].items() if k not in ("step", "split")}
  assert _committed_steps(str(tmp_path / "work")) == [1]
  assert os.listdir(tmp_path / "work" / "tensorboard") != []


def test_masked_language_model_trains_in_bfloat16_on_mock_text(tmp_path):
  config = _config(str(tmp_path / "tfds"), **{"num_train_steps": 2, "eval_every_steps": 2,
                                              "optimizer.warmup_steps": 0, "batch_size": 8,
                                              "eval_batch_size": 8})
  config.model = tasks.tiny_config("masked_language_modeling")
  config.model.dtype = "bfloat16"
  config.data.update(name="lm1b", task="text_mlm", max_seq_len=config.model.max_seq_len)
  config.mlm = {"mask_prob": 0.15}
  with tfds.testing.mock_data(num_examples=16):
    metrics = trainer.train_and_evaluate(config, str(tmp_path / "work"))
  assert np.isfinite(metrics["loss"]) and 0 <= metrics["accuracy"] <= 1
  experiment = build_experiment(config, str(tmp_path / "work"))
  state = experiment.checkpointer.restore(2, experiment.abstract_state)
  floats = [x.dtype for x in jax.tree_util.tree_leaves(state)
            if jax.numpy.issubdtype(x.dtype, jax.numpy.floating)]
  assert set(floats) == {jax.numpy.dtype("float32")}  # Params and Adam moments stay float32.
  experiment.checkpointer.close()


# In-process: the same step on 1 device, 8 devices, FSDP, and with gradient accumulation.

def _run_steps(config, workdir, devices, batches):
  experiment = build_experiment(config, workdir, devices)
  state = experiment.init()
  losses = []
  for batch in batches:
    state, metrics = experiment.train_step(state, global_batch(batch, experiment.mesh))
    losses.append(float(metrics["loss"]))
  experiment.checkpointer.close()
  return losses, state


def _batches(config, count):
  iterator = input_pipeline.make_train_iterator(config.data, global_batch_size=config.batch_size,
                                                seed=0)
  return [next(iterator) for _ in range(count)]


def test_one_device_eight_devices_and_fsdp_agree(digits_data_dir, tmp_path):
  config = _config(digits_data_dir)
  batches = _batches(config, 2)
  one, state_one = _run_steps(config, str(tmp_path / "a"), jax.devices()[:1], batches)
  eight, state_eight = _run_steps(config, str(tmp_path / "b"), jax.devices(), batches)
  np.testing.assert_allclose(eight, one, rtol=1e-5)
  chex.assert_trees_all_close(jax.device_get(state_eight.params),
                              jax.device_get(state_one.params), rtol=1e-4, atol=1e-6)

  fsdp_config = _config(digits_data_dir,
                        **{"mesh.data": 2, "mesh.fsdp": 4, "mesh.min_fsdp_size": 64})
  fsdp, state_fsdp = _run_steps(fsdp_config, str(tmp_path / "c"), jax.devices(), batches)
  np.testing.assert_allclose(fsdp, one, rtol=1e-5)
  sharded = [x for x in jax.tree_util.tree_leaves(state_fsdp.params)
             if "fsdp" in str(x.sharding.spec)]
  assert sharded, "no parameter is sharded over the fsdp axis"
  for x in sharded:  # Each device holds a quarter of the array.
    assert x.addressable_shards[0].data.size * 4 == x.size
  moments = [x for x in jax.tree_util.tree_leaves(state_fsdp.opt_state)
             if hasattr(x, "sharding") and "fsdp" in str(x.sharding.spec)]
  assert len(moments) >= 2 * len(sharded)  # Adam's two moments are sharded like the params.


def test_gradient_accumulation_equals_the_big_batch(digits_data_dir, tmp_path):
  overrides = {"optimizer.name": "sgd", "optimizer.momentum": 0.0, "optimizer.weight_decay": 0.0,
               "model.encoder.dropout_rate": 0.0}
  config = _config(digits_data_dir, **overrides)
  batches = _batches(config, 1)
  big, state_big = _run_steps(config, str(tmp_path / "a"), jax.devices(), batches)
  accumulated = _config(digits_data_dir, grad_accum_steps=2, **overrides)
  small, state_small = _run_steps(accumulated, str(tmp_path / "b"), jax.devices(), batches)
  np.testing.assert_allclose(small, big, rtol=1e-5)
  chex.assert_trees_all_close(jax.device_get(state_small.params),
                              jax.device_get(state_big.params), rtol=1e-5, atol=1e-7)


def test_a_resumed_run_writes_each_steps_records_once(digits_data_dir, digits_tiny_run, tmp_path):
  workdir = str(tmp_path / "work")
  config = _config(digits_data_dir)  # 6 steps, logs every 2, saves at 3 and 6.
  shutil.copytree(digits_tiny_run, workdir)  # This config, trained.
  shutil.rmtree(os.path.join(workdir, "checkpoints", "6"))
  with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
    f.write('{"step": 6, "split": "tr')  # A line cut short by a kill.
  trainer.train_and_evaluate(config, workdir)  # Resumes at 3 and replays 4-6.
  assert [(r["split"], r["step"]) for r in _records(workdir)] == [
      ("train", 2), ("train", 4), ("train", 6), ("eval", 6)]


def test_step_time_leaves_out_evaluation_and_saving(digits_data_dir, tmp_path, monkeypatch):
  """A clock that evaluation and saving each move on by 1000 s."""
  clock = {"offset": 0.0}
  monkeypatch.setattr(trainer, "time", types.SimpleNamespace(
      time=lambda: time.time() + clock["offset"], perf_counter=time.perf_counter))

  def slow(function):
    def wrapped(*args, **kwargs):
      clock["offset"] += 1000.0
      return function(*args, **kwargs)
    return wrapped

  monkeypatch.setattr(trainer, "evaluate", slow(trainer.evaluate))
  monkeypatch.setattr(Checkpointer, "save", slow(Checkpointer.save))
  config = _config(digits_data_dir, eval_every_steps=2)  # Evaluates at 2, 4, 6; saves at 3, 6.
  trainer.train_and_evaluate(config, str(tmp_path))
  train = [r for r in _records(str(tmp_path)) if r["split"] == "train"]
  assert [r["step"] for r in train] == [2, 4, 6]
  assert all(r["step_time"] < 100 for r in train), train
  assert all(r["examples_per_second"] > 16 / 100 for r in train), train


# Subprocesses: SIGKILL and resume (also past a corrupt checkpoint), SIGTERM.

def test_killed_run_resumes_past_a_corrupt_checkpoint_to_the_uninterrupted_result(
    digits_data_dir, tmp_path, caplog):
  steps = {"num_train_steps": 12, "eval_every_steps": 12, "log_every_steps": 4}
  config = _config(digits_data_dir, checkpoint_every_steps=12, **steps)
  trainer.train_and_evaluate(config, str(tmp_path / "straight"))
  expected = _final_params(config, str(tmp_path / "straight"), 12)

  killed = str(tmp_path / "killed")
  process = _launch(killed, digits_data_dir, *[f"--config.{k}={v}" for k, v in steps.items()],
                    "--config.checkpoint_every_steps=1")
  deadline = time.time() + 240
  while len(_committed_steps(killed)) < 3 or max(_committed_steps(killed)) < 4:
    assert process.poll() is None, process.stderr.read()[-3000:]
    assert time.time() < deadline, "the run made no checkpoints in time"
    time.sleep(0.02)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert process.returncode == -signal.SIGKILL
  saved = _committed_steps(killed)
  assert max(saved) < 12, "the run finished before it was killed"

  newest = os.path.join(killed, "checkpoints", str(max(saved)))
  files = [os.path.join(root, name) for root, _, names in os.walk(newest) for name in names]
  assert files
  for path in files:
    open(path, "w").close()  # Truncate: unreadable.
  trainer.train_and_evaluate(config, killed)  # Saves at 12 only, as the straight run.
  assert "cannot restore step" in caplog.text
  chex.assert_trees_all_close(_final_params(config, killed, 12), expected, rtol=1e-6, atol=1e-7)
  train_steps = [r["step"] for r in _records(killed) if r["split"] == "train"]
  assert train_steps[-1] == 12


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(digits_data_dir, tmp_path):
  """Run as a user runs it, with no XLA_FLAGS: also checks that the launcher splits the batch
  over one CPU device per core (--cpu_devices=0; digits tiny: batch 16, eval batch 120)."""
  workdir = str(tmp_path / "work")
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  process = _launch(workdir, digits_data_dir, "--config.num_train_steps=100000",
                    "--config.checkpoint_every_steps=100000", "--config.eval_every_steps=100000",
                    "--config.log_every_steps=2", env=env)
  metrics = os.path.join(workdir, "metrics.jsonl")
  deadline = time.time() + 240
  while not (os.path.exists(metrics) and os.path.getsize(metrics) > 0):
    assert process.poll() is None, process.stderr.read()[-3000:]
    assert time.time() < deadline
    time.sleep(0.05)
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=120)
  assert process.returncode == 0, stderr[-3000:]
  saved = _committed_steps(workdir)
  assert len(saved) == 1 and 2 <= saved[0] < 100000
  assert "SIGTERM" in stderr
  devices = cpu_devices.auto_count(usable_cpu_cores(), [16, 120])
  assert f"{devices} local / {devices} global devices (cpu)" in stderr


# Two processes on localhost, four CPU devices each.

def _launch_two_processes(workdir, data_dir, *flags):
  """Processes 0 and 1 of one run on a free localhost port, four CPU devices each (code
  generation at -O0, as conftest sets it for the tests' own process)."""
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4 "
             "--xla_backend_optimization_level=0")
  return [_launch(workdir, data_dir, f"--coordinator_address=localhost:{port}",
                  "--num_processes=2", f"--process_id={i}", *flags, env=env) for i in range(2)]


def test_two_process_distributed_run_trains(digits_data_dir, tmp_path):
  workdir = str(tmp_path / "work")
  processes = _launch_two_processes(workdir, digits_data_dir, "--config.num_train_steps=4",
                                    "--config.eval_every_steps=4",
                                    "--config.checkpoint_every_steps=4")
  for process in processes:
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]
  records = _records(workdir)
  assert [(r["step"], r["split"]) for r in records][-1] == (4, "eval")
  assert all(np.isfinite(r["loss"]) for r in records)
  assert _committed_steps(workdir) == [4]


def test_sigterm_to_one_of_two_processes_saves_the_same_step_on_both(digits_data_dir, tmp_path):
  """jax's preemption service: the process not signalled learns of it and stops with it."""
  workdir = str(tmp_path / "work")
  processes = _launch_two_processes(
      workdir, digits_data_dir, "--config.num_train_steps=100000",
      "--config.eval_every_steps=100000", "--config.checkpoint_every_steps=100000",
      "--config.log_every_steps=2")
  metrics = os.path.join(workdir, "metrics.jsonl")
  deadline = time.time() + 240
  while not (os.path.exists(metrics) and os.path.getsize(metrics) > 0):
    assert all(p.poll() is None for p in processes), processes[0].stderr.read()[-3000:]
    assert time.time() < deadline
    time.sleep(0.05)
  processes[1].send_signal(signal.SIGTERM)
  stopped = []
  for process in processes:
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr[-3000:]
    stopped += re.findall(r"saved the checkpoint at step (\d+) and stopped", stderr)
  assert len(stopped) == 2 and stopped[0] == stopped[1], stopped
  assert _committed_steps(workdir) == [int(stopped[0])]


# One run per workdir.

_HOLD_LOCK = ("import sys; from perceiver_jax.train.workdir_lock import WorkdirLock\n"
              "with WorkdirLock(sys.argv[1]):\n  print('locked', flush=True); sys.stdin.read()")


def test_a_second_run_stops_while_a_live_one_holds_the_workdir(tmp_path, caplog):
  workdir = str(tmp_path)
  holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, workdir], cwd=REPO, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
  try:
    assert holder.stdout.readline() == "locked\n"
    in_progress = tmp_path / "checkpoints" / "3.orbax-checkpoint-tmp-17"
    in_progress.mkdir(parents=True)
    config = _config(str(tmp_path / "tfds"))
    for run in (trainer.train_and_evaluate, trainer.evaluate_checkpoint):
      with pytest.raises(RuntimeError, match=rf"another run is using the workdir {workdir}: "
                         rf"pid {holder.pid} on {socket.gethostname()}"):
        run(config, workdir)
    assert in_progress.is_dir() and not (tmp_path / "metrics.jsonl").exists()
  finally:
    holder.kill()
    holder.wait()
  # Killed (no clean release), it leaves its lock file behind, which does not block.
  with open(tmp_path / ".lock") as f:
    assert f.read() == f"pid {holder.pid} on {socket.gethostname()}\n"
  with WorkdirLock(workdir):
    with open(tmp_path / ".lock") as f:
      assert f.read() == f"pid {os.getpid()} on {socket.gethostname()}\n"
  assert f"from pid {holder.pid} on" in caplog.text


# The NaN guard, evaluation of a checkpoint and config errors.

def test_divergence_keeps_only_checkpoints_that_resume(digits_data_dir, tmp_path):
  """At learning rate 1e6 the step-3 parameters are finite (|sum| ~ 3.5e12) but step 4's loss
  on them is NaN: checkpoint 3 is deleted, and step 2 resumes with a sane learning rate."""
  workdir = str(tmp_path)
  config = _config(digits_data_dir, **{"optimizer.learning_rate": 1e6,
                                       "checkpoint_every_steps": 1})
  with pytest.raises(FloatingPointError, match=r"diverged at step 4.*checkpoints \[3\].*"
                     r"restarts from step 2"):
    trainer.train_and_evaluate(config, workdir)
  assert _committed_steps(workdir) == [2]
  chex.assert_tree_all_finite(_final_params(config, workdir, 2))
  config.optimizer.learning_rate = 1e-3
  trainer.train_and_evaluate(config, workdir)
  assert _committed_steps(workdir)[-1] == 6
  assert all(np.isfinite(r["loss"]) for r in _records(workdir) if r["step"] > 2)


def test_a_state_with_a_non_finite_optimizer_state_is_not_saved(digits_data_dir, tmp_path,
                                                               monkeypatch):
  """A NaN in the optimizer state leaves the next loss finite: the state itself is checked."""
  def build_poisoned(config, workdir):
    experiment = build_experiment(config, workdir)
    step = experiment.train_step

    def poisoned(state, batch):
      state, metrics = step(state, batch)
      nan_at_3 = jax.numpy.where(state.step == 3, jax.numpy.nan, 0.0)
      return state.replace(opt_state=jax.tree.map(
          lambda x: x + nan_at_3 if x.dtype == np.float32 else x, state.opt_state)), metrics

    experiment.train_step = poisoned
    return experiment

  monkeypatch.setattr(trainer, "build_experiment", build_poisoned)
  config = _config(digits_data_dir, checkpoint_every_steps=1)
  with pytest.raises(FloatingPointError, match="diverged at step 3: the parameters or "
                     "optimizer state are not finite.*restarts from step 2"):
    trainer.train_and_evaluate(config, str(tmp_path))
  assert _committed_steps(str(tmp_path)) == [1, 2]


def test_evaluate_checkpoint_and_init_from_match_the_training_runs_eval(digits_data_dir,
                                                                        digits_tiny_run, tmp_path):
  config = _config(digits_data_dir)
  workdir = str(tmp_path / "run")
  shutil.copytree(digits_tiny_run, workdir)  # This config, trained.
  final = {k: v for k, v in _records(workdir)[-1].items() if k not in ("step", "split")}
  again = trainer.evaluate_checkpoint(config, workdir)
  assert {"loss", "accuracy", "top5"} <= final.keys()
  chex.assert_trees_all_close(again, final, rtol=1e-5)
  # The trained weights as a pretrained model directory: a new run initialised from it
  # evaluates exactly as the run that trained them, with every array loaded.
  params = _final_params(config, workdir, config.num_train_steps)
  pretrained.save_pretrained(str(tmp_path / "pretrained"), config.model, {"params": params})
  fine_tune = _config(digits_data_dir, init_from=str(tmp_path / "pretrained"))
  fine_tune.model.encoder.dropout_rate = 0.1  # A run setting: kept, weights still load.
  from_pretrained = trainer.evaluate_checkpoint(fine_tune, str(tmp_path / "fine_tune"))
  chex.assert_trees_all_close(from_pretrained, final, rtol=1e-5)
  with open(tmp_path / "fine_tune" / "init_from.json") as f:
    report = json.load(f)
  assert len(report["loaded"]) == len(jax.tree_util.tree_leaves(params))
  assert report["fresh"] == report["mismatched"] == report["unused"] == []


def test_config_errors_name_the_field(digits_data_dir, tmp_path):
  for overrides, match in [({"batch_size": 12}, "batch_size"),
                           ({"grad_accum_steps": 3}, "grad_accum_steps"),
                           ({"eval_batch_size": 12}, "eval_batch_size must be divisible by the 8"),
                           ({"num_train_steps": 0}, "num_train_steps"),
                           ({"mesh.fsdp": 3}, "config.mesh.fsdp"),
                           ({"init_from": str(tmp_path)}, "config.init_from=.*holds no")]:
    with pytest.raises(ValueError, match=match):
      build_experiment(_config(digits_data_dir, **overrides), str(tmp_path))
  config = _config(digits_data_dir)
  del config.eval_every_steps
  with pytest.raises(ValueError, match="config.eval_every_steps is missing"):
    build_experiment(config, str(tmp_path))


def test_perceiver_ar_trains_on_offline_text_and_samples_from_its_checkpoint(tmp_path):
  from configs import perceiver_ar_bytes
  from experiments.sample import sample_from_checkpoint
  config = perceiver_ar_bytes.get_config("stdlib,tiny")  # python_stdlib_text/small: offline.
  config.data.data_dir = str(tmp_path / "tfds")
  metrics = trainer.train_and_evaluate(config, str(tmp_path / "work"))
  assert np.isfinite(metrics["bits_per_byte"]) and metrics["bits_per_byte"] > 0
  np.testing.assert_allclose(metrics["bits_per_byte"] * np.log(2), metrics["loss"], rtol=0.05)
  texts = sample_from_checkpoint(config, str(tmp_path / "work"), "def ", 5, num_samples=2,
                                 temperature=0.0)
  assert len(texts) == 2 and texts[0] == texts[1]  # Greedy: the same continuation.


def test_perceiver_ar_configs_read_their_datasets_text_feature(tmp_path):
  from configs import perceiver_ar_bytes
  for variant in ("", "stdlib"):
    data = perceiver_ar_bytes.get_config(variant).data
    features = tfds.builder(data.name, data_dir=str(tmp_path)).info.features  # Offline.
    assert data.text_feature in features, (variant, list(features))


def test_a_model_with_fewer_classes_than_the_labels_stops_before_training(digits_data_dir,
                                                                          tmp_path):
  config = _config(digits_data_dir, **{"model.num_classes": 5})
  with pytest.raises(ValueError, match="'sklearn_digits' has 10 classes .*config.model."
                                       "num_classes=5"):
    trainer.train_and_evaluate(config, str(tmp_path))
  assert _committed_steps(str(tmp_path)) == []


def test_language_model_eval_reports_scored_tokens_per_second_without_the_compile(monkeypatch):
  """Three eval batches of 30, 20 and 10 scored tokens; the first step takes 5 s (it compiles),
  the others 1 s each: 30 tokens in 2 s after the first."""
  clock = [100.0]
  monkeypatch.setattr(trainer.time, "perf_counter", lambda: clock[0])
  monkeypatch.setattr(trainer, "global_batch", lambda batch, mesh: batch)
  monkeypatch.setattr(trainer, "check_batch", lambda config, batch: None)  # Fake batches.
  monkeypatch.setattr(input_pipeline, "make_eval_iterator",
                      lambda *args, **kwargs: [{"weight": w} for w in (30.0, 20.0, 10.0)])

  def eval_step(state, batch):
    clock[0] += 5.0 if batch["weight"] == 30.0 else 1.0
    return {"weight": np.float32(batch["weight"]), "loss": np.float32(2 * batch["weight"])}

  from configs import perceiver_ar_bytes
  experiment = types.SimpleNamespace(config=perceiver_ar_bytes.get_config("stdlib,tiny"),
                                     eval_step=eval_step, mesh=None)
  assert trainer.evaluate(experiment, None) == {"loss": 2.0, "tokens_per_second": 15.0}
  experiment.config = _config("unused")  # Classification: no token throughput.
  assert trainer.evaluate(experiment, None) == {"loss": 2.0}
