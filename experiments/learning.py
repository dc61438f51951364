"""Shown-to-learn runs: train a config with the real launcher and compare it with a baseline.

  python -m experiments.learning --runs=perceiver_ar_stdlib --output=/tmp/learning

Each run trains `python -m experiments.train --config=CONFIG --workdir=OUTPUT/NAME` in a
subprocess (the command a user types; its wall time is measured), then writes the run's
learning curves (`experiments.plot`) and, for language models, a sample
(`experiments.sample`). The run's figure is its last evaluation of `metric` in
metrics.jsonl; the baselines are computed on the same raw test data without a network (for
bytes: zlib, bz2 and lzma at their strongest settings on the concatenated test split, and the
unigram entropy; for optical flow: zero flow, half of it and the best global translation
estimated from the frames, experiments/flow_baselines.py). OUTPUT/results.json and
OUTPUT/results.md (one README-ready row per run: figure, baselines, command, wall time,
machine, date) hold the outcome; the exit status is 1 when a run does not beat its baseline.
"""

import bz2
import collections
import dataclasses
import datetime
import json
import lzma
import math
import os
import platform
import subprocess
import sys
import time
import zlib
from typing import Callable, Dict, Optional, Tuple

from absl import app, flags
import numpy as np
from sklearn import linear_model, neighbors, preprocessing

from experiments import av_baselines
from experiments.flow_baselines import flow_baselines
from perceiver_jax.data import datasets  # pylint: disable=unused-import  (registers builders)
from perceiver_jax.data.tensorflow_cpu import tfds
from perceiver_jax.train.sharding import usable_cpu_cores

FLAGS = flags.FLAGS


def define_flags():
  """This script's flags, defined when it runs (importing it, as the tests do beside other
  launchers, defines none: benchmark's --output is another flag)."""
  flags.DEFINE_list("runs", None, "Runs to train (see RUNS).")
  flags.DEFINE_string("output", None, "Directory for the runs' workdirs and the results.")
  flags.DEFINE_list("overrides", [], "Extra --config.PATH=VALUE overrides for every run, "
                    "comma-separated (e.g. config.num_train_steps=100 for a smoke test).")
  flags.mark_flags_as_required(["runs", "output"])

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def stdlib_test_bytes(data_dir=None) -> bytes:
  """The `python_stdlib_text` test split's files, concatenated in split order (UTF-8)."""
  return stdlib_split_bytes("test", data_dir)


def stdlib_split_bytes(split: str, data_dir=None) -> bytes:
  """The `python_stdlib_text` `split`'s files, concatenated in split order (UTF-8)."""
  builder = tfds.builder("python_stdlib_text", data_dir=data_dir)
  builder.download_and_prepare()  # Offline: reads this Python's stdlib.
  examples = tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False))
  return b"".join(example["text"] for example in examples)


def byte_baselines(data: bytes) -> Dict[str, float]:
  """Bits per byte of `data` under classical compressors and the unigram model, and the
  accuracy of always predicting its most frequent byte."""
  bits = lambda compressed: 8.0 * len(compressed) / len(data)
  counts = collections.Counter(data)
  entropy = -sum(c / len(data) * math.log2(c / len(data)) for c in counts.values())
  return {"zlib_9": bits(zlib.compress(data, 9)), "bz2_9": bits(bz2.compress(data, 9)),
          "lzma_9e": bits(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)),
          "unigram_entropy": entropy,
          "most_frequent_byte_accuracy": max(counts.values()) / len(data)}


def point_cloud_split(name: str, split: str, data_dir=None):
  """(points float32 [examples, P, 3], labels int [examples]) of a point-cloud TFDS split."""
  builder = tfds.builder(name, data_dir=data_dir)
  builder.download_and_prepare()  # Offline for synthetic_solids.
  examples = list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))
  return (np.stack([e["points"] for e in examples]),
          np.array([e["label"] for e in examples]))


def radius_histograms(points, bins: int = 16):
  """[examples, P, 3] -> [examples, bins]: the share of each cloud's points by distance from
  its mean, over the largest distance, in equal bins of [0, 1]."""
  radii = np.linalg.norm(points - points.mean(axis=1, keepdims=True), axis=-1)
  radii = radii / radii.max(axis=1, keepdims=True)
  counts = np.stack([np.histogram(r, bins=bins, range=(0.0, 1.0))[0] for r in radii])
  return counts / points.shape[1]


def solids_baselines(name: str = "synthetic_solids", data_dir=None) -> Dict[str, float]:
  """Test accuracies of always predicting the most frequent test class (`chance`) and of a
  logistic regression on `radius_histograms` (rotation- and scale-invariant), fit on train."""
  from sklearn import linear_model, pipeline, preprocessing  # pylint: disable=g-import-not-at-top
  train_points, train_labels = point_cloud_split(name, "train", data_dir)
  test_points, test_labels = point_cloud_split(name, "test", data_dir)
  model = pipeline.make_pipeline(preprocessing.StandardScaler(),
                                 linear_model.LogisticRegression(max_iter=3000))
  model.fit(radius_histograms(train_points), train_labels)
  return {"chance": float(np.bincount(test_labels).max() / len(test_labels)),
          "radius_histogram_logreg": float(model.score(radius_histograms(test_points),
                                                       test_labels))}
def synthetic_audio_baselines(name: str = "synthetic_audio", data_dir=None) -> Dict[str, float]:
  """Test accuracies of non-neural classifiers on the raw samples (int16 / 32768) of the
  `synthetic_audio` clips, trained on the train split: always the most frequent test class,
  nearest centroid and logistic regression (scikit-learn, lbfgs, 100 iterations)."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from sklearn import linear_model, neighbors  # pylint: disable=import-outside-toplevel
  builder = tfds.builder(name, data_dir=data_dir)
  builder.download_and_prepare()  # Offline: synthesised.
  splits = {}
  for split in ("train", "test"):
    examples = list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))
    splits[split] = (np.stack([e["audio"] for e in examples]).astype(np.float32) / 32768.0,
                     np.array([e["label"] for e in examples]))
  (x, y), (x_test, y_test) = splits["train"], splits["test"]
  accuracy = lambda model: float(np.mean(model.fit(x, y).predict(x_test) == y_test))
  return {"majority_class": float(np.bincount(y_test).max() / len(y_test)),
          "nearest_centroid_raw": accuracy(neighbors.NearestCentroid()),
          "logistic_regression_raw": accuracy(linear_model.LogisticRegression(max_iter=100))}
def flow_test_pairs(name: str = "synthetic_flow", data_dir=None, split: str = "test",
                    crop_size=None):
  """(frame1, frame2, flow) numpy triples of an optical-flow dataset's split, in order, cut to
  their centre crop_size (h, w) window as the eval pipeline cuts them (None: full frames; the
  offline `synthetic_flow` is built on first use)."""
  builder = tfds.builder(name, data_dir=data_dir)
  builder.download_and_prepare()  # Offline for synthetic_flow.
  for example in tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)):
    triple = example["frame1"], example["frame2"], example["flow"]
    if crop_size is not None:
      top, left = ((n - c) // 2 for n, c in zip(triple[2].shape[:2], crop_size))
      triple = tuple(a[top:top + crop_size[0], left:left + crop_size[1]] for a in triple)
    yield triple
def array_split(name: str, split: str, target: str, data_dir=None):
  """(inputs [n, features] float32: each example's array flattened, targets [n]) of `split`
  of an array dataset; `target` names the label or target feature (offline builders build)."""
  builder = tfds.builder(name, data_dir=data_dir)
  builder.download_and_prepare()
  examples = list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))
  inputs = np.stack([e[builder.info.supervised_keys[0]].reshape(-1) for e in examples])
  return inputs.astype(np.float32), np.array([e[target] for e in examples])


def classification_baselines(train, test) -> Dict[str, float]:
  """Test accuracy of (inputs [n, features], labels [n]) `test` under models fit on `train`
  on the raw inputs: chance (always the most frequent train label), nearest centroid and
  logistic regression (standardised inputs)."""
  (x, y), (x_test, y_test) = train, test
  scaler = preprocessing.StandardScaler().fit(x)
  logistic = linear_model.LogisticRegression(max_iter=1000).fit(scaler.transform(x), y)
  return {"chance": float(np.mean(y_test == np.bincount(y).argmax())),
          "nearest_centroid": float(np.mean(neighbors.NearestCentroid().fit(x, y).predict(
              x_test) == y_test)),
          "logistic_regression": float(np.mean(logistic.predict(scaler.transform(x_test))
                                               == y_test))}


def regression_baselines(train, test) -> Dict[str, float]:
  """Test mean squared error of (inputs [n, features], targets [n]) `test` under models fit
  on `train` on the raw inputs: the train mean, and ridge regression (standardised inputs)."""
  (x, y), (x_test, y_test) = train, test
  scaler = preprocessing.StandardScaler().fit(x)
  ridge = linear_model.Ridge(alpha=1.0).fit(scaler.transform(x), y)
  return {"mean_mse": float(np.mean((y_test - np.mean(y)) ** 2)),
          "ridge_mse": float(np.mean((ridge.predict(scaler.transform(x_test)) - y_test) ** 2))}


def _signals(target: str):
  return [array_split("synthetic_signals", split, target) for split in ("train", "test")]
def neighbour_byte_accuracy(train: bytes, test: bytes) -> float:
  """Accuracy on `test`'s inner bytes (those with a left and a right neighbour) of predicting
  each as the byte seen most often in `train` between the same two neighbours (ties: the
  smallest byte; a pair unseen in `train`: its most frequent byte): a non-neural masked-byte
  baseline."""
  if len(train) < 3 or len(test) < 3:
    raise ValueError(f"train and test need >= 3 bytes each, got {len(train)} and {len(test)}.")
  x = np.frombuffer(train, np.uint8).astype(np.int64)
  counts = np.bincount((x[:-2] * 256 + x[2:]) * 256 + x[1:-1], minlength=1 << 24)
  counts = counts.reshape(1 << 16, 256)  # [left * 256 + right, middle]
  fallback = np.bincount(x, minlength=256).argmax()
  best = np.where(counts.any(axis=1), counts.argmax(axis=1), fallback)
  y = np.frombuffer(test, np.uint8).astype(np.int64)
  return float(np.mean(best[y[:-2] * 256 + y[2:]] == y[1:-1]))


def mlm_byte_baselines(train: bytes, test: bytes) -> Dict[str, float]:
  """Masked-byte accuracies on `test`: its most frequent byte, and the neighbour baseline
  (`neighbour_byte_accuracy`) with counts from `train`."""
  return {"most_frequent_byte_accuracy": byte_baselines(test)["most_frequent_byte_accuracy"],
          "neighbour_byte_accuracy": neighbour_byte_accuracy(train, test)}


@dataclasses.dataclass(frozen=True)
class Run:
  """A config trained to show learning: `metric` (eval split) must beat every baseline named
  in `beat` and reach `target` when one is set."""
  config: str
  metric: str
  mode: str  # 'min' or 'max': which way is better.
  baselines: Callable[[], Dict[str, float]]
  beat: Tuple[str, ...]  # The baselines the run must beat.
  target: Optional[float] = None  # A figure the run must reach (e.g. 0.9 accuracy).
  sample_prompt: str = ""  # Language models: the prompt of the printed sample.
  report: Tuple[str, ...] = ()  # Further eval metrics the results row shows.


def _better(mode: str, figure: float, than: float) -> bool:
  return figure < than if mode == "min" else figure > than


RUNS = {
    "perceiver_ar_stdlib": Run(
        config="configs/perceiver_ar_bytes.py:stdlib,cpu", metric="bits_per_byte", mode="min",
        baselines=lambda: byte_baselines(stdlib_test_bytes()), beat=("zlib_9",),
        sample_prompt="def __init__(self"),
    "solids": Run(
        config="configs/solids_perceiver_io.py", metric="accuracy", mode="max",
        baselines=solids_baselines, beat=("chance", "radius_histogram_logreg"), target=0.9),
    "synthetic_audio": Run(
        config="configs/synthetic_audio_perceiver_io.py", metric="accuracy", mode="max",
        baselines=synthetic_audio_baselines,
        beat=("majority_class", "nearest_centroid_raw", "logistic_regression_raw"), target=0.9),
    # Multimodal autoencoding: image + audio L1 below the train-mean predictor's; the row shows
    # the label accuracy (label input masked) beside nearest-centroid / logistic regression.
    "synthetic_av": Run(
        config="configs/synthetic_av_perceiver_io.py", metric="reconstruction_l1", mode="min",
        baselines=av_baselines.synthetic_av_baselines, beat=("mean_reconstruction_l1",),
        report=("image_l1", "audio_l1", "accuracy")),
    "synthetic_flow": Run(
        config="configs/synthetic_flow_perceiver_io.py", metric="epe", mode="min",
        baselines=lambda: flow_baselines(flow_test_pairs(crop_size=(24, 24))),  # As evaluated.
        beat=("zero_flow_epe", "half_zero_flow_epe", "global_translation_epe")),
    "signals": Run(
        config="configs/signals_perceiver.py", metric="accuracy", mode="max",
        baselines=lambda: classification_baselines(*_signals("label")),
        beat=("chance", "nearest_centroid", "logistic_regression"), target=0.9),
    "signals_regression": Run(
        config="configs/signals_perceiver.py:regression", metric="mse", mode="min",
        baselines=lambda: regression_baselines(*_signals("frequency")),
        beat=("mean_mse", "ridge_mse")),
    "mlm_stdlib": Run(
        config="configs/mlm_bytes_perceiver_io.py:cpu", metric="accuracy", mode="max",
        baselines=lambda: mlm_byte_baselines(stdlib_split_bytes("train"), stdlib_test_bytes()),
        beat=("most_frequent_byte_accuracy", "neighbour_byte_accuracy"), target=0.5),
}


def machine() -> str:
  """CPU model and count, e.g. 'AMD EPYC 7B13, 2 CPUs'."""
  model = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  return f"{model}, {usable_cpu_cores()} CPUs"


def _python(module: str, *args: str) -> Tuple[float, str]:
  """Runs `python -m module args` from the repository root; (wall seconds, stdout)."""
  start = time.monotonic()
  result = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, check=True,
                          stdout=subprocess.PIPE, text=True)
  return time.monotonic() - start, result.stdout


def final_eval(workdir: str) -> dict:
  """The newest eval record of metrics.jsonl."""
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    records = [json.loads(line) for line in f]
  evals = [r for r in records if r["split"] == "eval"]
  if not evals:
    raise ValueError(f"{workdir}/metrics.jsonl has no eval record.")
  return max(evals, key=lambda r: r["step"])


def run_one(name: str, run: Run, output: str, overrides=()) -> dict:
  """Trains run `name` into output/name and returns its result record."""
  workdir = os.path.join(output, name)
  args = [f"--config={run.config}", f"--workdir={workdir}"] + [f"--{o}" for o in overrides]
  seconds, _ = _python("experiments.train", *args)
  record = final_eval(workdir)
  baselines = run.baselines()
  figure = record[run.metric]
  beats = all(_better(run.mode, figure, baselines[name]) for name in run.beat)
  if run.target is not None:
    beats = beats and (figure == run.target or _better(run.mode, figure, run.target))
  result = {"run": name, "command": "python -m experiments.train " + " ".join(args),
            "train_seconds": round(seconds, 1), "step": record["step"], "metric": run.metric,
            "value": figure, "eval": record, "baselines": baselines, "beat": list(run.beat),
            "target": run.target, "report": {name: record[name] for name in run.report},
            "beats_baseline": bool(beats), "machine": machine(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
  _, plotted = _python("experiments.plot", f"--workdir={workdir}")
  result["plots"] = plotted.split()
  if run.sample_prompt:
    _, sample = _python("experiments.sample", f"--workdir={workdir}",
                        f"--prompt={run.sample_prompt}", "--max_new_tokens=300",
                        "--temperature=0.8", "--top_k=40")
    result["sample"] = sample
  return result


def markdown_row(result: dict) -> str:
  """A README results-table row: run, command, machine and date, figure against baselines."""
  baselines = ", ".join(f"{k} {v:.3f}" for k, v in result["baselines"].items())
  minutes = result["train_seconds"] / 60
  must = " and ".join(result["beat"])
  if result.get("target") is not None:
    must += f", reach {result['target']}"
  also = "".join(f", {name} {value:.3f}" for name, value in result.get("report", {}).items())
  return (f"| {result['run']} | `{result['command']}` | {result['machine']}, {result['date']}, "
          f"{minutes:.1f} min | {result['metric']} {result['value']:.3f} at step "
          f"{result['step']}{also} (must beat {must}; baselines: {baselines}) |")


def main(argv):
  del argv
  unknown = sorted(set(FLAGS.runs) - set(RUNS))
  if unknown:
    raise ValueError(f"--runs names unknown runs {unknown}; the runs are {sorted(RUNS)}.")
  os.makedirs(FLAGS.output, exist_ok=True)
  results = [run_one(name, RUNS[name], FLAGS.output, FLAGS.overrides) for name in FLAGS.runs]
  with open(os.path.join(FLAGS.output, "results.json"), "w", encoding="utf-8") as f:
    json.dump(results, f, indent=1)
  with open(os.path.join(FLAGS.output, "results.md"), "w", encoding="utf-8") as f:
    f.write("\n".join(markdown_row(r) for r in results) + "\n")
  for result in results:
    print(markdown_row(result))
    if "sample" in result:
      print(result["sample"])
  sys.exit(0 if all(r["beats_baseline"] for r in results) else 1)


if __name__ == "__main__":
  define_flags()
  app.run(main)
