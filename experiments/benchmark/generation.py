"""Generation speed of Perceiver AR's two caches (perceiver_jax/nn/generation.py).

  python -m experiments.benchmark.generation --preset=8k --prompt_length=8000 --new_tokens=32 \\
      --repeats=3 [--caches=sliding,latents --max_latents=2048 --output=/tmp/gen.json]

--preset=8k is tasks.default_config('language_modeling') (8,192 context, 1,024 latents x 1,024
channels, 12 layers); 'tiny' its test size. Random weights, greedy decoding, one prompt of
--prompt_length random bytes per row (--batch_size rows). For each cache: the compile time of
the generation call (ahead of time), the median of --repeats calls, new tokens/s of the call
(new_tokens / median: the prompt's pass included), the prompt pass alone (the median of
max_new_tokens=1 calls) and decode tokens/s ((new_tokens - 1) / (median - prompt pass); None
when timing noise makes the difference <= 0).
"""

import json
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

from perceiver_jax import tasks
from perceiver_jax.nn.generation import CACHES, compile_generate

PRESETS = {"8k": tasks.default_config, "tiny": tasks.tiny_config}


def _median_seconds(run, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(run())
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def benchmark_generation(model, variables, prompt, new_tokens: int, repeats: int,
                         caches=CACHES, max_latents=None):
  """One row per cache: compile time, median call, prompt pass, tokens/s (module docstring)."""
  rows = []
  for cache in caches:
    kwargs = dict(temperature=0.0, cache=cache,
                  max_latents=max_latents if cache == "latents" else None)
    run, compile_s = compile_generate(model, variables, prompt, new_tokens, **kwargs)
    median = _median_seconds(run, repeats)
    prompt_pass = _median_seconds(compile_generate(model, variables, prompt, 1, **kwargs)[0],
                                  repeats)
    batch = prompt.shape[0]
    rows.append(dict(cache=cache, batch_size=batch, prompt_length=prompt.shape[1],
                     new_tokens=new_tokens, compile_s=compile_s, median_s=median,
                     tokens_per_s=batch * new_tokens / median, prompt_pass_s=prompt_pass,
                     decode_tokens_per_s=(batch * (new_tokens - 1) / (median - prompt_pass)
                                          if median > prompt_pass else None)))
  return rows


def _define_flags():
  flags.DEFINE_enum("preset", "8k", list(PRESETS), "8k: the language_modeling task's default "
                    "config; tiny: its test size.")
  flags.DEFINE_integer("prompt_length", 8000, "Prompt tokens per row.")
  flags.DEFINE_integer("new_tokens", 32, "Tokens generated per call.")
  flags.DEFINE_integer("batch_size", 1, "Rows per call.")
  flags.DEFINE_integer("repeats", 3, "Timed calls per measurement (median reported).")
  flags.DEFINE_list("caches", list(CACHES), f"Any of {CACHES}.")
  flags.DEFINE_integer("max_latents", None, "cache='latents' bound (default 2 x num_latents).")
  flags.DEFINE_string("output", None, "JSON file for the rows.")


def main(argv):
  del argv
  f = flags.FLAGS
  model = tasks.build(PRESETS[f.preset]("language_modeling"))
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 1), jnp.int32))
  prompt = jnp.asarray(np.random.default_rng(0).integers(6, model.vocab_size,
                                                         (f.batch_size, f.prompt_length)),
                       jnp.int32)
  print(f"{jax.devices()[0].device_kind} x{jax.device_count()}, preset {f.preset}")
  rows = benchmark_generation(model, variables, prompt, f.new_tokens, f.repeats, f.caches,
                              f.max_latents)
  for row in rows:
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}))
  if f.output:
    with open(f.output, "w") as out:
      json.dump(rows, out, indent=1)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
