"""transformers PerceiverForOpticalFlow -> the perceiver_jax `optical_flow` task model.

transformers takes 3x3 patches of both frames, channels-first [b, 2, 27, H, W] (27 ordered
(dy, dx, rgb)), joins the frames to 54 features per pixel (frame-major), applies a Linear(54,
64) and concatenates 64-band Fourier features with max_resolution = train_size; those
preprocessed inputs are the decoder queries (1 head, no query residual), whose Linear(., 2)
output is divided by 100 -> flow [b, H, W, 2]. Our FlowAdapter extracts the same patches in the
same (frame, dy, dx, rgb) order from frame pairs [b, 2, H, W, 3], so the weights carry over
unchanged and the model's outputs are transformers' logits.
"""

from perceiver_jax import tasks
from perceiver_jax.convert.weights import WeightReader, decoder_settings, encoder_settings

# Hard-coded in transformers' PerceiverForOpticalFlow.__init__.
NUM_FREQUENCY_BANDS = 64
NUM_PATCH_FEATURES = 54  # 2 frames x 3 x 3 pixels x 3 colours.
PREPROCESSOR = "perceiver.input_preprocessor"
DECODER = "perceiver.decoder.decoder"


def train_size(config: dict) -> tuple:
  """config.json's `train_size` (H, W): the frame size the checkpoint decodes."""
  size = config.get("train_size")
  if (not isinstance(size, (list, tuple)) or len(size) != 2
      or not all(isinstance(n, int) and n > 0 for n in size)):
    raise ValueError(f"config.json train_size={size!r} must be two positive ints [H, W]: the "
                     "optical-flow head decodes frames of exactly that size.")
  return tuple(size)


def convert_optical_flow(config: dict, weights: WeightReader):
  """(optical_flow task config, {'params': ...}) of a PerceiverForOpticalFlow checkpoint."""
  size = train_size(config)
  patches = weights.dense(f"{PREPROCESSOR}.conv_after_patches")
  if patches["kernel"].shape[0] != NUM_PATCH_FEATURES:
    raise ValueError(f"{PREPROCESSOR}.conv_after_patches takes {patches['kernel'].shape[0]} "
                     f"features; optical flow needs {NUM_PATCH_FEATURES} (2 frames x 3x3x3).")
  query = f"{DECODER}.decoding_cross_attention"
  cfg = tasks.default_config("optical_flow")
  cfg.image_size = size
  cfg.input_adapter = dict(out_channels=patches["kernel"].shape[1],
                           num_frequency_bands=NUM_FREQUENCY_BANDS, max_resolution=size)
  cfg.encoder = encoder_settings(config, weights)
  cfg.decoder = decoder_settings(config, weights, query, num_heads=1, use_query_residual=False)
  params = {"input_adapter": {"patches_linear": patches},
            "encoder": weights.encoder(config),
            "decoder": weights.decoder(query, 1, f"{DECODER}.final_layer")}
  return cfg, {"params": params}


CONVERTERS = {"PerceiverForOpticalFlow": convert_optical_flow}
