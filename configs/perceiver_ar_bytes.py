"""Perceiver AR byte-level language modelling; reports bits per byte.

Variants:
- '' (default): PG-19 books from TFDS ('pg19', prepare it first: the trainer prints the
  command), 8,192-byte context, 1,024 latents x 1,024, 12 layers; AdamW with warm-up + cosine,
  z-loss 1e-4, bf16 compute. Assumes accelerators (e.g. 8 GPUs / a TPU slice).
- 'stdlib': the same model trained offline on the Python standard library's source files
  (TFDS 'python_stdlib_text', built from this machine's Python; no download).
- 'tiny': a test-size model on 'python_stdlib_text/small'.

  python -m experiments.train --config=configs/perceiver_ar_bytes.py:stdlib --workdir=DIR
  python -m experiments.sample --config=configs/perceiver_ar_bytes.py:stdlib --workdir=DIR \\
      --prompt="def main(" --max_new_tokens=200
"""

import ml_collections

from perceiver_jax import tasks
from perceiver_jax.data import data_config
from perceiver_jax.train import optim


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  """The byte LM experiment of `variant` ('', 'stdlib' or 'tiny')."""
  if variant not in ("", "stdlib", "tiny"):
    raise ValueError(f"configs/perceiver_ar_bytes.py variants are '', 'stdlib' and 'tiny', got "
                     f"{variant!r}.")
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.init_from = ml_collections.config_dict.placeholder(str)  # Pretrained model dir (fine-tune).
  c.model = tasks.tiny_config("language_modeling") if variant == "tiny" else (
      tasks.default_config("language_modeling"))
  if variant != "tiny":
    c.model.dtype = "bfloat16"
  context = c.model.perceiver_ar.max_context
  c.data = data_config.default_config()
  c.data.update(name="pg19" if variant == "" else "python_stdlib_text", task="text_mlm",
                text_feature="book_text" if variant == "" else "text",
                max_seq_len=context + 1, pack=True,
                eval_split="validation" if variant == "" else "test")
  if variant == "tiny":
    c.data.name = "python_stdlib_text/small"
    c.data.shuffle_buffer = 64
  c.optimizer = optim.default_config()
  c.optimizer.update(name="adamw", learning_rate=3e-4, b2=0.95, weight_decay=0.1,
                     schedule="warmup_cosine", warmup_steps=1000, clip_norm=1.0)
  c.mesh = dict(data=-1, fsdp=1, min_fsdp_size=2 ** 16)
  c.checkpoint = dict(keep=3, best_metric="bits_per_byte", best_mode="min", async_save=True)
  c.z_loss = 1e-4
  c.grad_accum_steps = 1
  c.batch_size = 64
  c.eval_batch_size = 64
  c.num_train_steps = 200_000
  c.log_every_steps = 100
  c.eval_every_steps = 5000
  c.checkpoint_every_steps = 1000
  if variant == "tiny":
    c.optimizer.warmup_steps = 2
    c.batch_size, c.eval_batch_size = 8, 8
    c.num_train_steps, c.log_every_steps = 4, 2
    c.eval_every_steps, c.checkpoint_every_steps = 4, 4
  return c
