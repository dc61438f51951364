"""Audio classification on raw waveforms (AudioSet), the Perceiver paper's setting as Perceiver IO.

samples [batch, S] or [batch, S, 1] -> AudioAdapter (patches of 128 samples + 1-D Fourier
features of the patch index) -> PerceiverEncoder -> one TrainableQuery ->
PerceiverDecoder(output_channels=num_classes) -> ClassificationOutput -> logits [batch, 527],
trained with `optax.sigmoid_binary_cross_entropy` (multi-label) and scored by mAP.

Paper (Perceiver, ICML 2021, Sec. 4.2): 48 kHz audio, 32-frame clips (1.28 s) = 61,440
samples in 480 patches of 128; the ImageNet architecture (512 latents x 1024, cross-attend 1
head, self-attention 8 heads) with 2 cross-attends and 8 self-attention layers per block and
no weight sharing; 100 epochs; 38.3 mAP on raw audio (43.5 with video). The paper gives no
Fourier settings for audio: 64 bands at the patch grid's resolution here (Perceiver IO's
setting). 527 AudioSet classes.
"""

import jax.numpy as jnp
import ml_collections

from perceiver_jax.io.adapters import AudioAdapter
from perceiver_jax.nn.models import PerceiverIO
from perceiver_jax.tasks.building import classification_model, imagenet_encoder, task_config

TASK = "audio_classification"
VARIANTS = ("audioset",)


def default_config(variant: str = None) -> ml_collections.ConfigDict:
  """The paper's raw-audio AudioSet model."""
  c = task_config(TASK, VARIANTS, variant)
  c.num_samples = 61440
  c.num_classes = 527
  c.input_adapter = dict(samples_per_patch=128, num_frequency_bands=64)
  # Two cross-attends and two blocks: the first of each unshared, the second its own (shared
  # only with itself), so no weights are shared.
  c.encoder = imagenet_encoder(num_cross_attention_layers=2, num_self_attention_blocks=2,
                               num_self_attention_layers_per_block=8)
  c.query_channels = 1024
  c.decoder = dict(num_heads=1, widening_factor=1, use_query_residual=True)
  return c


def tiny_config(variant: str = None) -> ml_collections.ConfigDict:
  """The same model at test size: 64 samples in patches of 8, 6 classes, 4 latents x 16."""
  c = default_config(variant)
  c.num_samples, c.num_classes = 64, 6
  c.input_adapter.update(samples_per_patch=8, num_frequency_bands=3)
  c.encoder.update(num_latents=4, num_latent_channels=16, num_self_attention_layers_per_block=1,
                   num_self_attention_heads=2)
  c.query_channels = 12
  return c


def build(config) -> PerceiverIO:
  """The PerceiverIO model `config` describes."""
  return classification_model(config, AudioAdapter)


def example_inputs(config, batch_size: int = 1):
  """Zero audio [batch_size, num_samples]."""
  return jnp.zeros((batch_size, config.num_samples), jnp.float32)
