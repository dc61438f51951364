"""perceiver_jax.InMemoryTrainer (train/in_memory.py) and set_cpu_device_count."""

import functools
import os
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest

import perceiver_jax
from configs import common
from perceiver_jax import tasks
from perceiver_jax.train import in_memory
from perceiver_jax.train.cpu_device_count import auto_count
from perceiver_jax.train.sharding import usable_cpu_cores

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 40


def _config():
  """A tiny original Perceiver on 1-D signals [16, 2] of 3 classes."""
  c = common.get_config()
  c.model = tasks.tiny_config("perceiver_classification", "cifar10_study")
  c.model.input_shape, c.model.num_classes = (16, 2), 3
  c.model.fourier = dict(num_frequency_bands=2, max_resolution=(16,))
  c.batch_size, c.eval_batch_size, c.num_train_steps = 16, 8, STEPS
  c.log_every_steps, c.eval_every_steps, c.checkpoint_every_steps = 10, STEPS, STEPS
  c.optimizer.update(name="adamw", learning_rate=1e-2, warmup_steps=2)
  c.checkpoint.async_save = False
  return c


def _signals(n, seed):
  """Noise [n, 16, 2] whose class (0..2) is the sign pattern of the two channels' offsets."""
  rng = np.random.default_rng(seed)
  label = rng.integers(0, 3, n)
  offset = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])[label]
  return {"image": (rng.normal(size=(n, 16, 2)) + offset[:, None, :]).astype(np.float32),
          "label": label}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """(trainer, eval loss before, fit records, workdir) after STEPS steps on 200 signals."""
  workdir = str(tmp_path_factory.mktemp("in_memory"))
  trainer = perceiver_jax.InMemoryTrainer(_config(), workdir)
  assert trainer.init() == 0
  before = trainer.evaluate(_signals(21, 1))["loss"]
  records = trainer.fit(_signals(200, 0), eval_data=_signals(21, 1))
  yield trainer, before, records, workdir
  trainer.close()


def test_fit_on_numpy_arrays_lowers_the_loss(trained):
  trainer, before, records, _ = trained
  assert before == pytest.approx(np.log(3), abs=1e-3)  # The decoder starts at zero.
  assert trainer.step == STEPS
  assert [r["step"] for r in records if r["split"] == "train"] == [10, 20, 30, 40]
  (evaluation,) = [r for r in records if r["split"] == "eval"]
  assert evaluation["step"] == STEPS
  assert evaluation["loss"] < 0.6 * before and evaluation["accuracy"] > 0.8


def test_evaluate_counts_every_example_once(trained):
  """21 examples in batches of 8: the last is padded, and the metrics are the model's own."""
  trainer, *_ = trained
  data = _signals(21, 1)
  apply = jax.jit(functools.partial(trainer.experiment.model.apply, deterministic=True))
  logits = np.asarray(apply({"params": trainer.state.params}, data["image"]), np.float64)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, data["label"])
  metrics = trainer.evaluate(data)
  assert metrics["loss"] == pytest.approx(float(np.mean(loss)), rel=1e-5)
  assert metrics["accuracy"] == pytest.approx(np.mean(logits.argmax(-1) == data["label"]))
  half = trainer.evaluate(dict(data, mask=(np.arange(21) < 10).astype(np.float32)))
  assert half["loss"] == pytest.approx(float(np.mean(loss[:10])), rel=1e-5)


def test_a_new_trainer_restores_the_workdir_checkpoint(trained):
  _, _, records, workdir = trained
  expected = {k: v for k, v in records[-1].items() if k not in ("step", "split")}
  restored = perceiver_jax.InMemoryTrainer(_config(), workdir)
  assert restored.init() == STEPS
  assert restored.evaluate(_signals(21, 1)) == pytest.approx(expected, rel=1e-6)
  restored.close()


def test_train_step_takes_one_numpy_batch_and_fit_stops_at_the_schedule_end(trained):
  trainer, *_ = trained
  with pytest.raises(ValueError, match="passes config.num_train_steps=40"):
    trainer.fit(_signals(16, 0), num_steps=1)
  step = trainer.step
  metrics = trainer.train_step(_signals(16, 2))
  assert trainer.step == step + 1 and np.isfinite(metrics["loss"])
  assert set(metrics) == {"loss", "accuracy", "top5", "grad_norm", "learning_rate"}


@pytest.mark.parametrize("change, message", [
    (lambda b: {"image": b["image"]}, r"batch key 'label' is missing; a batch is "
     r"\{'image': float32 \[config.batch_size, 16, 2\], 'label': int32 \[config.batch_size\]\}"),
    (lambda b: dict(b, labels=b["label"]), "batch key 'labels' is not a key the model takes"),
    (lambda b: dict(b, image=b["image"][:, :8]),
     r"batch\['image'\] has shape \[16, 8, 2\]; expected \[config.batch_size, 16, 2\]"),
    (lambda b: dict(b, label=b["label"][:8]), r"batch\['label'\] has shape \[8\]"),
    (lambda b: dict(b, label=b["label"] + 0.0), r"batch\['label'\] has dtype float64"),
    (lambda b: dict(b, label=b["label"] + 3), r"labels are in \[0, config.model.num_classes=3\)"),
])
def test_a_bad_batch_names_its_key_and_the_expected_shape(trained, change, message):
  trainer, *_ = trained
  with pytest.raises(ValueError, match=message):
    trainer.train_step(change(_signals(16, 0)))


def test_the_shuffled_order_covers_each_epoch_and_depends_on_seed_and_step_only():
  steps = [in_memory.shuffled_indices(10, 4, seed=3, step=s) for s in range(1, 6)]
  stream = np.concatenate(steps)
  assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:20]) == list(range(10))
  np.testing.assert_array_equal(in_memory.shuffled_indices(10, 4, seed=3, step=4), steps[3])
  assert list(in_memory.shuffled_indices(10, 4, seed=4, step=1)) != list(steps[0])


def test_set_cpu_device_count_before_jax_starts_and_errors_after():
  code = ("import perceiver_jax\n"
          "print(perceiver_jax.set_cpu_device_count(batch_sizes=(6, 9)))\n"
          "print(perceiver_jax.set_cpu_device_count(3))\n"
          "import jax\nprint(len(jax.devices()))\n"
          "print(perceiver_jax.set_cpu_device_count(3))\n"
          "try:\n  perceiver_jax.set_cpu_device_count(2)\n"
          "except RuntimeError as error:\n  print(error)\n")
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True,
                       text=True, timeout=120).stdout.splitlines()
  assert out[0] == str(auto_count(usable_cpu_cores(), [6, 9]))  # 1 or 3 divide both.
  assert out[1:4] == ["3", "3", "3"]
  assert "already started its CPU backend with 3 devices" in out[4]
  assert "restart the kernel" in out[4]
  with pytest.raises(ValueError, match="count must be an int >= 1"):
    perceiver_jax.set_cpu_device_count(0)
