"""Video + audio clip ops of the `multimodal` data task (TF, stateless seeded randomness).

A clip is video frames uint8 [F, H, W, 3] and audio samples [S] or [S, 1] (int16, or float in
[-1, 1]) recorded at `samples_per_frame` audio samples per video frame. `temporal_crop` cuts
`num_frames` frames and the audio span they cover; `scale_video` maps uint8 to [0, 1],
`scale_audio` int16 to [-1, 1]; `central_square_resize` and `random_flip` act on every frame.
"""

from perceiver_jax.data.tensorflow_cpu import tf


def temporal_crop(video, audio, num_frames: int, samples_per_frame: int, seed=None):
  """(video [F, H, W, C], audio [S, ...]) -> (video [T, H, W, C], audio [T * spf, ...]).

  Frames [t, t + T) and audio samples [t * spf, (t + T) * spf), spf = samples_per_frame; t is
  uniform in [0, F - T] drawn from the stateless `seed` (int64 [2]), or 0 without one. A clip
  of fewer than T frames raises an InvalidArgumentError; audio shorter than the span is
  zero-padded (audio tracks are often a few samples short of the video).
  """
  frames = tf.shape(video)[0]
  check = tf.debugging.assert_greater_equal(
      frames, num_frames, message=f"a clip has fewer frames than num_frames={num_frames}")
  with tf.control_dependencies([check]):
    start = tf.zeros([], tf.int32)
    if seed is not None:
      start = tf.random.stateless_uniform([], seed, 0, frames - num_frames + 1, tf.int32)
  video = video[start:start + num_frames]
  length = num_frames * samples_per_frame
  audio = audio[start * samples_per_frame:start * samples_per_frame + length]
  missing = length - tf.shape(audio)[0]
  audio = tf.pad(audio, [[0, missing]] + [[0, 0]] * (audio.shape.rank - 1))
  return video, tf.ensure_shape(audio, [length] + audio.shape[1:])


def scale_video(video):
  """uint8 frames -> float32 in [0, 1]."""
  return tf.cast(video, tf.float32) / 255.0


def scale_audio(audio):
  """Samples [S] or [S, 1] -> float32 [S, 1] in [-1, 1]: int16 / 32768, floats clipped."""
  if audio.dtype == tf.int16:
    audio = tf.cast(audio, tf.float32) / 32768.0
  else:
    audio = tf.clip_by_value(tf.cast(audio, tf.float32), -1.0, 1.0)
  return tf.reshape(audio, [-1, 1])


def central_square_resize(video, size: int):
  """Frames [T, H, W, C] -> [T, size, size, C] float32: the central square of each, resized
  (bilinear, antialiased)."""
  shape = tf.shape(video)
  side = tf.minimum(shape[1], shape[2])
  square = video[:, (shape[1] - side) // 2:(shape[1] - side) // 2 + side,
                 (shape[2] - side) // 2:(shape[2] - side) // 2 + side]
  return tf.image.resize(tf.cast(square, tf.float32), (size, size), antialias=True)


def random_flip(video, seed):
  """Frames [T, H, W, C] all mirrored left-right with probability 1/2 (stateless `seed`)."""
  flip = tf.random.stateless_uniform([], seed) < 0.5
  return tf.cond(flip, lambda: tf.reverse(video, [2]), lambda: video)


def make_preprocess(builder, config, train: bool):
  """fn(record, seed) -> {'image': float32 [T, H, W, 3] in [0, 1], 'audio': float32 [T * spf, 1]
  in [-1, 1], 'label': int32, 'mask': 1.0} from `config.multimodal` (data_config.py):
  a random temporal crop and optional flip in training, the first frames in evaluation."""
  del builder  # The records carry everything.
  settings = config.multimodal
  num_frames, samples_per_frame = settings.num_frames, settings.audio_samples_per_frame

  def preprocess(record, seed):
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    video, audio = temporal_crop(record[settings.video_feature], record[settings.audio_feature],
                                 num_frames, samples_per_frame, crop_seed if train else None)
    if settings.image_size is not None:
      video = central_square_resize(video, settings.image_size)
    if train and settings.flip:
      video = random_flip(video, flip_seed)
    return {"image": scale_video(video), "audio": scale_audio(audio),
            "label": tf.cast(record[config.label_feature], tf.int32), "mask": tf.constant(1.0)}

  return preprocess
