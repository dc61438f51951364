"""Task adapters for PerceiverIO: input adapters map raw inputs to [batch, index, channels]."""

from perceiver_jax.io.adapters.audio import AudioAdapter
from perceiver_jax.io.adapters.point_cloud import PointCloudAdapter
from perceiver_jax.io.adapters.text import TextAdapter
from perceiver_jax.io.adapters.flow import FlowAdapter, extract_patches_3x3
from perceiver_jax.io.adapters.image import ImageAdapter, space_to_depth
from perceiver_jax.io.adapters.video import VideoAdapter
from perceiver_jax.io.adapters.multimodal import MultimodalAdapter, split_modalities
from perceiver_jax.io.adapters.one_hot import OneHotAdapter
