"""What an image of the built-in dataset shows, and what its caption means.

A `Scene` is one to three objects, each a (shape, colour, size) index triple, and a layout: for
one object a position (`POSITIONS`), for two the relation of the first to the second
(`RELATIONS`), for three the direction a row is listed in (`DIRECTIONS`).

Meaning. `meaning_id` encodes the objects, attributes and layout after canonicalization ("A
below B" is "B above A"), so two random images with the same caption content share it; a
retrieval hit of the same meaning is a correct hit.

Held-out combinations. `heldout_pairs(k)` names `k` (colour, shape) pairs, each colour and each
shape at most once, that the `train` split never shows.
"""

from __future__ import annotations

import dataclasses

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

# An object is `(shape, colour, size)`; these are the number of values of each, in that order.
ATTRIBUTE_SIZES = (len(SHAPES), len(COLOURS), len(SIZES))
_N_OBJ = len(SHAPES) * len(COLOURS) * len(SIZES)  # codes of one object
_NC, _NZ, _NP = len(COLOURS), len(SIZES), len(POSITIONS)


@dataclasses.dataclass(frozen=True)
class Scene:
  """What an image shows, in caption order.

  Attributes:
    objects: `(shape, colour, size)` index triples, one to three.
    layout: index into `POSITIONS` (one object), `RELATIONS` (two) or `DIRECTIONS` (three).
  """

  objects: tuple[tuple[int, int, int], ...]
  layout: int


def with_attribute(
  objects: tuple[tuple[int, int, int], ...], i: int, attr: int, value: int
) -> tuple[tuple[int, int, int], ...]:
  """`objects` with attribute `attr` (0 shape, 1 colour, 2 size) of object `i` set to `value`."""
  obj = list(objects[i])
  obj[attr] = value
  return objects[:i] + (tuple(obj),) + objects[i + 1 :]


def canonical(scene: Scene) -> Scene:
  """The same meaning with the relation `above`/`to the left of` (direction left/top first)."""
  if len(scene.objects) == 1 or scene.layout % 2 == 0:
    return scene
  return Scene(scene.objects[::-1], scene.layout ^ 1)


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


def heldout_pairs(num: int = 8) -> frozenset[tuple[int, int]]:
  """`num` (colour, shape) index pairs held out of training; each colour and shape at most once."""
  if not 0 <= num <= len(COLOURS):
    raise ValueError(f"num_heldout must be in [0, {len(COLOURS)}], got {num}.")
  return frozenset((c, (3 * c + 1) % len(SHAPES)) for c in range(num))


def has_heldout(
  objects: tuple[tuple[int, int, int], ...], heldout: frozenset[tuple[int, int]]
) -> bool:
  """Whether an object's (colour, shape) pair is in `heldout`."""
  if not heldout:
    return False
  return any((colour, shape) in heldout for shape, colour, _ in objects)
