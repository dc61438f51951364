"""Non-neural baselines of the `synthetic_av` multimodal autoencoding run (experiments/learning).

On the evaluation view of the clips (the first num_frames frames, video in [0, 1], and their
audio in [-1, 1], as the `multimodal` data task's evaluation rows):
- mean predictor: every test clip reconstructed as the per-pixel / per-sample mean of the train
  clips; its image, audio and summed L1 (the objective's image_l1, audio_l1, reconstruction_l1);
- label accuracy of nearest centroid and of logistic regression on the raw video + audio values
  (standardised), and of always predicting the most frequent train label.
"""

from typing import Dict, Tuple

import numpy as np
from sklearn import linear_model, neighbors, preprocessing

from perceiver_jax.data import datasets  # pylint: disable=unused-import  (registers builders)
from perceiver_jax.data.tensorflow_cpu import tfds


def clips(name: str, split: str, num_frames: int, samples_per_frame: int,
          data_dir=None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(video float32 [n, T, H, W, 3] in [0, 1], audio float32 [n, T * spf] in [-1, 1], labels
  int [n]) of TFDS `name`'s split: the first T = num_frames frames of each clip (built offline
  when it is one of ours)."""
  builder = tfds.builder(name, data_dir=data_dir)
  builder.download_and_prepare()
  videos, audios, labels = [], [], []
  for example in tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)):
    videos.append(example["video"][:num_frames].astype(np.float32) / 255.0)
    audios.append(example["audio"][:num_frames * samples_per_frame].astype(np.float32) / 32768.0)
    labels.append(example["label"])
  return np.stack(videos), np.stack(audios), np.array(labels)


def av_baselines(train, test) -> Dict[str, float]:
  """The baselines (module docstring) of test clips given train clips, each (video, audio,
  labels) as `clips` returns them."""
  (train_video, train_audio, train_labels), (video, audio, labels) = train, test
  image_l1 = float(np.mean(np.abs(video - train_video.mean(0))))
  audio_l1 = float(np.mean(np.abs(audio - train_audio.mean(0))))
  raw = lambda v, a: np.concatenate([v.reshape(len(v), -1), a.reshape(len(a), -1)], 1)
  scaler = preprocessing.StandardScaler().fit(raw(train_video, train_audio))
  train_x, test_x = scaler.transform(raw(train_video, train_audio)), scaler.transform(raw(video,
                                                                                          audio))
  centroid = neighbors.NearestCentroid().fit(train_x, train_labels)
  logistic = linear_model.LogisticRegression(C=0.1, max_iter=300).fit(train_x, train_labels)
  majority = np.bincount(train_labels).argmax()
  return {"mean_image_l1": image_l1, "mean_audio_l1": audio_l1,
          "mean_reconstruction_l1": image_l1 + audio_l1,
          "nearest_centroid_accuracy": float(np.mean(centroid.predict(test_x) == labels)),
          "logistic_regression_accuracy": float(np.mean(logistic.predict(test_x) == labels)),
          "majority_accuracy": float(np.mean(labels == majority))}


def synthetic_av_baselines(name: str = "synthetic_av", num_frames: int = 4,
                           samples_per_frame: int = 128, data_dir=None) -> Dict[str, float]:
  """`av_baselines` of `name`'s test split given its train split."""
  return av_baselines(*(clips(name, split, num_frames, samples_per_frame, data_dir)
                        for split in ("train", "test")))
