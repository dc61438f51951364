"""Perceiver IO multimodal autoencoding of video, audio and label (Kinetics-700).

inputs {'image': video [b, T, H, W, 3], 'audio': samples [b, S, 1], 'label': [b, classes]} ->
MultimodalAdapter (VideoAdapter 1x4x4 patches + 3-D Fourier features; AudioAdapter 16-sample
patches + 1-D Fourier features; OneHotAdapter; padded to common channels; the label replaced
by a learned mask token with probability mask_probs['label']) -> PerceiverEncoder ->
MultimodalQuery (Fourier queries for every pixel and every audio patch, one learned label
query; padded to common channels) -> PerceiverDecoder(output_channels=512) -> MultimodalOutput
-> {'image': [b, T, H, W, 3], 'audio': [b, S], 'label': [b, classes]}.

The full video has T*H*W queries (802,816 at 16x224x224), so decode in chunks or in training
pass `subsampled_points={'image': [k] pixel indices, 'audio': [k'] patch indices}`; the image
and audio outputs are then [b, k, 3] and [b, k' * samples_per_patch].
`train.losses.multimodal_autoencoding_loss` is the paper's weighted L1 + cross-entropy.

Paper model (Perceiver IO App. I; sizes as the official code): 16 frames of 224x224, audio
48 kHz with 1920 samples per frame (30,720) in patches of 16, 700 classes; video Fourier 32
bands at max resolution (16, 56, 56), audio 192 bands at 30,720; encoder padding 4, decoder
padding 2; 784 latents x 512, 8 self-attention layers (8 heads), one cross-attend (1 head);
label query 1024 channels; decoder output 512 channels; loss weights video 0.03, audio 1,
label 1e-4. `image_max_resolution` (None: the patch grid) sets the video Fourier features'
max_resolution; `query_grid_positions` is FourierQuery.grid_positions of the video and audio
queries ('cell_start' reproduces the official decoder's subsampled query positions). The
released model masks the label always (mask_probs label 1.0); the paper trains with it masked
half of the time (set config.mask_probs.label = 0.5 and pass a 'masking' rng).
"""

import jax.numpy as jnp
import ml_collections
import numpy as np

from perceiver_jax.io.adapters import AudioAdapter, MultimodalAdapter, OneHotAdapter, VideoAdapter
from perceiver_jax.nn.decoder import PerceiverDecoder, TrainableQuery
from perceiver_jax.nn.encoder import PerceiverEncoder
from perceiver_jax.nn.models import PerceiverIO
from perceiver_jax.io.output_adapters import (AudioOutput, ClassificationOutput, GridOutput,
                                              MultimodalOutput)
from perceiver_jax.io.output_queries import FourierQuery, MultimodalQuery
from perceiver_jax.tasks.building import dtypes, make, task_config

TASK = "multimodal_autoencoding"
VARIANTS = ("kinetics700",)


def default_config(variant: str = None) -> ml_collections.ConfigDict:
  """The paper's Kinetics-700 autoencoder."""
  c = task_config(TASK, VARIANTS, variant)
  c.num_frames, c.image_size, c.patch_size = 16, 224, 4
  c.audio_samples_per_frame, c.samples_per_patch = 1920, 16
  c.num_classes = 700
  c.image_num_frequency_bands, c.audio_num_frequency_bands = 32, 192
  c.image_max_resolution = None  # (T, H', W') of the Fourier features; None: the patch grid.
  c.query_grid_positions = "linspace"
  c.input_min_padding_size, c.query_min_padding_size = 4, 2
  c.mask_probs = dict(image=0.0, audio=0.0, label=1.0)
  c.label_query_channels = 1024
  c.output_num_channels = 512
  c.encoder = dict(
      num_latents=784, num_latent_channels=512, num_cross_attention_layers=1,
      num_self_attention_blocks=1, num_self_attention_layers_per_block=8,
      num_cross_attention_heads=1, num_self_attention_heads=8,
      cross_attention_widening_factor=1, self_attention_widening_factor=1,
      use_query_residual=True, dropout_rate=0.0, attention=dict(dropout_rate=0.0))
  c.decoder = dict(num_heads=1, widening_factor=1, use_query_residual=False)
  c.loss_weights = dict(image=0.03, audio=1.0, label=1e-4)
  return c


def tiny_config(variant: str = None) -> ml_collections.ConfigDict:
  """The same model at test size: 2 frames of 8x8, 2 x 8 audio samples, 5 classes."""
  c = default_config(variant)
  c.num_frames, c.image_size, c.patch_size = 2, 8, 4
  c.audio_samples_per_frame, c.samples_per_patch = 8, 4
  c.num_classes = 5
  c.image_num_frequency_bands, c.audio_num_frequency_bands = 2, 3
  c.label_query_channels, c.output_num_channels = 12, 10
  c.encoder.update(num_latents=4, num_latent_channels=16, num_self_attention_layers_per_block=2,
                   num_self_attention_heads=2)
  return c


def _sizes(config):
  frames, size = config.num_frames, config.image_size
  if size % config.patch_size:
    raise ValueError(f"config.image_size={size} must be a multiple of "
                     f"config.patch_size={config.patch_size}.")
  samples = frames * config.audio_samples_per_frame
  if samples % config.samples_per_patch:
    raise ValueError(f"num_frames * audio_samples_per_frame = {samples} must be a multiple of "
                     f"config.samples_per_patch={config.samples_per_patch}.")
  return (frames, size, size), samples, samples // config.samples_per_patch


def build(config) -> PerceiverIO:
  """The PerceiverIO model `config` describes."""
  video_dims, samples, audio_patches = _sizes(config)
  kinds = dtypes(config)
  grid = (video_dims[0], video_dims[1] // config.patch_size, video_dims[2] // config.patch_size)
  if config.image_max_resolution is not None:
    grid = tuple(config.image_max_resolution)
  positions = config.query_grid_positions
  bands_image, bands_audio = config.image_num_frequency_bands, config.audio_num_frequency_bands
  input_adapter = MultimodalAdapter(
      adapters={
          "image": VideoAdapter(temporal_downsample=1, spatial_downsample=config.patch_size,
                                num_frequency_bands=bands_image, max_resolution=grid, **kinds),
          "audio": AudioAdapter(samples_per_patch=config.samples_per_patch,
                                num_frequency_bands=bands_audio, max_resolution=samples, **kinds),
          "label": OneHotAdapter(**kinds)},
      min_padding_size=config.input_min_padding_size, mask_probs=config.mask_probs.to_dict(),
      **kinds)
  output_query = MultimodalQuery(
      queries={
          "image": FourierQuery(video_dims, bands_image, grid, grid_positions=positions,
                                dtype=kinds["dtype"]),
          "audio": FourierQuery((audio_patches,), bands_audio, (samples,),
                                grid_positions=positions, dtype=kinds["dtype"]),
          "label": TrainableQuery(1, config.label_query_channels, **kinds)},
      min_padding_size=config.query_min_padding_size, **kinds)
  output_adapter = MultimodalOutput(
      adapters={
          "image": GridOutput(video_dims, num_output_channels=3, **kinds),
          "audio": AudioOutput(config.samples_per_patch, **kinds),
          "label": ClassificationOutput(config.num_classes, **kinds)},
      num_outputs={"image": int(np.prod(video_dims)), "audio": audio_patches, "label": 1})
  return PerceiverIO(
      encoder=make(PerceiverEncoder, config.encoder, "config.encoder", config),
      output_query=output_query,
      decoder=make(PerceiverDecoder, config.decoder, "config.decoder", config,
                   output_channels=config.output_num_channels),
      input_adapter=input_adapter, output_adapter=output_adapter)


def example_inputs(config, batch_size: int = 1):
  """Zero video [b, T, H, W, 3], audio [b, S, 1] and label [b, classes]."""
  video_dims, samples, _ = _sizes(config)
  return {"image": jnp.zeros((batch_size,) + video_dims + (3,), jnp.float32),
          "audio": jnp.zeros((batch_size, samples, 1), jnp.float32),
          "label": jnp.zeros((batch_size, config.num_classes), jnp.float32)}

