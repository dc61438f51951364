"""perceiver_jax: Perceiver, Perceiver IO and Perceiver AR in JAX/Flax linen.

  config = perceiver_jax.tasks.tiny_config("image_classification", "conv")  # Or a training
  model = perceiver_jax.build_model(config)                         # config (configs/*.py).
  perceiver_jax.param_count(config), perceiver_jax.flops(config)    # Analytic, no init.
  perceiver_jax.count_params(variables)                             # Of an initialised model.
  perceiver_jax.set_cpu_device_count()  # Before JAX starts: one CPU device per core.
  trainer = perceiver_jax.InMemoryTrainer(training_config)          # Train on numpy arrays.
"""

from perceiver_jax.nn.attention import AttentionConfig, dot_product_attention
from perceiver_jax.nn.decoder import (ClassificationDecoder, PerceiverDecoder, ProjectionDecoder,
                                      TrainableQuery)
from perceiver_jax.nn.encoder import PerceiverEncoder
from perceiver_jax.nn.layers import MLP, CrossAttentionLayer, SelfAttentionBlock, SelfAttentionLayer
from perceiver_jax.nn.model_stats import count_params
from perceiver_jax.nn.models import Perceiver, PerceiverIO
from perceiver_jax.nn.multi_head_attention import MultiHeadAttention
from perceiver_jax.nn.perceiver_layer import PerceiverLayer
from perceiver_jax.nn.position_encoding import (FourierPositionEncoding, RotaryPositionEmbedding,
                                                TrainablePositionEncoding, fourier_features)
from perceiver_jax.nn.sequence_perceiver import SequencePerceiver
from perceiver_jax.io.output_adapters import (AudioOutput, ClassificationOutput, EmbeddingOutput,
                                              FlowOutput, GridOutput, MultimodalOutput)
from perceiver_jax.io.output_queries import (FourierQuery, InputQuery, MultimodalQuery,
                                             TrainableGridQuery)
from perceiver_jax.tasks.from_config import build_model, flops, param_count
from perceiver_jax.convert.pretrained import load_pretrained
from perceiver_jax.train.cpu_device_count import set_cpu_device_count
from perceiver_jax.train.in_memory import InMemoryTrainer
