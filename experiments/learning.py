"""Shown-to-learn runs: train a config with the real launcher and compare it with a baseline.

  python -m experiments.learning --runs=perceiver_ar_stdlib --output=/tmp/learning

Each run trains `python -m experiments.train --config=CONFIG --workdir=OUTPUT/NAME` in a
subprocess (the command a user types; its wall time is measured), then writes the run's
learning curves (`experiments.plot`) and, for language models, a sample
(`experiments.sample`). The run's figure is its last evaluation of `metric` in
metrics.jsonl; the baselines are computed on the same raw test data without a network (for
bytes: zlib, bz2 and lzma at their strongest settings on the concatenated test split, and the
unigram entropy). OUTPUT/results.json and OUTPUT/results.md (one README-ready row per run:
figure, baselines, command, wall time, machine, date) hold the outcome; the exit status is 1
when a run does not beat its baseline.
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


def _better(mode: str, figure: float, than: float) -> bool:
  return figure < than if mode == "min" else figure > than


RUNS = {
    "perceiver_ar_stdlib": Run(
        config="configs/perceiver_ar_bytes.py:stdlib,cpu", metric="bits_per_byte", mode="min",
        baselines=lambda: byte_baselines(stdlib_test_bytes()), beat=("zlib_9",),
        sample_prompt="def __init__(self"),
    "mlm_stdlib": Run(
        config="configs/mlm_bytes_perceiver_io.py:cpu", metric="accuracy", mode="max",
        baselines=lambda: mlm_byte_baselines(stdlib_split_bytes("train"), stdlib_test_bytes()),
        beat=("most_frequent_byte_accuracy",), target=0.5),
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
            "target": run.target,
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
  return (f"| {result['run']} | `{result['command']}` | {result['machine']}, {result['date']}, "
          f"{minutes:.1f} min | {result['metric']} {result['value']:.3f} at step "
          f"{result['step']} (must beat {must}; baselines: {baselines}) |")


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
