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

Options: the GLUE task, 'sst2' (default), 'cola', 'mrpc', 'qqp', 'mnli' (validation_matched),
'qnli', 'rte' (STS-B is regression and not supported); the size, 'full' (default) or 'tiny'
(a test-size model, 2 steps), e.g. `:mrpc,tiny`.
Hardware: one or a few GPUs. Prepare the data once (download): `tfds build glue/sst2`.

  python -m experiments.train --config=configs/glue_bytes_perceiver_io.py:mrpc --workdir=DIR
"""

import ml_collections

from configs import common
from perceiver_jax import tasks

# GLUE task -> (text features, classes, eval split, training examples).
GLUE = {
    "sst2": (("sentence",), 2, "validation", 67_349),
    "cola": (("sentence",), 2, "validation", 8551),
    "mrpc": (("sentence1", "sentence2"), 2, "validation", 3668),
    "qqp": (("question1", "question2"), 2, "validation", 363_846),
    "mnli": (("premise", "hypothesis"), 3, "validation_matched", 392_702),
    "qnli": (("question", "sentence"), 2, "validation", 104_743),
    "rte": (("sentence1", "sentence2"), 2, "validation", 2490),
}
OPTIONS = {"task": tuple(GLUE), "size": common.SIZES}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """Fine-tuning on a GLUE task with the options `arg` (see the module docstring)."""
  options = common.parse_options(arg, OPTIONS)
  text_features, num_classes, eval_split, train_examples = GLUE[options.task]
  c = common.get_config()
  if options.size == "tiny":
    c.model = tasks.tiny_config("sequence_classification")
  else:
    c.model = tasks.default_config("sequence_classification")
    c.model.dtype = "bfloat16"
  c.model.num_classes = num_classes
  c.data.update(name=f"glue/{options.task}", task="text_classification",
                text_features=text_features, label_feature="label",
                max_seq_len=c.model.max_seq_len, eval_split=eval_split)
  c.optimizer.update(name="lamb", learning_rate=3e-5, b1=0.9, b2=0.999, eps=1e-6,
                     weight_decay=0.01, schedule="warmup_cosine", warmup_steps=200)
  c.mesh.min_fsdp_size = 2 ** 16
  c.batch_size = 32
  c.eval_batch_size = 64
  c.num_train_steps = 10 * train_examples // c.batch_size
  c.log_every_steps = 50
  c.eval_every_steps = train_examples // c.batch_size  # Every epoch.
  c.checkpoint_every_steps = c.eval_every_steps
  if options.size == "tiny":
    common.tiny_run(c)
  return c
