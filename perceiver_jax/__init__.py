"""perceiver_jax: Perceiver, Perceiver IO and Perceiver AR in JAX/Flax linen."""

from perceiver_jax.attention import dot_product_attention
from perceiver_jax.decoder import ClassificationDecoder, PerceiverDecoder, ProjectionDecoder, TrainableQuery
from perceiver_jax.encoder import PerceiverEncoder
from perceiver_jax.layers import MLP, CrossAttentionLayer, SelfAttentionBlock, SelfAttentionLayer
from perceiver_jax.models import Perceiver, PerceiverIO
from perceiver_jax.multi_head_attention import MultiHeadAttention
from perceiver_jax.position_encoding import (FourierPositionEncoding, RotaryPositionEmbedding,
                                             TrainablePositionEncoding, fourier_features)
from perceiver_jax.output_adapters import (AudioOutput, ClassificationOutput, EmbeddingOutput,
                                           FlowOutput, GridOutput, MultimodalOutput)
from perceiver_jax.output_queries import FourierQuery, InputQuery, MultimodalQuery, TrainableGridQuery
from perceiver_jax.pretrained import load_pretrained
