"""Sample text from a Perceiver AR checkpoint.

  python -m experiments.sample --workdir=DIR --prompt="def main(" --max_new_tokens=200 \\
      [--temperature=0.8 --top_k=40 --top_p=0.95]
      [--prompt="import " ... | --prompts_file=FILE] [--cache=latents --max_latents=2048] [--eos]

The config is the one the run saved (DIR/config.json) with any explicit --config.x=y on top
(experiments/launch.py). Several prompts (repeated --prompt, or one per line of --prompts_file)
are left-padded into one batch. --cache picks generation's cache
(perceiver_jax/nn/generation.py): 'sliding' (exact) or 'latents' (the official fast decoding,
bounded by --max_latents); --eos ends each sample at its first EOS. Prints each sample, then
new tokens/s: the new tokens of all rows over the seconds of the generation call, compiled
beforehand (compilation excluded; its time printed beside).
"""

import time

from absl import app, flags
import jax

from experiments import checkpoint_flag, launch
from experiments.launch import FLAGS, saved_run_config, setup_processes
from perceiver_jax.train.experiment import build_experiment
from perceiver_jax.nn.generation import (CACHES, compile_generate, pad_prompts,
                                         sequence_lengths)
from perceiver_jax.data.tokenizer import BytesTokenizer

flags.adopt_module_key_flags(launch)  # --help lists --config, --workdir, --cpu_devices...
flags.DEFINE_multi_string("prompt", [""], "Text the samples continue (repeat for several).")
flags.DEFINE_string("prompts_file", None, "A file of prompts, one per line (instead of --prompt).")
flags.DEFINE_integer("max_new_tokens", 200, "Bytes to generate.")
flags.DEFINE_integer("num_samples", 1, "Samples drawn per prompt (all in one batch).")
flags.DEFINE_enum("cache", "sliding", list(CACHES), "Generation's cache: sliding (exact) or "
                  "latents (the official fast decoding; perceiver_jax/nn/generation.py).")
flags.DEFINE_integer("max_latents", None, "--cache=latents: the latents cached before a "
                     "reset-fill (default min(2 x num_latents, max_context)).")
flags.DEFINE_bool("eos", False, "End each sample at its first EOS (the rest is not printed).")
flags.DEFINE_float("temperature", 1.0, "0 is greedy decoding.")
flags.DEFINE_integer("top_k", None, "Sample among the k most likely bytes.")
flags.DEFINE_float("top_p", None, "Nucleus sampling: the smallest set with this probability.")
flags.adopt_module_key_flags(checkpoint_flag)  # --step.


def sample_from_checkpoint(config, workdir: str, prompt, max_new_tokens: int,
                           num_samples: int = 1, temperature: float = 1.0, top_k=None,
                           top_p=None, step=None, seed: int = 0, cache: str = "sliding",
                           max_latents=None, stop_at_eos: bool = False,
                           return_speed: bool = False):
  """Decoded continuations of `prompt` (a str, or a list of them: num_samples rows each, in
  order) from the checkpoint in `workdir`; with stop_at_eos each ends before its first EOS.
  return_speed: also new tokens per second (EOS included, not the PAD after it) of the
  generation call, compiled beforehand."""
  if config.model.task != "language_modeling":
    raise ValueError(f"sampling needs a language_modeling config, got {config.model.task!r}.")
  experiment = build_experiment(config, workdir, read_only=True)  # A run may be saving.
  if step is None and experiment.checkpointer.latest_step() is None:
    raise ValueError(f"no checkpoint in {workdir}/checkpoints to sample from.")
  state, _ = experiment.restore_or_init(step)
  experiment.checkpointer.close()
  tokenizer = BytesTokenizer()
  prompts = [prompt] if isinstance(prompt, str) else list(prompt)
  # Documents follow EOS in training.
  ids, mask = pad_prompts([[tokenizer.eos_id] + list(tokenizer.encode(text))
                           for text in prompts for _ in range(num_samples)])
  eos_id = tokenizer.eos_id if stop_at_eos else None
  run, _ = compile_generate(experiment.model, state.variables, ids, max_new_tokens,
                            rng=jax.random.PRNGKey(seed), temperature=temperature, top_k=top_k,
                            top_p=top_p, prompt_mask=mask, cache=cache,
                            max_latents=max_latents, eos_id=eos_id)
  start = time.perf_counter()
  tokens = jax.device_get(run())
  seconds = time.perf_counter() - start
  new_tokens = sequence_lengths(tokens, eos_id).sum() if stop_at_eos else tokens.size
  texts = [tokenizer.decode(row) for row in tokens]  # Drops EOS and the PAD after it.
  tokens_per_s = float(new_tokens / seconds)
  return (texts, tokens_per_s) if return_speed else texts


def main(argv):
  del argv
  config = saved_run_config()
  setup_processes(config)
  prompts = FLAGS.prompt
  if FLAGS.prompts_file:
    with open(FLAGS.prompts_file, encoding="utf-8") as f:
      prompts = [line.rstrip("\n") for line in f if line.strip()]
  texts, tokens_per_s = sample_from_checkpoint(
      config, FLAGS.workdir, prompts, FLAGS.max_new_tokens, FLAGS.num_samples,
      FLAGS.temperature, FLAGS.top_k, FLAGS.top_p, FLAGS.step, cache=FLAGS.cache,
      max_latents=FLAGS.max_latents, stop_at_eos=FLAGS.eos, return_speed=True)
  for row, text in enumerate(texts):
    print(prompts[row // FLAGS.num_samples] + text)
    print("-" * 40)
  print(f"{tokens_per_s:.1f} new tokens/s (all rows; the generation call after compilation)")


if __name__ == "__main__":
  app.run(main)
