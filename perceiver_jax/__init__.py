"""perceiver_jax: Perceiver, Perceiver IO and Perceiver AR in JAX/Flax linen."""

from perceiver_jax.nn.attention import AttentionConfig, dot_product_attention
from perceiver_jax.nn.decoder import (ClassificationDecoder, PerceiverDecoder, ProjectionDecoder,
                                      TrainableQuery)
from perceiver_jax.nn.encoder import PerceiverEncoder
from perceiver_jax.nn.layers import MLP, CrossAttentionLayer, SelfAttentionBlock, SelfAttentionLayer
from perceiver_jax.nn.models import Perceiver, PerceiverIO
from perceiver_jax.nn.multi_head_attention import MultiHeadAttention
from perceiver_jax.nn.position_encoding import (FourierPositionEncoding, RotaryPositionEmbedding,
                                                TrainablePositionEncoding, fourier_features)
from perceiver_jax.io.output_adapters import (AudioOutput, ClassificationOutput, EmbeddingOutput,
                                              FlowOutput, GridOutput, MultimodalOutput)
from perceiver_jax.io.output_queries import (FourierQuery, InputQuery, MultimodalQuery,
                                             TrainableGridQuery)
from perceiver_jax.convert.pretrained import load_pretrained
