"""Sample text from a Perceiver AR checkpoint.

  python -m experiments.sample --workdir=DIR --prompt="def main(" --max_new_tokens=200 \\
      [--temperature=0.8 --top_k=40 --top_p=0.95]

The config is the one the run saved (DIR/config.json) with any explicit --config.x=y on top
(experiments/launch.py).
"""

from absl import app, flags
import jax
import jax.numpy as jnp

from experiments import checkpoint_flag, launch
from experiments.launch import FLAGS, saved_run_config, setup_processes
from perceiver_jax.train.experiment import build_experiment
from perceiver_jax.nn.generation import generate
from perceiver_jax.data.tokenizer import BytesTokenizer

flags.adopt_module_key_flags(launch)  # --help lists --config, --workdir, --cpu_devices...
flags.DEFINE_string("prompt", "", "Text the samples continue.")
flags.DEFINE_integer("max_new_tokens", 200, "Bytes to generate.")
flags.DEFINE_integer("num_samples", 1, "Samples drawn (one batch).")
flags.DEFINE_float("temperature", 1.0, "0 is greedy decoding.")
flags.DEFINE_integer("top_k", None, "Sample among the k most likely bytes.")
flags.DEFINE_float("top_p", None, "Nucleus sampling: the smallest set with this probability.")
flags.adopt_module_key_flags(checkpoint_flag)  # --step.


def sample_from_checkpoint(config, workdir: str, prompt: str, max_new_tokens: int,
                           num_samples: int = 1, temperature: float = 1.0, top_k=None,
                           top_p=None, step=None, seed: int = 0):
  """Decoded continuations of `prompt` from the checkpoint in `workdir`."""
  if config.model.task != "language_modeling":
    raise ValueError(f"sampling needs a language_modeling config, got {config.model.task!r}.")
  experiment = build_experiment(config, workdir, read_only=True)  # A run may be saving.
  if step is None and experiment.checkpointer.latest_step() is None:
    raise ValueError(f"no checkpoint in {workdir}/checkpoints to sample from.")
  state, _ = experiment.restore_or_init(step)
  experiment.checkpointer.close()
  tokenizer = BytesTokenizer()
  ids = [tokenizer.eos_id] + list(tokenizer.encode(prompt))  # Documents follow EOS in training.
  prompt_ids = jnp.asarray([ids] * num_samples, jnp.int32)
  tokens = generate(experiment.model, state.variables, prompt_ids, max_new_tokens,
                    rng=jax.random.PRNGKey(seed), temperature=temperature, top_k=top_k,
                    top_p=top_p)
  return [tokenizer.decode(row) for row in jax.device_get(tokens).tolist()]


def main(argv):
  del argv
  config = saved_run_config()
  setup_processes(config)
  for text in sample_from_checkpoint(config, FLAGS.workdir, FLAGS.prompt,
                                     FLAGS.max_new_tokens, FLAGS.num_samples, FLAGS.temperature,
                                     FLAGS.top_k, FLAGS.top_p, FLAGS.step):
    print(FLAGS.prompt + text)
    print("-" * 40)


if __name__ == "__main__":
  app.run(main)
