"""PNG plots of a run: learning curves and where the latents look.

- `plot_learning_curves(records, path)`: loss and accuracy (and bits per byte for language
  models) against step, train and eval, from metrics.jsonl records (`latest_records`: the last record of each split and step).
- `plot_attention_grid(images, maps, labels, predictions, path)`: one row per image: the
  image, then the attention maps of the latents that attend most sharply, overlaid (maps
  [n, latents, H, W] from `perceiver_jax.nn.attention_maps.cross_attention_maps`).
Matplotlib renders off-screen (Agg).
"""

from typing import List, Mapping, Sequence

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top


def latest_records(records: Sequence[Mapping]) -> List[Mapping]:
  """The last record of each (split, step), by step: a step written again (replayed after a
  resume, evaluated twice) counts once, with its newest values."""
  latest = {(r["split"], r["step"]): r for r in records}
  return sorted(latest.values(), key=lambda r: r["step"])


def plot_learning_curves(records: Sequence[Mapping], path: str) -> str:
  """Loss and accuracy curves (train and eval) from metrics.jsonl records, and bits per byte
  when the records have it (language models); returns path."""
  records = latest_records(records)
  metrics = ["loss", "accuracy"] + (["bits_per_byte"] if any(
      "bits_per_byte" in r for r in records) else [])
  figure, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4))
  for split, style in (("train", "-"), ("eval", "o-")):
    rows = [r for r in records if r["split"] == split]
    steps = [r["step"] for r in rows]
    for axis, metric in zip(axes, metrics):
      values = [r.get(metric) for r in rows]
      if rows and all(v is not None for v in values):
        axis.plot(steps, values, style, label=split)
  for axis, metric in zip(axes, metrics):
    axis.set_xlabel("step")
    axis.set_ylabel(metric)
    axis.grid(alpha=0.3)
    axis.legend()
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)
  return path


def plot_attention_grid(images, maps, labels, predictions, path: str,
                        latents_shown: int = 4) -> str:
  """Images [n, H, W, c] with the sharpest `latents_shown` latents' maps [n, L, H, W]."""
  images, maps = np.asarray(images), np.asarray(maps)
  count = images.shape[0]
  figure, axes = plt.subplots(count, latents_shown + 1,
                              figsize=(1.6 * (latents_shown + 1), 1.6 * count), squeeze=False)
  for row in range(count):
    image = images[row, ..., 0] if images.shape[-1] == 1 else images[row]
    axes[row, 0].imshow(image, cmap="gray")
    axes[row, 0].set_title(f"label {labels[row]} / pred {predictions[row]}", fontsize=7)
    sharpness = maps[row].reshape(maps.shape[1], -1).max(axis=-1)
    for column, latent in enumerate(np.argsort(-sharpness)[:latents_shown], start=1):
      axes[row, column].imshow(image, cmap="gray")
      axes[row, column].imshow(maps[row, latent], cmap="magma", alpha=0.6)
      axes[row, column].set_title(f"latent {latent}", fontsize=7)
  for axis in axes.ravel():
    axis.axis("off")
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)
  return path
