"""Compositional hard negatives of a scene of the built-in dataset.

Each caption comes with three negatives, in the same template: `attribute_swap` (colours, or
else sizes, of two objects exchanged), `relation_swap` (the relation or position reversed),
`attribute_change` (one attribute of one object changed). A negative that does not exist for a
scene (a swap with one object, a reversal of "in the middle") is None.
"""

from __future__ import annotations

import numpy as np

from contrastive.data.shapes import draws as draws_lib
from contrastive.data.shapes import scenes

HARD_NEGATIVE_KINDS = ("attribute_swap", "relation_swap", "attribute_change")


def _flip_layout(n: int, layout: int) -> int | None:
  """The reversed position, relation or direction; None for "in the middle"."""
  if n == 1:
    return {0: 1, 1: 0, 2: 3, 3: 2}.get(layout)
  return layout ^ 1  # above<->below, left<->right, and likewise for directions


def hard_negatives(
  scene: scenes.Scene,
  rng: np.random.Generator | draws_lib.Draws,
  *,
  forbidden: frozenset = frozenset(),
) -> tuple[scenes.Scene | None, scenes.Scene | None, scenes.Scene | None]:
  """The attribute-swap, relation-swap and attribute-change negatives of `scene`.

  Each is a scene of a different meaning, or None where none exists. No negative contains a
  (colour, shape) pair from `forbidden` (the held-out pairs, for the training split).
  """
  draws = draws_lib.as_draws(rng)
  objs, layout = scene.objects, scene.layout
  n = len(objs)
  mid = scenes.meaning_id(scene)

  def ok(candidate: scenes.Scene) -> scenes.Scene | None:
    if scenes.has_heldout(candidate.objects, forbidden) or scenes.meaning_id(candidate) == mid:
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
      swapped = scenes.with_attribute(
        scenes.with_attribute(objs, i, attr, objs[j][attr]), j, attr, objs[i][attr]
      )
      swap = ok(scenes.Scene(swapped, layout))
      if swap is not None:
        break
    if swap is not None:
      break

  flipped = _flip_layout(n, layout)
  relation = ok(scenes.Scene(objs, flipped)) if flipped is not None else None

  # Attribute change: random (object, attribute, new value) tries, then every option in turn.
  change = None
  for _ in range(8):
    i, attr = draws.integer(n), draws.integer(3)
    size = scenes.ATTRIBUTE_SIZES[attr]
    value = (objs[i][attr] + 1 + draws.integer(size - 1)) % size
    change = ok(scenes.Scene(scenes.with_attribute(objs, i, attr, value), layout))
    if change is not None:
      break
  else:
    for i in range(n):
      for attr, size in enumerate(scenes.ATTRIBUTE_SIZES):
        for value in range(size):
          if change is None and value != objs[i][attr]:
            change = ok(scenes.Scene(scenes.with_attribute(objs, i, attr, value), layout))
  return swap, relation, change
