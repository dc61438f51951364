"""Middlebury `.flo` optical-flow files (MPI-Sintel's format), read and written with numpy.

Layout (little-endian): float32 tag 202021.25 ('PIEH'), int32 width, int32 height, then the
flow float32 [height, width, 2], (x, y) displacement in pixels, row-major.
"""

import numpy as np

TAG = 202021.25


def decode_flo(data: bytes) -> np.ndarray:
  """A .flo file's bytes -> flow float32 [height, width, 2]; ValueError when malformed."""
  if len(data) < 12 or np.frombuffer(data[:4], "<f4")[0] != TAG:
    raise ValueError(f"not a .flo file: it must start with the float32 tag {TAG}.")
  width, height = (int(n) for n in np.frombuffer(data[4:12], "<i4"))
  expected = 12 + 4 * 2 * width * height
  if width < 1 or height < 1 or len(data) != expected:
    raise ValueError(f".flo file of {len(data)} bytes does not hold a {height}x{width} flow "
                     f"({expected} bytes).")
  return np.frombuffer(data[12:], "<f4").reshape(height, width, 2).astype(np.float32)


def encode_flo(flow: np.ndarray) -> bytes:
  """flow [height, width, 2] -> the bytes of its .flo file."""
  flow = np.asarray(flow)
  if flow.ndim != 3 or flow.shape[-1] != 2:
    raise ValueError(f"a flow is [height, width, 2], got shape {flow.shape}.")
  height, width = flow.shape[:2]
  return (np.array([TAG], "<f4").tobytes() + np.array([width, height], "<i4").tobytes()
          + flow.astype("<f4").tobytes())


def read_flo(path: str) -> np.ndarray:
  """The flow float32 [height, width, 2] in the .flo file at `path`."""
  with open(path, "rb") as f:
    return decode_flo(f.read())


def write_flo(path: str, flow: np.ndarray):
  """Writes flow [height, width, 2] to `path` as a .flo file."""
  with open(path, "wb") as f:
    f.write(encode_flo(flow))
