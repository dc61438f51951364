"""transformers' ImageNet Perceiver heads -> the perceiver_jax `image_classification` task.

PerceiverForImageClassificationFourier / ...Learned / ...ConvProcessing -> variants 'fourier',
'learned', 'conv': images [batch, H, W, C] (transformers takes pixel_values [batch, C, H, W])
-> logits [batch, num_labels]. Every width is read off the weights, so any size converts;
config.image_shape is config.json's image_size (which only the 'learned' head is tied to).
What the heads hard-code in their `__init__` rather than config.json:
- 'fourier': raw pixels + Fourier features (64 bands, max resolution 224) of any image size;
- 'learned': 1x1 conv, learned positions [image_size**2, c] projected by a Linear, concatenated;
- 'conv': 7x7/2 conv (zero-padded 3 each side) + BatchNorm (running statistics ->
  'batch_stats') + ReLU + unpadded 3x3/2 max-pool (224 -> 55), then Fourier features (64 bands,
  max resolution 56);
- all: one trainable decoder query [1, d_latents], one decoder head, query residual (the
  'learned' head too, unlike DeepMind's), exact GELU (config.json `hidden_act`).
"""

from perceiver_jax import tasks
from perceiver_jax.convert.weights import WeightReader, decoder_settings, encoder_settings
from perceiver_jax.nn.position_encoding import fourier_num_channels

_PREPROCESSOR = "perceiver.input_preprocessor"
_DECODER = "perceiver.decoder.decoder"
_NUM_BANDS = 64  # Both Fourier heads; max resolutions below.
_MAX_RESOLUTION = {"fourier": (224, 224), "conv": (56, 56)}


def _fourier_adapter(hf_config, reader):
  """(input_adapter settings, params, batch_stats, image channels) of the Fourier head."""
  del hf_config  # The head's settings are fixed in its __init__.
  input_width = reader.shape("perceiver.encoder.cross_attention.attention.self.key.weight")[1]
  channels = input_width - fourier_num_channels(2, _NUM_BANDS)
  if channels < 1:
    raise ValueError(f"the encoder's cross-attention takes {input_width} input channels, fewer "
                     f"than the {fourier_num_channels(2, _NUM_BANDS)} Fourier feature channels "
                     "PerceiverForImageClassificationFourier adds; the checkpoint is not one.")
  settings = dict(prep_type="pixels", spatial_downsample=1, position_encoding="fourier",
                  num_frequency_bands=_NUM_BANDS, max_resolution=_MAX_RESOLUTION["fourier"])
  return settings, {}, {}, channels


def _learned_adapter(hf_config, reader):
  """(input_adapter settings, params, batch_stats, image channels) of the learned head."""
  conv = reader.take(f"{_PREPROCESSOR}.convnet_1x1.weight")  # [out, in, 1, 1]
  params = {"conv1x1": {"kernel": conv.transpose(2, 3, 1, 0),
                        "bias": reader.take(f"{_PREPROCESSOR}.convnet_1x1.bias")}}
  positions = reader.take(f"{_PREPROCESSOR}.position_embeddings.position_embeddings")
  size = hf_config["image_size"]
  if positions.shape[0] != size * size:
    raise ValueError(f"config.json image_size={size} does not fit the {positions.shape[0]} "
                     f"learned positions (image_size**2); set image_size to the checkpoint's.")
  params["position_encoding"] = {"embeddings": positions}
  settings = dict(prep_type="conv1x1", spatial_downsample=1, out_channels=conv.shape[0],
                  position_encoding="trainable", num_position_channels=positions.shape[1],
                  project_pos_dim=None)
  if reader.has(f"{_PREPROCESSOR}.positions_projection.weight"):
    params["position_projection"] = reader.dense(f"{_PREPROCESSOR}.positions_projection")
    settings["project_pos_dim"] = params["position_projection"]["bias"].shape[0]
  return settings, params, {}, conv.shape[1]


def _conv_adapter(hf_config, reader):
  """(input_adapter settings, params, batch_stats, image channels) of the conv head."""
  del hf_config  # The head's settings are fixed in its __init__.
  conv = reader.take(f"{_PREPROCESSOR}.convnet.conv.weight")  # [out, in, 7, 7]
  norm = f"{_PREPROCESSOR}.convnet.batchnorm"
  params = {"conv": {"kernel": conv.transpose(2, 3, 1, 0)},
            "batch_norm": {"scale": reader.take(f"{norm}.weight"),
                           "bias": reader.take(f"{norm}.bias")}}
  batch_stats = {"batch_norm": {"mean": reader.take(f"{norm}.running_mean"),
                                "var": reader.take(f"{norm}.running_var")}}
  reader.take(f"{norm}.num_batches_tracked")  # A step count; BatchNorm with momentum ignores it.
  settings = dict(prep_type="conv", spatial_downsample=4, out_channels=conv.shape[0],
                  stem_padding="transformers", position_encoding="fourier",
                  num_frequency_bands=_NUM_BANDS, max_resolution=_MAX_RESOLUTION["conv"])
  return settings, params, batch_stats, conv.shape[1]


_ADAPTERS = {"fourier": _fourier_adapter, "learned": _learned_adapter, "conv": _conv_adapter}


def _converter(variant: str):
  """The converter of the transformers head of `variant`; see the module docstring."""

  def convert(hf_config: dict, reader: WeightReader):
    config = tasks.default_config("image_classification", variant)
    settings, adapter_params, adapter_stats, channels = _ADAPTERS[variant](hf_config, reader)
    size = hf_config["image_size"]
    config.image_shape = (size, size, int(channels))
    config.input_adapter = settings
    config.encoder = encoder_settings(hf_config, reader)
    config.decoder = decoder_settings(hf_config, reader, f"{_DECODER}.decoding_cross_attention",
                                      num_heads=1, use_query_residual=True)
    query = reader.take(f"{_DECODER}.output_position_encodings.position_embeddings")
    config.query_channels = query.shape[1]
    decoder = reader.decoder(f"{_DECODER}.decoding_cross_attention", 1,
                             final_layer=f"{_DECODER}.final_layer")
    config.num_classes = decoder["output"]["bias"].shape[0]
    params = {"encoder": reader.encoder(hf_config),
              "output_query": {"queries": {"embeddings": query}},
              "decoder": decoder}
    if adapter_params:
      params["input_adapter"] = adapter_params
    variables = {"params": params}
    if adapter_stats:
      variables["batch_stats"] = {"input_adapter": adapter_stats}
    return config, variables

  return convert


CONVERTERS = {"PerceiverForImageClassificationFourier": _converter("fourier"),
              "PerceiverForImageClassificationLearned": _converter("learned"),
              "PerceiverForImageClassificationConvProcessing": _converter("conv")}
