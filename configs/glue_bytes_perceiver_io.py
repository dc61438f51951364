"""The Perceiver IO byte model fine-tuned on one GLUE task (TFDS 'glue/<task>').

Targets the Perceiver IO paper's GLUE average of 81.0 (UTF-8 bytes), which comes from
fine-tuning the pre-trained byte MLM (`configs/mlm_bytes_perceiver_io.py`). Start from it
with `--config.init_from=DIR`, DIR a pretrained model directory: the transformers checkpoint
deepmind/language-perceiver converted by `python -m perceiver_jax.convert`. The encoder and
input adapter then take the pretrained architecture and weights; the classification query and
decoder start fresh. Without init_from the classifier trains from scratch, far below the
paper. Model: `sequence_classification` 'bytes', 206.1M parameters (the MLM's encoder + one
classification query). Each example's text features are joined as UTF-8 bytes with SEP
between them (e.g. sentence1 SEP sentence2), cut or padded to 2,048 ids (data task
'text_classification'). Recipe (TF Model Garden's Perceiver IO GLUE
configs, which follow the paper's Table 10): LAMB (eps 1e-6, weight decay 0.01 off biases
and norm scales), peak 3e-5 after 200 warm-up steps, then cosine to 0 (Model Garden decays
linearly), 10 epochs at batch 32; bf16.
Evaluation uses the validation split (GLUE test labels are hidden) and reports accuracy; the
official CoLA (Matthews correlation) and MRPC/QQP (F1) metrics are not computed.

Variants: the GLUE task, '' = 'sst2', 'cola', 'mrpc', 'qqp', 'mnli' (validation_matched),
'qnli', 'rte' (STS-B is regression and not supported); 'tiny' is a test-size model on sst2.
Hardware: one or a few GPUs. Prepare the data once (download): `tfds build glue/sst2`.

  python -m experiments.train --config=configs/glue_bytes_perceiver_io.py:mrpc --workdir=DIR
"""

import ml_collections

from perceiver_jax import tasks
from perceiver_jax.data import data_config
from perceiver_jax.train import optim

# GLUE task -> (text features, classes, eval split, training examples).
GLUE = {
    "cola": (("sentence",), 2, "validation", 8551),
    "sst2": (("sentence",), 2, "validation", 67_349),
    "mrpc": (("sentence1", "sentence2"), 2, "validation", 3668),
    "qqp": (("question1", "question2"), 2, "validation", 363_846),
    "mnli": (("premise", "hypothesis"), 3, "validation_matched", 392_702),
    "qnli": (("question", "sentence"), 2, "validation", 104_743),
    "rte": (("sentence1", "sentence2"), 2, "validation", 2490),
}
VARIANTS = ("", "tiny") + tuple(GLUE)


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  """Fine-tuning on the GLUE task `variant` (see the module docstring)."""
  if variant not in VARIANTS:
    raise ValueError(f"configs/glue_bytes_perceiver_io.py variants are {VARIANTS}, got "
                     f"{variant!r}.")
  glue_task = variant if variant in GLUE else "sst2"
  text_features, num_classes, eval_split, train_examples = GLUE[glue_task]
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.init_from = ml_collections.config_dict.placeholder(str)  # Pretrained model dir (fine-tune).
  c.model = tasks.default_config("sequence_classification")
  c.model.dtype = "bfloat16"
  c.model.num_classes = num_classes
  c.data = data_config.default_config()
  c.data.update(name=f"glue/{glue_task}", task="text_classification",
                text_features=text_features, label_feature="label",
                max_seq_len=c.model.max_seq_len, eval_split=eval_split)
  c.optimizer = optim.default_config()
  c.optimizer.update(name="lamb", learning_rate=3e-5, b1=0.9, b2=0.999, eps=1e-6,
                     weight_decay=0.01, schedule="warmup_cosine", warmup_steps=200)
  c.mesh = dict(data=-1, fsdp=1, min_fsdp_size=2 ** 16)
  c.checkpoint = dict(keep=2, best_metric="accuracy", best_mode="max", async_save=True)
  c.label_smoothing = 0.0
  c.mixup = dict(mixup_alpha=0.0, cutmix_alpha=0.0, switch_prob=0.5)  # Off: ids do not mix.
  c.grad_accum_steps = 1
  c.batch_size = 32
  c.eval_batch_size = 64
  c.num_train_steps = 10 * train_examples // c.batch_size
  c.log_every_steps = 50
  c.eval_every_steps = train_examples // c.batch_size  # Every epoch.
  c.checkpoint_every_steps = c.eval_every_steps
  if variant == "tiny":
    c.model = tasks.tiny_config("sequence_classification")
    c.model.num_classes = num_classes
    c.data.update(max_seq_len=c.model.max_seq_len, shuffle_buffer=64)
    c.optimizer.warmup_steps = 1
    c.batch_size, c.eval_batch_size = 16, 16
    c.num_train_steps, c.log_every_steps = 2, 1
    c.eval_every_steps, c.checkpoint_every_steps = 2, 2
  return c
