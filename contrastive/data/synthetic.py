"""The built-in dataset: procedurally drawn shapes with compositional captions.

Every example is a pure function of `(seed, split, index)`: one to three objects, each a shape
(8), a colour (8) and a size (2), placed on a varied background (anti-aliased below 128 pixels:
see `_coverage`), and a caption that names every attribute and the layout ("a small red circle
on the left", "a large blue square above a small green triangle", "a small red star, a large
white ring and a small cyan cross from left to right"). Nothing is downloaded and nothing is
stored.

Layouts. One object: a position (`on the left`, `on the right`, `at the top`, `at the bottom`,
`in the middle`). Two objects: a relation of the first to the second (`above`, `below`, `to the
left of`, `to the right of`). Three objects: a row, listed in a direction (`from left to right`,
`from right to left`, `from top to bottom`, `from bottom to top`).

Meaning. `meaning_id` encodes the objects, attributes and layout after canonicalization ("A
below B" is "B above A"), so two random images with the same caption content share it; a
retrieval hit of the same meaning is a correct hit.

Held-out combinations. `heldout_pairs(k)` names `k` (colour, shape) pairs, each colour and each
shape at most once, that never occur in the `train` split, not even in its hard-negative
captions. The `test` split draws half its examples with at least one held-out object; its
`heldout` flag says which.

Hard negatives. Each caption comes with three compositional negatives, in the same template:
`attribute_swap` (colours, or else sizes, of two objects exchanged), `relation_swap` (the
relation or position reversed), `attribute_change` (one attribute of one object changed). A
negative that does not exist for an example (a swap with one object, a reversal of "in the
middle") is the empty string, with `hard_negative_valid` False.

Splits: `train`, `test`, and the labelled views `shape`, `colour` (one object each) and `count`
(one to three objects), for zero-shot classification; see `labelled_views()`.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import functools
import hashlib
import re
from typing import Any, Literal

import numpy as np

SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring", "star", "hexagon")
COLOURS = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "white")
SIZES = ("small", "large")
POSITIONS = ("on the left", "on the right", "at the top", "at the bottom", "in the middle")
RELATIONS = ("above", "below", "to the left of", "to the right of")
DIRECTIONS = (
  "from left to right",
  "from right to left",
  "from top to bottom",
  "from bottom to top",
)
HARD_NEGATIVE_KINDS = ("attribute_swap", "relation_swap", "attribute_change")
COUNT_NAMES = ("one", "two", "three")
SPLITS = ("train", "test", "shape", "colour", "count")

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
# Caption templates by number of objects; `{0}`, `{1}`, `{2}` are objects, `{r}` the layout.
_TEMPLATES = (
  ("a {0} {r}", "{r}, a {0}", "there is a {0} {r}", "a picture of a {0} {r}"),
  ("a {0} {r} a {1}", "there is a {0} {r} a {1}", "a picture of a {0} {r} a {1}"),
  (
    "a {0}, a {1} and a {2} {r}",
    "{r}: a {0}, a {1} and a {2}",
    "a row of shapes {r}: a {0}, a {1} and a {2}",
  ),
)
_N_OBJ = len(SHAPES) * len(COLOURS) * len(SIZES)  # codes of one object


@dataclasses.dataclass(frozen=True)
class Scene:
  """What an image shows, in caption order.

  Attributes:
    objects: `(shape, colour, size)` index triples, one to three.
    layout: index into `POSITIONS` (one object), `RELATIONS` (two) or `DIRECTIONS` (three).
  """

  objects: tuple[tuple[int, int, int], ...]
  layout: int


@dataclasses.dataclass(frozen=True)
class LabelledView:
  """A zero-shot classification task on the built-in dataset.

  Attributes:
    name: the split that holds its images (`"shape"`, `"colour"` or `"count"`); records carry
      the class index under `"label"`.
    class_names: the name of each class, in label order.
    templates: prompt templates with one `{}` for a class name.
  """

  name: str
  class_names: tuple[str, ...]
  templates: tuple[str, ...]

  def prompts(self) -> list[list[str]]:
    """`[num_classes][num_templates]` prompt strings."""
    return [[t.format(c) for t in self.templates] for c in self.class_names]


def labelled_views() -> dict[str, LabelledView]:
  """The zero-shot views `shape`, `colour` and `count`, by name.

  Shape and colour prompts are ensembles over the attributes a one-object caption always names
  with them (CLIP's prompt ensembling): every such caption says "a {size} {colour} {shape}
  {position}", so the bare "a circle" is out of distribution for the text tower, while the
  ensemble over every size, colour (or shape) and position marginalizes the other attributes
  out; score it with `evaluate.marginal_log_probs` (zero-shot `ensemble="marginal"`).
  """
  shape_templates = tuple(
    f"a {size} {colour} {{}} {position}"
    for size in SIZES
    for colour in COLOURS
    for position in POSITIONS
  )
  colour_templates = tuple(
    f"a {size} {{}} {shape} {position}"
    for size in SIZES
    for shape in SHAPES
    for position in POSITIONS
  )
  return {
    "shape": LabelledView("shape", SHAPES, shape_templates),
    "colour": LabelledView("colour", COLOURS, colour_templates),
    "count": LabelledView(
      "count",
      COUNT_NAMES,
      ("{} shapes", "a picture of {} shapes", "there are {} shapes", "{} objects"),
    ),
  }


def vocabulary() -> tuple[str, ...]:
  """Every word and punctuation mark of the captions and zero-shot prompts, sorted."""
  phrases = (
    SHAPES
    + COLOURS
    + SIZES
    + POSITIONS
    + RELATIONS
    + DIRECTIONS
    + COUNT_NAMES
    + sum(_TEMPLATES, ())
    + sum((v.templates for v in labelled_views().values()), ())
  )
  words = set()
  for phrase in phrases:
    words.update(re.findall(r"\w+|[^\w\s]", re.sub(r"\{\w*\}", " ", phrase.lower())))
  return tuple(sorted(words))


def heldout_pairs(num: int = 8) -> frozenset[tuple[int, int]]:
  """`num` (colour, shape) index pairs held out of training; each colour and shape at most once."""
  if not 0 <= num <= len(COLOURS):
    raise ValueError(f"num_heldout must be in [0, {len(COLOURS)}], got {num}.")
  return frozenset((c, (3 * c + 1) % len(SHAPES)) for c in range(num))


def object_phrase(obj: tuple[int, int, int]) -> str:
  shape, colour, size = obj
  return f"{SIZES[size]} {COLOURS[colour]} {SHAPES[shape]}"


def caption(scene: Scene, template: int = 0) -> str:
  """The caption of `scene` in template number `template` (taken modulo their number)."""
  n = len(scene.objects)
  layout = (POSITIONS, RELATIONS, DIRECTIONS)[n - 1][scene.layout]
  templates = _TEMPLATES[n - 1]
  return templates[template % len(templates)].format(
    *(object_phrase(o) for o in scene.objects), r=layout
  )


def _flip_layout(n: int, layout: int) -> int | None:
  """The reversed position, relation or direction; None for "in the middle"."""
  if n == 1:
    return {0: 1, 1: 0, 2: 3, 3: 2}.get(layout)
  return layout ^ 1  # above<->below, left<->right, and likewise for directions


def canonical(scene: Scene) -> Scene:
  """The same meaning with the relation `above`/`to the left of` (direction left/top first)."""
  if len(scene.objects) == 1 or scene.layout % 2 == 0:
    return scene
  return Scene(scene.objects[::-1], scene.layout ^ 1)


_NC, _NZ, _NP = len(COLOURS), len(SIZES), len(POSITIONS)


def meaning_id(scene: Scene) -> int:
  """An integer naming the scene's canonical meaning (objects, attributes and layout).

  One object: `[0, 640)`; two: the next `2 * 128**2`; three: the next `2 * 128**3` (below 2**23).
  """
  objects, layout = scene.objects, scene.layout
  n = len(objects)
  if n > 1 and layout % 2:  # canonical order: "A below B" is "B above A"
    objects, layout = objects[::-1], layout ^ 1
  codes = [(shape * _NC + colour) * _NZ + size for shape, colour, size in objects]
  if n == 1:
    return codes[0] * _NP + layout
  base = _N_OBJ * _NP
  if n == 2:
    return base + (codes[0] * 2 + layout // 2) * _N_OBJ + codes[1]
  base += 2 * _N_OBJ**2
  return base + ((codes[0] * _N_OBJ + codes[1]) * _N_OBJ + codes[2]) * 2 + layout // 2


def _has_heldout(objects, heldout) -> bool:
  if not heldout:
    return False
  return any((colour, shape) in heldout for shape, colour, _ in objects)


class _Draws:
  """Uniform draws taken from a generator in blocks (one numpy call instead of dozens)."""

  def __init__(self, rng: np.random.Generator, block: int = 64):
    self._rng, self._block = rng, block
    self._values = iter(())

  def uniform(self, lo: float = 0.0, hi: float = 1.0) -> float:
    try:
      u = next(self._values)
    except StopIteration:
      self._values = iter(self._rng.random(self._block).tolist())
      u = next(self._values)
    return lo + (hi - lo) * u

  def integer(self, n: int) -> int:
    return min(int(self.uniform() * n), n - 1)

  def weighted(self, cumulative: tuple[float, ...]) -> int:
    """An index drawn with probabilities given by `cumulative` (increasing, ending at 1)."""
    u = self.uniform()
    return next((k for k, c in enumerate(cumulative) if u < c), len(cumulative) - 1)


_ATTRIBUTE_SIZES = (len(SHAPES), len(COLOURS), len(SIZES))


def _replace(objects, i: int, attr: int, value: int):
  obj = list(objects[i])
  obj[attr] = value
  return objects[:i] + (tuple(obj),) + objects[i + 1 :]


def hard_negatives(
  scene: Scene, rng: np.random.Generator | _Draws, *, forbidden: frozenset = frozenset()
) -> tuple[Scene | None, Scene | None, Scene | None]:
  """The attribute-swap, relation-swap and attribute-change negatives of `scene`.

  Each is a scene of a different meaning, or None where none exists. No negative contains a
  (colour, shape) pair from `forbidden` (the held-out pairs, for the training split).
  """
  draws = rng if isinstance(rng, _Draws) else _Draws(rng)
  objs, layout = scene.objects, scene.layout
  n = len(objs)
  mid = meaning_id(scene)

  def ok(candidate: Scene) -> Scene | None:
    if _has_heldout(candidate.objects, forbidden) or meaning_id(candidate) == mid:
      return None
    return candidate

  # Attribute swap: colours of a random pair that differs in colour, else sizes.
  swap = None
  pairs = ((0, 1),) if n == 2 else ((0, 1), (0, 2), (1, 2)) if n == 3 else ()
  start = draws.integer(len(pairs)) if pairs else 0
  for attr in (1, 2):
    for k in range(len(pairs)):
      i, j = pairs[(start + k) % len(pairs)]
      if objs[i][attr] == objs[j][attr]:
        continue
      swapped = _replace(_replace(objs, i, attr, objs[j][attr]), j, attr, objs[i][attr])
      swap = ok(Scene(swapped, layout))
      if swap is not None:
        break
    if swap is not None:
      break

  flipped = _flip_layout(n, layout)
  relation = ok(Scene(objs, flipped)) if flipped is not None else None

  # Attribute change: random (object, attribute, new value) tries, then every option in turn.
  change = None
  for _ in range(8):
    i, attr = draws.integer(n), draws.integer(3)
    size = _ATTRIBUTE_SIZES[attr]
    value = (objs[i][attr] + 1 + draws.integer(size - 1)) % size
    change = ok(Scene(_replace(objs, i, attr, value), layout))
    if change is not None:
      break
  else:
    for i in range(n):
      for attr, size in enumerate(_ATTRIBUTE_SIZES):
        for value in range(size):
          if change is None and value != objs[i][attr]:
            change = ok(Scene(_replace(objs, i, attr, value), layout))
  return swap, relation, change


# ---------------------------------------------------------------------------------------------
# Drawing.


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
  """Pixel-centre coordinates in [0, 1], and each pixel's cell of a 4-cell split, for one size."""
  coords = (np.arange(size, dtype=np.float32) + 0.5) / size
  return coords, np.minimum(np.arange(size) * 4 // size, 3)


def _mask(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
  """Boolean mask of a unit shape; `u` `[1, w]`, `v` `[h, 1]` are offsets over the radius."""
  name = SHAPES[shape]
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


def _coverage(
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


def _background(draws: _Draws, rng: np.random.Generator, size: int) -> np.ndarray:
  """A muted two-colour gradient with plaid noise, channels first: float32 `[3, size, size]`.

  Gradient and noise are each a sum of a per-row and a per-column term, so the image is one
  broadcast addition. Values stay inside [18, 202]: no clipping needed.
  """
  coords, cell = _grid(size)
  draw = rng.random((2, 4), np.float32)  # grey level and three tints, for two colours
  base = 55.0 + 110.0 * draw[:, :1] + 44.0 * (draw[:, 1:] - 0.5)  # [2, 3]
  low, span = base[0][:, None], (base[1] - base[0])[:, None]
  angle = draws.uniform(0.0, 2 * np.pi)
  noise = (rng.random((2, 3, 4), np.float32) - 0.5) * 20.0
  rows = low + span * (np.float32(np.sin(angle)) * (coords - 0.5) + 0.5) + noise[0][:, cell]
  cols = span * (np.float32(np.cos(angle)) * (coords - 0.5)) + noise[1][:, cell]
  return rows[:, :, None] + cols[:, None, :]


def _clip(x: float, lo: float, hi: float) -> float:
  return min(max(x, lo), hi)


def _placements(scene: Scene, draws: _Draws) -> list[tuple[float, float, float]]:
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
  scene: Scene,
  rng: np.random.Generator | _Draws,
  image_size: int,
  *,
  noise_rng: np.random.Generator | None = None,
) -> np.ndarray:
  """Draws `scene`: uint8 `[image_size, image_size, 3]`."""
  draws = rng if isinstance(rng, _Draws) else _Draws(rng)
  noise_rng = noise_rng if noise_rng is not None else draws._rng  # pylint: disable=protected-access
  image = _background(draws, noise_rng, image_size)
  for (shape, colour, _), (cx, cy, r) in zip(scene.objects, _placements(scene, draws)):
    x0 = max(int((cx - r) * image_size), 0)
    x1 = min(int(np.ceil((cx + r) * image_size)) + 1, image_size)
    y0 = max(int((cy - r) * image_size), 0)
    y1 = min(int(np.ceil((cy + r) * image_size)) + 1, image_size)
    fill = np.clip(RGB[colour] + (noise_rng.random(3, np.float32) - 0.5) * 36.0, 0.0, 255.0)
    cover = _coverage(shape, x0, x1, y0, y1, cx, cy, r, image_size)
    patch = image[:, y0:y1, x0:x1]  # a view: blending it draws into `image`
    patch += cover * (fill[:, None, None] - patch)
  out = np.empty((image_size, image_size, 3), np.uint8)
  for c in range(3):  # channel by channel: faster than a transposed copy
    out[:, :, c] = image[c]
  return out


# ---------------------------------------------------------------------------------------------
# The source.


def _stream_key(seed: int, split: str) -> int:
  """A 64-bit key of `(seed, split)`, stable across processes (unlike the salted `hash()`)."""
  digest = hashlib.blake2b(f"contrastive.synthetic/{seed}/{split}".encode(), digest_size=8)
  return int.from_bytes(digest.digest(), "little")


class ShapesSource:
  """Random-access source of the built-in dataset (grain `RandomAccessDataSource` protocol).

  `source[i]` is a dict:
    image: uint8 `[image_size, image_size, 3]`.
    caption: str.
    meaning_id: int, the canonical meaning (see `meaning_id`).
    heldout: bool, whether an object is a held-out (colour, shape) pair.
    num_objects: int in 1..3.
    label: int, the class in the split's labelled view (`shape`, `colour`, `count` splits;
      -1 in `train` and `test`).
    hard_negative_captions: tuple of 3 str, in `HARD_NEGATIVE_KINDS` order ("" where none).
    hard_negative_valid: bool `[3]`.
    hard_negative_meaning_ids: int `[3]` (-1 where none).
    index: int, `i`.

  Args:
    split: one of `SPLITS`.
    num_examples: the length (the content does not depend on it).
    image_size: the side in pixels, 8 to 1024 (32 to 224 is the intended range).
    seed: the dataset seed; with `split` and the index it fixes every example.
    num_heldout: how many (colour, shape) pairs `heldout_pairs` holds out of `train`.
    min_objects, max_objects: the number of objects per image in `train` and `test`.
    object_weights: relative frequencies of `min_objects, ..., max_objects` objects per image
      in `train` and `test` (None: uniform). More one-object scenes give shape, which an object
      among others shows in few pixels, a larger share of what tells the captions apart.
    shape_variants: records come in groups of this many (1: no groups): record `k * g + m` is
      record `k * g`'s scene, drawn in the same place on the same background, with the shape of
      one object (the same for the whole group) changed to the `m`-th of a random order of
      other shapes: a contrast set. In one batch, each is the others' hardest negative in both
      modalities, told apart by a shape alone, which colour, size and layout cannot stand in
      for. Readers keep the groups together (the pipeline shuffles whole groups).
  """

  fields = (
    "image",
    "caption",
    "meaning_id",
    "heldout",
    "num_objects",
    "label",
    "hard_negative_captions",
    "hard_negative_valid",
    "hard_negative_meaning_ids",
    "index",
  )

  def __init__(
    self,
    *,
    split: Literal["train", "test", "shape", "colour", "count"],
    num_examples: int,
    image_size: int = 64,
    seed: int = 0,
    num_heldout: int = 8,
    min_objects: int = 1,
    max_objects: int = 3,
    object_weights: Sequence[float] | None = None,
    shape_variants: int = 1,
  ):
    if split not in SPLITS:
      raise ValueError(f"Unknown split {split!r} of the synthetic dataset; known: {SPLITS}.")
    if not 8 <= image_size <= 1024:
      raise ValueError(f"image_size must be in [8, 1024], got {image_size}.")
    if not 1 <= min_objects <= max_objects <= 3:
      raise ValueError(
        f"Need 1 <= min_objects <= max_objects <= 3, got {min_objects}, {max_objects}."
      )
    if num_examples < 1:
      raise ValueError(f"num_examples must be positive, got {num_examples}.")
    self._object_cdf = None
    if object_weights is not None:
      weights = np.asarray(object_weights, np.float64)
      counts = max_objects - min_objects + 1
      if weights.shape != (counts,) or not np.all(weights >= 0) or not weights.sum() > 0:
        raise ValueError(
          f"object_weights must be {counts} non-negative weights (one per count "
          f"{min_objects}..{max_objects}), not all zero; got {object_weights!r}."
        )
      self._object_cdf = tuple((np.cumsum(weights) / weights.sum()).tolist())
    if not 1 <= shape_variants <= len(SHAPES):
      raise ValueError(f"shape_variants must be in [1, {len(SHAPES)}], got {shape_variants}.")
    self.split = split
    self.num_examples = int(num_examples)
    self.image_size = int(image_size)
    self.seed = int(seed)
    self.num_heldout = int(num_heldout)
    self.min_objects, self.max_objects = int(min_objects), int(max_objects)
    self.shape_variants = int(shape_variants)
    self.heldout = heldout_pairs(num_heldout)
    colours_shapes = [(c, s) for c in range(len(COLOURS)) for s in range(len(SHAPES))]
    self._seen = [p for p in colours_shapes if p not in self.heldout]
    self._held = sorted(self.heldout)
    self._all = colours_shapes
    self._key = _stream_key(self.seed, split)

  def __len__(self) -> int:
    return self.num_examples

  def __repr__(self) -> str:
    return (
      f"ShapesSource(split={self.split!r}, num_examples={self.num_examples}, "
      f"image_size={self.image_size}, seed={self.seed}, num_heldout={self.num_heldout}, "
      f"objects={self.min_objects}..{self.max_objects}"
      f"{f', object_cdf={self._object_cdf}' if self._object_cdf else ''}"
      f"{f', shape_variants={self.shape_variants}' if self.shape_variants > 1 else ''})"
    )

  def _object(self, draws: _Draws, pool) -> tuple[int, int, int]:
    colour, shape = pool[draws.integer(len(pool))]
    return (shape, colour, draws.integer(len(SIZES)))

  def scene(self, rng: np.random.Generator | _Draws) -> tuple[Scene, int]:
    """Draws a scene of this split and its label (-1 outside the labelled views)."""
    draws = rng if isinstance(rng, _Draws) else _Draws(rng)
    split = self.split
    if split in ("shape", "colour"):
      obj = self._object(draws, self._all)
      scene = Scene((obj,), draws.integer(len(POSITIONS)))
      return scene, obj[0] if split == "shape" else obj[1]
    if split == "count":
      n = 1 + draws.integer(3)
    elif self._object_cdf is not None:
      n = self.min_objects + draws.weighted(self._object_cdf)
    else:
      n = self.min_objects + draws.integer(self.max_objects - self.min_objects + 1)
    layout = draws.integer((len(POSITIONS), len(RELATIONS), len(DIRECTIONS))[n - 1])
    if split == "count":
      return Scene(tuple(self._object(draws, self._all) for _ in range(n)), layout), n - 1
    pools = [self._seen] * n
    if split == "test" and self._held and draws.uniform() < 0.5:
      pools[draws.integer(n)] = self._held
    return Scene(tuple(self._object(draws, p) for p in pools), layout), -1

  def _draws(self, index: int) -> _Draws:
    # Philox takes its key directly (no SeedSequence hashing): one independent stream per
    # (seed, split, index).
    return _Draws(np.random.Generator(np.random.Philox(key=index + (self._key << 64))))

  def _variant(self, scene: Scene, label: int, first: int, member: int) -> tuple[Scene, int]:
    """Member `member` of the contrast set of record `first` (whose scene is `scene`)."""
    draws = self._draws(first + 1)  # one draw for the whole group
    forbidden = self.heldout if self.split == "train" else frozenset()
    i = draws.integer(len(scene.objects))
    shape, colour, _ = scene.objects[i]
    options = [s for s in range(len(SHAPES)) if s != shape and (colour, s) not in forbidden]
    order = sorted(options, key=lambda _: draws.uniform())
    new_shape = order[(member - 1) % len(order)]
    return (
      Scene(_replace(scene.objects, i, 0, new_shape), scene.layout),
      new_shape if self.split == "shape" else label,
    )

  def is_heldout(self, index: int) -> bool:
    """`self[index]["heldout"]`, without drawing the image or the captions."""
    index = int(index) % self.num_examples
    member = index % self.shape_variants
    scene, label = self.scene(self._draws(index - member))
    if member:
      scene, _ = self._variant(scene, label, index - member, member)
    return _has_heldout(scene.objects, self.heldout)

  def __getitem__(self, index: int) -> dict[str, Any]:
    index = int(index) % self.num_examples
    member = index % self.shape_variants
    # A variant replays the draws of its group's first record: it is rendered in the same place.
    draws = self._draws(index - member)
    scene, label = self.scene(draws)
    template = draws.integer(len(_TEMPLATES[len(scene.objects) - 1]))
    forbidden = self.heldout if self.split == "train" else frozenset()
    negatives = hard_negatives(scene, draws, forbidden=forbidden)
    if member:
      scene, label = self._variant(scene, label, index - member, member)
      negatives = hard_negatives(scene, self._draws(index), forbidden=forbidden)
    return {
      "image": render(scene, draws, self.image_size),
      "caption": caption(scene, template),
      "meaning_id": meaning_id(scene),
      "heldout": _has_heldout(scene.objects, self.heldout),
      "num_objects": len(scene.objects),
      "label": label,
      "hard_negative_captions": tuple("" if s is None else caption(s, template) for s in negatives),
      "hard_negative_valid": np.array([s is not None for s in negatives]),
      "hard_negative_meaning_ids": np.array(
        [-1 if s is None else meaning_id(s) for s in negatives], np.int32
      ),
      "index": index,
    }
