"""transformers PerceiverForMultimodalAutoencoding -> the `multimodal_autoencoding` task model.

transformers' model (inputs {'image': [b, T, 3, H, W], 'audio': [b, S, 1], 'label': [b, L]})
is ours with inputs {'image': [b, T, H, W, 3], 'audio': [b, S, 1], 'label': [b, L]}: 1x4x4
video patches ((t, dy, dx, rgb) order) + 32-band Fourier features at max_resolution
(num_frames, image_size, image_size) - config.json's `image_size` is the patch grid's
resolution, the video itself is output_shape[2:] - audio patches of samples_per_patch + 192
bands, the one-hot label; padding 4 and a mask token per modality (the label always masked);
Fourier video/audio queries and a learned label query, padding 2; one decoder cross-attention
(1 head) to output_num_channels; per-modality Linear postprocessors. transformers decodes the
video and audio only through `subsampled_output_points`, placing point i of n at -1 + 2 i / n,
so our queries use grid_positions='cell_start'. Its image logits are [b, points, 3]; ours are
[b, T, H, W, 3] when decoded in full, [b, points, 3] when subsampled.
"""

from perceiver_jax import tasks
from perceiver_jax.convert.weights import WeightReader, decoder_settings, encoder_settings

# Hard-coded in transformers' PerceiverForMultimodalAutoencoding.__init__.
PATCH_SIZE = 4
IMAGE_BANDS, AUDIO_BANDS = 32, 192
INPUT_PADDING, QUERY_PADDING = 4, 2
MASK_PROBS = {"image": 0.0, "audio": 0.0, "label": 1.0}
MODALITIES = ("audio", "image", "label")
PREPROCESSOR = "perceiver.input_preprocessor"
POSTPROCESSOR = "perceiver.output_postprocessor.modalities"
DECODER = "perceiver.decoder"


def _positive_int(config: dict, field: str) -> int:
  value = config.get(field)
  if not isinstance(value, int) or isinstance(value, bool) or value < 1:
    raise ValueError(f"config.json {field}={value!r} must be a positive int for the multimodal "
                     "autoencoder.")
  return value


def _video_size(config: dict, num_frames: int) -> int:
  """The (square) frame size of config.json's output_shape [batch, T, H, W]."""
  shape = config.get("output_shape")
  if not isinstance(shape, (list, tuple)) or len(shape) != 4:
    raise ValueError(f"config.json output_shape={shape!r} must be [batch, frames, height, "
                     "width] for the multimodal autoencoder.")
  if shape[1] != num_frames:
    raise ValueError(f"config.json output_shape={list(shape)} decodes {shape[1]} frames but "
                     f"num_frames={num_frames}; perceiver_jax reconstructs the input's frames, "
                     "so they must be equal.")
  if shape[2] != shape[3] or not isinstance(shape[2], int) or shape[2] % PATCH_SIZE:
    raise ValueError(f"config.json output_shape={list(shape)} needs square frames whose size is "
                     f"a multiple of the {PATCH_SIZE}x{PATCH_SIZE} patches.")
  return shape[2]


def convert_multimodal_autoencoding(config: dict, weights: WeightReader):
  """(multimodal_autoencoding task config, {'params': ...}) of the checkpoint."""
  num_frames = _positive_int(config, "num_frames")
  grid_size = _positive_int(config, "image_size")
  samples_per_frame = _positive_int(config, "audio_samples_per_frame")
  samples_per_patch = _positive_int(config, "samples_per_patch")
  if num_frames * samples_per_frame % samples_per_patch:
    raise ValueError(f"config.json num_frames * audio_samples_per_frame = "
                     f"{num_frames * samples_per_frame} must be a multiple of samples_per_patch="
                     f"{samples_per_patch}: transformers would drop the remainder.")
  size = _video_size(config, num_frames)
  query = f"{DECODER}.decoder.decoding_cross_attention"
  cfg = tasks.default_config("multimodal_autoencoding")
  cfg.num_frames, cfg.image_size, cfg.patch_size = num_frames, size, PATCH_SIZE
  cfg.audio_samples_per_frame, cfg.samples_per_patch = samples_per_frame, samples_per_patch
  cfg.num_classes = weights.shape(f"{POSTPROCESSOR}.label.classifier.bias")[0]
  cfg.image_num_frequency_bands, cfg.audio_num_frequency_bands = IMAGE_BANDS, AUDIO_BANDS
  cfg.image_max_resolution = (num_frames, grid_size, grid_size)
  cfg.query_grid_positions = "cell_start"
  cfg.input_min_padding_size, cfg.query_min_padding_size = INPUT_PADDING, QUERY_PADDING
  cfg.mask_probs = dict(MASK_PROBS)
  label_query = f"{DECODER}.modalities.label.decoder.output_position_encodings"
  cfg.label_query_channels = weights.shape(f"{label_query}.position_embeddings")[-1]
  cfg.output_num_channels = weights.shape(f"{DECODER}.decoder.final_layer.bias")[0]
  cfg.encoder = encoder_settings(config, weights)
  cfg.decoder = decoder_settings(config, weights, query, num_heads=1, use_query_residual=False)
  input_adapter = {}
  for m in MODALITIES:
    input_adapter[f"{m}_padding"] = weights.take(f"{PREPROCESSOR}.padding.{m}")[0]
    input_adapter[f"{m}_mask_token"] = weights.take(f"{PREPROCESSOR}.mask.{m}")[0]
  output_query = {f"{m}_padding": weights.take(f"{DECODER}.padding.{m}")[0] for m in MODALITIES}
  output_query["queries_label"] = {
      "queries": {"embeddings": weights.take(f"{label_query}.position_embeddings")}}
  params = {
      "input_adapter": input_adapter,
      "encoder": weights.encoder(config),
      "output_query": output_query,
      "decoder": weights.decoder(query, 1, f"{DECODER}.decoder.final_layer"),
      "output_adapter": {f"adapters_{m}": {"projection": weights.dense(
          f"{POSTPROCESSOR}.{m}.classifier")} for m in MODALITIES}}
  return cfg, {"params": params}


CONVERTERS = {"PerceiverForMultimodalAutoencoding": convert_multimodal_autoencoding}
