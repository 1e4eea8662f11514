"""Scenes of the built-in dataset: meanings are canonical and injective."""

import numpy as np

from contrastive.data import shapes
from contrastive.data.shapes import scenes


def test_meaning_id_is_canonical_and_injective():
  a, b = (0, 1, 1), (2, 3, 0)
  above = scenes.Scene((a, b), scenes.RELATIONS.index("above"))
  below = scenes.Scene((b, a), scenes.RELATIONS.index("below"))
  assert scenes.meaning_id(above) == scenes.meaning_id(below)
  assert scenes.meaning_id(above) != scenes.meaning_id(
    scenes.Scene((b, a), scenes.RELATIONS.index("above"))
  )
  row = scenes.Scene((a, b, (4, 4, 1)), scenes.DIRECTIONS.index("from left to right"))
  rev = scenes.Scene(((4, 4, 1), b, a), scenes.DIRECTIONS.index("from right to left"))
  assert scenes.meaning_id(row) == scenes.meaning_id(rev)
  # Injective over distinct canonical scenes (a sample of them).
  rng = np.random.default_rng(0)
  seen = {}
  for _ in range(3000):
    n = int(rng.integers(1, 4))
    objs = tuple(
      (int(rng.integers(8)), int(rng.integers(8)), int(rng.integers(2))) for _ in range(n)
    )
    scene = scenes.canonical(scenes.Scene(objs, int(rng.integers(5 if n == 1 else 4))))
    mid = scenes.meaning_id(scene)
    assert 0 <= mid < 2**31
    assert seen.setdefault(mid, scene) == scene
  # Many random images share a meaning (one-object scenes have 640 meanings).
  src = shapes.ShapesSource(split="shape", num_examples=5000, image_size=8)
  ids = [src[i]["meaning_id"] for i in range(1000)]
  assert len(set(ids)) < 640
