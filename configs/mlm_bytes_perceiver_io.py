"""Perceiver IO byte-level masked language model (the paper's UTF-8 BERT) on English Wikipedia.

The Perceiver IO paper's pre-training run, as far as one TFDS corpus allows: the paper mixes
C4 and English Wikipedia; this trains on TFDS 'wikipedia/20230601.en' alone (its first
10,000 articles held out for evaluation). Model: `masked_language_modeling` 'bytes', 201.1M
parameters (2048 bytes x 768, 256 latents x 1280, 26 self-attention layers, 2048 output
queries, logits tied to the byte embedding). Documents are packed into rows of 2,048 byte ids
(EOS between documents); 15% of the bytes are masked BERT-style and scored. Recipe (the
paper's, as in TF Model Garden's reproduction): LAMB (b1 0.9, b2 0.999, eps 1e-6, weight
decay 0.01 off biases and norm scales), peak 1.25e-3 after 1,000 linear warm-up steps, cosine
to 0 at step 500,000; batch 512 rows; bf16 compute. The GLUE figure (81.0) comes from
fine-tuning this model (`configs/glue_bytes_perceiver_io.py`).

Hardware: TPU pods in the paper; on GPUs shard the optimizer state with
--config.mesh.fsdp=8 and add --config.grad_accum_steps=N until a step fits. Prepare the data
once: `tfds build wikipedia/20230601.en` (an Apache Beam build: `pip install apache-beam
mwparserfromhell`; pass --beam_pipeline_options for a distributed runner).

Options: the size, 'full' (default), 'cpu' (the offline 2-core CPU preset: 128-byte rows of
the 'python_stdlib_text' corpus, 64 latents x 128, 4 layers, float32, AdamW, 2,000 steps of
32; for a fast start it departs from the paper's model with sinusoidal initial positions, a
width-5 byte convolution in the input adapter and the adapted inputs as decoder queries: the
README's `python -m experiments.learning --runs=mlm_stdlib`) or 'tiny' (a test-size model, 2
steps on the offline 'python_stdlib_text/small' corpus).

  python -m experiments.train --config=configs/mlm_bytes_perceiver_io.py --workdir=workdirs/mlm
"""

import ml_collections

from configs import common
from perceiver_jax import tasks

OPTIONS = {"size": common.SIZES + ("cpu",)}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """The byte MLM pre-training run with the options `arg` (see the module docstring)."""
  options = common.parse_options(arg, OPTIONS)
  c = common.get_config()
  c.model = tasks.default_config("masked_language_modeling")
  c.model.dtype = "bfloat16"
  c.data.update(name="wikipedia/20230601.en", task="text_mlm", text_feature="text",
                max_seq_len=c.model.max_seq_len, pack=True, train_split="train[10000:]",
                eval_split="train[:10000]")
  c.optimizer.update(name="lamb", learning_rate=1.25e-3, b1=0.9, b2=0.999, eps=1e-6,
                     weight_decay=0.01, schedule="warmup_cosine", warmup_steps=1000)
  c.mesh.min_fsdp_size = 2 ** 16
  c.checkpoint.update(keep=3, best_metric="loss", best_mode="min")
  c.batch_size = 512
  c.eval_batch_size = 512
  c.num_train_steps = 500_000
  c.eval_every_steps = 10_000
  c.checkpoint_every_steps = 5000
  if options.size == "cpu":
    _cpu_preset(c)
  if options.size == "tiny":
    c.model = tasks.tiny_config("masked_language_modeling")
    c.data.update(name="python_stdlib_text/small", max_seq_len=c.model.max_seq_len,
                  train_split="train", eval_split="test")
    common.tiny_run(c)
  return c


def _cpu_preset(c):
  """The offline 2-core CPU run: a small model on 128-byte rows of the stdlib corpus."""
  c.model.dtype = "float32"
  c.model.max_seq_len = 128
  # Faster to learn than the paper's model at this budget (issue 17): sinusoidal initial
  # positions, a width-5 convolution giving each byte its neighbours, and decoder queries
  # that are the adapted inputs (with the query residual), so a masked byte's query carries
  # its context; the latents add the rest of the row.
  c.model.input_adapter.update(num_channels=128, position_init="sinusoidal", conv_width=5)
  c.model.output_query = "inputs"
  c.model.encoder.update(
      num_latents=64, num_latent_channels=128, num_self_attention_layers_per_block=4,
      num_cross_attention_heads=4, num_self_attention_heads=4, cross_attention_qk_channels=128,
      cross_attention_v_channels=128, self_attention_qk_channels=128,
      self_attention_v_channels=128)
  c.model.decoder.update(num_heads=4, qk_channels=128, v_channels=128, use_query_residual=True)
  c.data.update(name="python_stdlib_text", max_seq_len=c.model.max_seq_len, train_split="train",
                eval_split="test")
  c.optimizer.update(name="adamw", learning_rate=2e-3, b2=0.98, eps=1e-8, weight_decay=0.01,
                     warmup_steps=100, clip_norm=1.0)
  c.mesh.min_fsdp_size = 2 ** 16
  c.batch_size, c.eval_batch_size = 32, 64
  c.num_train_steps, c.log_every_steps = 2000, 50
  c.eval_every_steps = c.checkpoint_every_steps = 500
