"""Classical optical-flow baselines on raw frame pairs, for the shown-to-learn runs.

- zero flow: the end-point error (EPE) of predicting no motion, i.e. the mean flow magnitude;
- global translation: one (x, y) shift per pair, the integer peak of the phase correlation of
  the grey frames refined to sub-pixel by Gauss-Newton (Lucas-Kanade) on the pixels that stay
  in view; its EPE is what a single best-fitting shift estimated from the frames achieves.
Frames are uint8 or float [h, w, 3]; flows float [h, w, 2] (x, y) of frame 1's pixels.
"""

from typing import Dict, Iterable, Tuple

import numpy as np
from scipy import ndimage


def end_point_error(flow, target) -> float:
  """Mean Euclidean distance between flow vectors [..., 2]."""
  delta = np.asarray(flow, np.float64) - np.asarray(target, np.float64)
  return float(np.mean(np.sqrt(np.sum(delta * delta, axis=-1))))


def phase_correlation_shift(grey1: np.ndarray, grey2: np.ndarray) -> np.ndarray:
  """The integer (x, y) shift t maximising the phase correlation, grey2(p + t) ~ grey1(p)."""
  spectrum = np.fft.fft2(grey2 - grey2.mean()) * np.conj(np.fft.fft2(grey1 - grey1.mean()))
  correlation = np.fft.ifft2(spectrum / (np.abs(spectrum) + 1e-9)).real
  peak = np.array(np.unravel_index(np.argmax(correlation), correlation.shape), np.float64)
  size = np.array(correlation.shape)
  peak = np.where(peak > size // 2, peak - size, peak)  # Wrap to negative shifts.
  return peak[::-1]


def global_translation(frame1, frame2, iterations: int = 10) -> np.ndarray:
  """The (x, y) shift t minimising sum_p (grey2(p + t) - grey1(p))^2 over the pixels p + t
  inside frame 2: phase correlation, then Gauss-Newton steps with bilinear sampling."""
  grey1 = np.asarray(frame1, np.float64).mean(-1)
  grey2 = np.asarray(frame2, np.float64).mean(-1)
  height, width = grey1.shape
  rows, cols = np.mgrid[:height, :width].astype(np.float64)
  grad_y, grad_x = np.gradient(grey2)
  shift = phase_correlation_shift(grey1, grey2)
  for _ in range(iterations):
    y, x = rows + shift[1], cols + shift[0]
    inside = (y >= 0) & (y <= height - 1) & (x >= 0) & (x <= width - 1)
    if inside.sum() < 3:
      break
    at = np.stack([y[inside], x[inside]])
    sample = lambda image: ndimage.map_coordinates(image, at, order=1)
    residual = sample(grey2) - grey1[inside]
    jacobian = np.stack([sample(grad_x), sample(grad_y)], axis=1)
    shift = shift - np.linalg.lstsq(jacobian, residual, rcond=None)[0]
  return shift


def flow_baselines(pairs: Iterable[Tuple[np.ndarray, np.ndarray, np.ndarray]]
                   ) -> Dict[str, float]:
  """Over (frame1, frame2, flow) pairs: the mean EPE of zero flow ('zero_flow_epe'), half of
  it ('half_zero_flow_epe', the shown-to-learn target) and the EPE of the estimated global
  translation ('global_translation_epe')."""
  zero, translation = [], []
  for frame1, frame2, flow in pairs:
    zero.append(end_point_error(np.zeros_like(flow), flow))
    shift = global_translation(frame1, frame2)
    translation.append(end_point_error(np.broadcast_to(shift, flow.shape), flow))
  if not zero:
    raise ValueError("flow_baselines needs at least one (frame1, frame2, flow) pair.")
  return {"zero_flow_epe": float(np.mean(zero)), "half_zero_flow_epe": float(np.mean(zero)) / 2,
          "global_translation_epe": float(np.mean(translation))}
