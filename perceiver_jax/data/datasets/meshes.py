"""Triangle meshes for the point-cloud builders: OFF parsing and area-weighted surface sampling.

- `parse_off(text)` -> (vertices float64 [V, 3], faces int64 [F, 3]): the OFF format (header
  'OFF', then 'V F E' counts, V vertex lines 'x y z', F face lines 'n i1 ... in'); polygons are
  split into triangle fans; '#' comments and blank lines are skipped; a header glued to the
  counts ('OFF490 518 0', as in some ModelNet files) is accepted.
- `sample_surface(vertices, faces, num_points, rng)` -> (points float32 [num_points, 3],
  normals float32 [num_points, 3]): points uniform on the surface (a face drawn with
  probability proportional to its area, then a uniform point of the triangle), each with its
  face's unit normal.
"""

from typing import Tuple

import numpy as np


def parse_off(text) -> Tuple[np.ndarray, np.ndarray]:
  """(vertices float64 [V, 3], faces int64 [F, 3]) of an OFF mesh given as str or bytes."""
  if isinstance(text, bytes):
    text = text.decode("ascii")
  lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
  lines = [line for line in lines if line]
  if not lines or not lines[0].startswith("OFF"):
    raise ValueError("Not an OFF mesh: the first line must start with 'OFF'.")
  counts = lines[0][3:].split()  # The counts, when glued to the header.
  body = lines[1:]
  if not counts:
    counts, body = body[0].split(), body[1:]
  num_vertices, num_faces = int(counts[0]), int(counts[1])
  if len(body) < num_vertices + num_faces:
    raise ValueError(f"OFF mesh declares {num_vertices} vertices and {num_faces} faces but has "
                     f"{len(body)} data lines.")
  vertex_values = np.array(" ".join(body[:num_vertices]).split(), np.float64)
  vertices = vertex_values.reshape(num_vertices, -1)[:, :3]
  face_lines = body[num_vertices:num_vertices + num_faces]
  values = np.array(" ".join(face_lines).split(), np.int64)
  if values.size == 4 * num_faces and np.all(values[::4] == 3):  # All triangles: fast path.
    faces = values.reshape(num_faces, 4)[:, 1:]
  else:
    triangles = []
    for line in face_lines:
      polygon = [int(v) for v in line.split()]
      corners = polygon[1:1 + polygon[0]]
      triangles.extend((corners[0], corners[k], corners[k + 1])
                       for k in range(1, len(corners) - 1))
    faces = np.array(triangles, np.int64).reshape(-1, 3)
  if faces.size and (faces.min() < 0 or faces.max() >= num_vertices):
    raise ValueError(f"OFF mesh faces index vertices outside [0, {num_vertices}).")
  return vertices, faces


def sample_surface(vertices: np.ndarray, faces: np.ndarray, num_points: int,
                   rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
  """(points, normals), float32 [num_points, 3] each, sampled uniformly on the mesh surface."""
  corners = np.asarray(vertices, np.float64)[np.asarray(faces)]  # [F, 3 corners, 3]
  cross = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
  doubled_areas = np.linalg.norm(cross, axis=-1)
  total = doubled_areas.sum()
  if not total > 0:
    raise ValueError("The mesh has no surface (every face has zero area).")
  chosen = rng.choice(len(faces), size=num_points, p=doubled_areas / total)
  u, v = rng.random(num_points), rng.random(num_points)
  flip = u + v > 1  # Reflect the far half of the parallelogram into the triangle.
  u, v = np.where(flip, 1 - u, u), np.where(flip, 1 - v, v)
  a, b, c = corners[chosen, 0], corners[chosen, 1], corners[chosen, 2]
  points = a + u[:, None] * (b - a) + v[:, None] * (c - a)
  normals = cross[chosen] / doubled_areas[chosen, None]
  return points.astype(np.float32), normals.astype(np.float32)
