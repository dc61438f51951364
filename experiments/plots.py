"""PNG plots of a run: learning curves and where the latents look.

- `plot_learning_curves(records, path)`: loss and accuracy (and bits per byte for language
  models; end-point error instead of accuracy for optical flow)
  against step, train and eval, from metrics.jsonl records (`latest_records`: the last record of each split and step).
- `plot_attention_grid(images, maps, labels, predictions, path)`: one row per image: the
  image, then the attention maps of the latents that attend most sharply, overlaid (maps
  [n, latents, H, W] from `perceiver_jax.nn.attention_maps.cross_attention_maps`).
- `flow_to_rgb(flow [h, w, 2])`: the Middlebury colour coding of a flow (hue: direction,
  saturation: magnitude); `plot_flow_examples(frames, flows, predictions, path)`: frame pairs
  with their true and predicted flows in that coding.
Matplotlib renders off-screen (Agg).
"""

from typing import List, Mapping, Sequence

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top



def _save_unframed(figure, axes, path: str) -> str:
  """Writes `figure` to `path` (PNG) with every axis' frame and ticks hidden; returns path."""
  for axis in axes.ravel():
    axis.axis("off")
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)
  return path

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
  if any("epe" in r for r in records):  # Optical flow: end-point error instead of accuracy.
    metrics = ["loss", "epe"]
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
  return _save_unframed(figure, axes, path)


# The Middlebury colour wheel (Baker et al., "A Database and Evaluation Methodology for Optical
# Flow"): red-yellow-green-cyan-blue-magenta segments of these many hues.
WHEEL_SEGMENTS = ((15, (255, 0, 0), (255, 255, 0)), (6, (255, 255, 0), (0, 255, 0)),
                  (4, (0, 255, 0), (0, 255, 255)), (11, (0, 255, 255), (0, 0, 255)),
                  (13, (0, 0, 255), (255, 0, 255)), (6, (255, 0, 255), (255, 0, 0)))


def colour_wheel() -> np.ndarray:
  """The 55 hues of the Middlebury wheel, float [55, 3] in [0, 255] (floored like the
  reference code)."""
  hues = []
  for count, start, end in WHEEL_SEGMENTS:
    steps = np.arange(count)[:, None]
    start, end = np.array(start, np.float64), np.array(end, np.float64)
    hues.append(start + np.floor(255 * steps / count) * np.sign(end - start))
  return np.concatenate(hues)


def flow_to_rgb(flow, max_magnitude=None) -> np.ndarray:
  """flow [h, w, 2] (x, y) -> uint8 [h, w, 3] in the Middlebury coding: hue from the direction
  (right red, down yellow, left cyan-blue, up violet), saturation from the
  magnitude over `max_magnitude` (default: the flow's largest), white where still; longer
  vectors are darkened."""
  flow = np.asarray(flow, np.float64)
  u, v = flow[..., 0], flow[..., 1]
  radius = np.sqrt(u * u + v * v)
  scale = radius.max() if max_magnitude is None else float(max_magnitude)
  radius = radius / max(scale, 1e-12)
  wheel = colour_wheel() / 255.0
  position = (np.arctan2(-v, -u) / np.pi + 1) / 2 * (len(wheel) - 1)
  k0 = np.floor(position).astype(int)
  k1 = (k0 + 1) % len(wheel)
  fraction = (position - k0)[..., None]
  colour = (1 - fraction) * wheel[k0] + fraction * wheel[k1]
  inside = (radius <= 1)[..., None]
  colour = np.where(inside, 1 - radius[..., None] * (1 - colour), colour * 0.75)
  return np.floor(255 * colour).astype(np.uint8)


def plot_flow_examples(frames, flows, predictions, path: str) -> str:
  """One row per example: frames [n, 2, h, w, 3] in [-1, 1], the true flow [n, h, w, 2] and the
  predicted one (same colour scale, the row's end-point error in its title); returns path."""
  frames, flows, predictions = (np.asarray(x, np.float64) for x in (frames, flows, predictions))
  count = frames.shape[0]
  figure, axes = plt.subplots(count, 4, figsize=(8, 2 * count), squeeze=False)
  for row in range(count):
    largest = np.sqrt((flows[row] ** 2).sum(-1)).max()
    error = np.sqrt(((predictions[row] - flows[row]) ** 2).sum(-1)).mean()
    panels = [((frames[row, 0] + 1) / 2, "frame 1"), ((frames[row, 1] + 1) / 2, "frame 2"),
              (flow_to_rgb(flows[row], largest), f"true (max {largest:.1f} px)"),
              (flow_to_rgb(predictions[row], largest), f"predicted (EPE {error:.2f})")]
    for axis, (image, title) in zip(axes[row], panels):
      axis.imshow(np.clip(image, 0, 1) if image.dtype != np.uint8 else image)
      axis.set_title(title, fontsize=7)
  return _save_unframed(figure, axes, path)
