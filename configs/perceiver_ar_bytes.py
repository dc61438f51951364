"""Perceiver AR byte-level language modelling; reports bits per byte.

The model: 8,192-byte context, 1,024 latents x 1,024, 12 layers; AdamW with warm-up + cosine,
z-loss 1e-4, bf16 compute; evaluated on whole documents in blocks of 1,024 bytes
(config.data.eval_block_size). Assumes accelerators (e.g. 8 GPUs / a TPU slice).
Options: the corpus,
- 'pg19' (default): PG-19 books from TFDS ('pg19', prepare it first: the trainer prints the
  command);
- 'stdlib': the Python standard library's source files, offline (TFDS 'python_stdlib_text',
  built from this machine's Python; no download);
and the size, 'full' (default), 'cpu' (512-byte context, 256 latents x 128, 4 layers, logits
tied to the byte embedding (faster to learn at this size), float32:
1,800 steps of 16 rows that train on 2 CPU cores in about 20 minutes; `:stdlib,cpu` is the
README's shown-to-learn run, `python -m experiments.learning --runs=perceiver_ar_stdlib`)
or 'tiny': a test-size model for 4 steps (on 'stdlib' its 'python_stdlib_text/small' part),
e.g. `:stdlib,tiny`, which the tests train.

  python -m experiments.train --config=configs/perceiver_ar_bytes.py:stdlib --workdir=DIR
  python -m experiments.sample --workdir=DIR --prompt="def main(" --max_new_tokens=200
"""

import ml_collections

from configs import common
from perceiver_jax import tasks

OPTIONS = {"data": ("pg19", "stdlib"), "size": common.SIZES + ("cpu",)}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """The byte LM experiment with the options `arg` (see the module docstring)."""
  options = common.parse_options(arg, OPTIONS)
  tiny = options.size == "tiny"
  c = common.get_config()
  if tiny:
    c.model = tasks.tiny_config("language_modeling")
  elif options.size == "cpu":
    c.model = tasks.default_config("language_modeling")
    c.model.perceiver_ar.update(max_context=512, num_latents=256, num_channels=128,
                                num_heads=2, num_layers=4, tied_embeddings=True)
  else:
    c.model = tasks.default_config("language_modeling")
    c.model.dtype = "bfloat16"
  if options.data == "pg19":
    c.data.update(name="pg19", text_feature="book_text", eval_split="validation")
  else:
    c.data.update(name="python_stdlib_text/small" if tiny else "python_stdlib_text",
                  text_feature="text", eval_split="test")
  # References: overriding --config.model.perceiver_ar.max_context / num_latents moves these.
  model = c.model.perceiver_ar
  c.data.update(task="text_mlm", max_seq_len=model.get_ref("max_context") + 1, pack=True)
  # Evaluation scores every byte of each held-out document once, in blocks of num_latents
  # bytes with at least max_context - num_latents + 1 bytes of context; 'tiny' evaluates its
  # packed rows (the last num_latents bytes of each), a quarter of the windows' steps.
  c.data.eval_block_size = 0 if tiny else model.get_ref("num_latents").identity()
  c.optimizer.update(name="adamw", learning_rate=3e-4, b2=0.95, weight_decay=0.1,
                     schedule="warmup_cosine", warmup_steps=1000, clip_norm=1.0)
  c.mesh.min_fsdp_size = 2 ** 16
  c.checkpoint.update(keep=3, best_metric="bits_per_byte", best_mode="min")
  c.z_loss = 1e-4
  c.batch_size = 64
  c.eval_batch_size = 64
  c.num_train_steps = 200_000
  c.eval_every_steps = 5000
  if options.size == "cpu":  # About 20 minutes on 2 CPU cores (see the README's Results).
    c.batch_size = 16
    c.num_train_steps, c.log_every_steps = 1800, 50
    c.eval_every_steps = c.checkpoint_every_steps = 900
    c.optimizer.update(learning_rate=1e-3, warmup_steps=100)
  if tiny:
    c.data.shuffle_buffer = 64
    c.optimizer.warmup_steps = 2
    c.batch_size, c.eval_batch_size = 8, 8
    c.num_train_steps, c.log_every_steps = 4, 2
    c.eval_every_steps, c.checkpoint_every_steps = 4, 4
  return c
