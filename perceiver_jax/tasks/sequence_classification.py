"""Perceiver IO sequence classification on UTF-8 bytes (GLUE fine-tuning of the byte model).

ids [batch, max_seq_len] (padded with PAD; `pad_mask = ids != PAD`) -> TextAdapter ->
PerceiverEncoder (the MLM model's, so its pre-trained weights load) -> one TrainableQuery
[1, 1280] -> PerceiverDecoder(output_channels=num_classes, query residual) ->
ClassificationOutput -> logits [batch, num_classes].

Paper: the byte MLM model fine-tuned on GLUE reaches 81.0 average (Perceiver IO, Table 2);
GLUE tasks use 2 or 3 classes (1 for STS-B regression).
"""

import jax.numpy as jnp
import ml_collections

from perceiver_jax.io.adapters import TextAdapter
from perceiver_jax.nn.models import PerceiverIO
from perceiver_jax.tasks.building import classification_model, task_config
from perceiver_jax.tasks.masked_language_modeling import (text_encoder_config,
                                                          tiny_text_encoder_config)
from perceiver_jax.data.tokenizer import VOCAB_SIZE

TASK = "sequence_classification"
VARIANTS = ("bytes",)


def default_config(variant: str = None) -> ml_collections.ConfigDict:
  """The byte model with a classification head (2 classes)."""
  c = task_config(TASK, VARIANTS, variant)
  c.max_seq_len = 2048
  c.vocab_size = VOCAB_SIZE
  c.num_classes = 2
  c.input_adapter = dict(num_channels=768)
  c.encoder = text_encoder_config()
  c.query_channels = 1280
  c.decoder = dict(num_heads=1, widening_factor=1, use_query_residual=True)
  return c


def tiny_config(variant: str = None) -> ml_collections.ConfigDict:
  """The same model at test size: 12 bytes x 8 channels, 4 latents x 16, 3 classes."""
  c = default_config(variant)
  c.max_seq_len, c.num_classes = 12, 3
  c.input_adapter.num_channels = 8
  c.encoder = tiny_text_encoder_config()
  c.query_channels = 16
  return c


def build(config) -> PerceiverIO:
  """The PerceiverIO model `config` describes."""
  return classification_model(config, TextAdapter, vocab_size=config.vocab_size,
                              max_seq_len=config.max_seq_len)


def example_inputs(config, batch_size: int = 1):
  """PAD ids [batch_size, max_seq_len] (int32)."""
  return jnp.zeros((batch_size, config.max_seq_len), jnp.int32)
