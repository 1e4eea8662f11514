"""Drawing a scene of the built-in dataset: uint8 `[image_size, image_size, 3]`.

Objects are placed as their layout says (left of, above, in a row, ...) with a little jitter,
filled with a noisy version of their colour and blended onto a muted gradient with plaid noise.
Below 128 pixels edges are anti-aliased: each edge pixel holds the share of it the shape covers
(`coverage`).
"""

from __future__ import annotations

import functools

import numpy as np

from contrastive.data.shapes import draws as draws_lib
from contrastive.data.shapes import scenes

RGB = np.array(
  [
    (220, 40, 40),
    (245, 140, 20),
    (240, 225, 40),
    (40, 170, 60),
    (40, 205, 225),
    (40, 70, 225),
    (145, 60, 205),
    (248, 248, 248),
  ],
  np.float32,
)

# Radius as a fraction of the image side, by number of objects and size: as large as the layouts
# allow, because at 32 pixels a small hexagon of radius 3 pixels is a circle.
_RADIUS = ((0.16, 0.26), (0.13, 0.2), (0.1, 0.15))


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
  """Pixel-centre coordinates in [0, 1], and each pixel's cell of a 4-cell split, for one size."""
  coords = (np.arange(size, dtype=np.float32) + 0.5) / size
  return coords, np.minimum(np.arange(size) * 4 // size, 3)


def _mask(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
  """Boolean mask of a unit shape; `u` `[1, w]`, `v` `[h, 1]` are offsets over the radius."""
  name = scenes.SHAPES[shape]
  if name == "circle":
    return u * u + v * v <= 1.0
  if name == "square":
    return np.maximum(np.abs(u), np.abs(v)) <= 0.82
  if name == "triangle":  # apex up (image y grows downward)
    return (v <= 0.72) & (np.abs(u) <= (v + 0.98) * 0.58)
  if name == "diamond":
    return np.abs(u) + np.abs(v) <= 1.0
  if name == "cross":
    au, av = np.abs(u), np.abs(v)
    return ((au <= 0.3) & (av <= 0.95)) | ((av <= 0.3) & (au <= 0.95))
  if name == "ring":
    r2 = u * u + v * v
    return (r2 <= 1.0) & (r2 >= 0.36)
  if name == "star":
    angle = np.arctan2(v, u) + np.pi / 2
    radius = 0.45 + 0.55 * np.abs(np.cos(2.5 * angle)) ** 3
    return u * u + v * v <= radius * radius
  if name == "hexagon":
    au, av = np.abs(u), np.abs(v)
    return (av <= 0.87) & (1.732 * au + av <= 1.732)
  raise ValueError(f"unknown shape index {shape}")


def coverage(
  shape: int, x0: int, x1: int, y0: int, y1: int, cx: float, cy: float, r: float, image_size: int
) -> np.ndarray:
  """The share of each pixel of `[y0:y1, x0:x1]` that the shape covers: float32 `[h, w]`.

  Sampled on a k x k grid per pixel, k = 128 // image_size (4 at 32 pixels, at most 4; 1, a hard
  edge, from 128 pixels on): drawn with hard edges, a circle and a hexagon of radius 5 pixels
  differ in two or three pixels that move with the sub-pixel position.
  """
  k = min(max(128 // image_size, 1), 4)

  def offsets(lo, hi, centre):
    sub = (np.arange(lo * k, hi * k, dtype=np.float32) + 0.5) / (k * image_size)
    return (sub - centre) / r

  inside = _mask(shape, offsets(x0, x1, cx)[None, :], offsets(y0, y1, cy)[:, None])
  return inside.reshape(y1 - y0, k, x1 - x0, k).mean((1, 3), dtype=np.float32)


def _background(draws: draws_lib.Draws, size: int) -> np.ndarray:
  """A muted two-colour gradient with plaid noise, channels first: float32 `[3, size, size]`.

  Gradient and noise are each a sum of a per-row and a per-column term, so the image is one
  broadcast addition. Values stay inside [18, 202]: no clipping needed.
  """
  coords, cell = _grid(size)
  draw = draws.uniform_array((2, 4))  # grey level and three tints, for two colours
  base = 55.0 + 110.0 * draw[:, :1] + 44.0 * (draw[:, 1:] - 0.5)  # [2, 3]
  low, span = base[0][:, None], (base[1] - base[0])[:, None]
  angle = draws.uniform(0.0, 2 * np.pi)
  noise = (draws.uniform_array((2, 3, 4)) - 0.5) * 20.0
  rows = low + span * (np.float32(np.sin(angle)) * (coords - 0.5) + 0.5) + noise[0][:, cell]
  cols = span * (np.float32(np.cos(angle)) * (coords - 0.5)) + noise[1][:, cell]
  return rows[:, :, None] + cols[:, None, :]


def _clip(x: float, lo: float, hi: float) -> float:
  return min(max(x, lo), hi)


def _placements(scene: scenes.Scene, draws: draws_lib.Draws) -> list[tuple[float, float, float]]:
  """`(cx, cy, radius)` per object, in fractions of the image side."""
  n = len(scene.objects)
  radii = [_RADIUS[n - 1][o[2]] * draws.uniform(0.92, 1.08) for o in scene.objects]
  if n == 1:
    (xlo, xhi), (ylo, yhi) = {
      0: ((0.17, 0.3), (0.35, 0.65)),
      1: ((0.7, 0.83), (0.35, 0.65)),
      2: ((0.35, 0.65), (0.17, 0.3)),
      3: ((0.35, 0.65), (0.7, 0.83)),
      4: ((0.43, 0.57), (0.43, 0.57)),
    }[scene.layout]
    r = radii[0]
    return [
      (
        _clip(draws.uniform(xlo, xhi), r + 0.01, 1 - r - 0.01),
        _clip(draws.uniform(ylo, yhi), r + 0.01, 1 - r - 0.01),
        r,
      )
    ]
  if n == 2:
    vertical = scene.layout in (0, 1)
    forward = scene.layout in (0, 2)  # above / left of: object 0 has the smaller coordinate
    order = radii if forward else radii[::-1]
    gap = order[0] + order[1] + 0.03 + draws.uniform(0.0, 0.15)
    start = draws.uniform(order[0] + 0.01, max(order[0] + 0.01, 0.99 - order[1] - gap))
    along = [start, start + gap]
  else:
    vertical = scene.layout in (2, 3)
    forward = scene.layout in (0, 2)
    order = radii if forward else radii[::-1]
    step = max(order[0] + order[1], order[1] + order[2]) + 0.02
    step = draws.uniform(step, max(step, (0.98 - order[0] - order[2]) / 2))
    start = draws.uniform(order[0] + 0.01, max(order[0] + 0.01, 0.99 - order[2] - 2 * step))
    along = [start, start + step, start + 2 * step]
  if not forward:
    along = along[::-1]
  centre = draws.uniform(0.3, 0.7)
  out = []
  for a, r in zip(along, radii):
    across = _clip(centre + draws.uniform(-0.07, 0.07), r + 0.01, 1 - r - 0.01)
    out.append((across, a, r) if vertical else (a, across, r))
  return out


def render(
  scene: scenes.Scene, rng: np.random.Generator | draws_lib.Draws, image_size: int
) -> np.ndarray:
  """Draws `scene`: uint8 `[image_size, image_size, 3]`."""
  draws = draws_lib.as_draws(rng)
  image = _background(draws, image_size)
  for (shape, colour, _), (cx, cy, r) in zip(scene.objects, _placements(scene, draws)):
    x0 = max(int((cx - r) * image_size), 0)
    x1 = min(int(np.ceil((cx + r) * image_size)) + 1, image_size)
    y0 = max(int((cy - r) * image_size), 0)
    y1 = min(int(np.ceil((cy + r) * image_size)) + 1, image_size)
    fill = np.clip(RGB[colour] + (draws.uniform_array(3) - 0.5) * 36.0, 0.0, 255.0)
    cover = coverage(shape, x0, x1, y0, y1, cx, cy, r, image_size)
    patch = image[:, y0:y1, x0:x1]  # a view: blending it draws into `image`
    patch += cover * (fill[:, None, None] - patch)
  out = np.empty((image_size, image_size, 3), np.uint8)
  for c in range(3):  # channel by channel: faster than a transposed copy
    out[:, :, c] = image[c]
  return out
