"""Hard negatives of the built-in dataset: compositional, same template, flagged when absent."""

import numpy as np

from contrastive.data import shapes
from contrastive.data.shapes import negatives


def test_hard_negatives_are_compositional():
  red_circle, blue_square = (0, 0, 0), (1, 5, 1)
  scene = shapes.Scene((red_circle, blue_square), shapes.RELATIONS.index("above"))
  swap, rel, change = negatives.hard_negatives(scene, np.random.default_rng(0))
  assert shapes.caption(scene) == "a small red circle above a large blue square"
  assert shapes.caption(swap) == "a small blue circle above a large red square"
  assert shapes.caption(rel) == "a small red circle below a large blue square"
  words, changed = shapes.caption(scene).split(), shapes.caption(change).split()
  assert len(words) == len(changed) and sum(x != y for x, y in zip(words, changed)) == 1
  for neg in (swap, rel, change):
    assert shapes.meaning_id(neg) != shapes.meaning_id(scene)
  # One object: no swap; "in the middle" has no reversal; left <-> right.
  single = shapes.Scene((red_circle,), shapes.POSITIONS.index("in the middle"))
  swap, rel, change = negatives.hard_negatives(single, np.random.default_rng(0))
  assert swap is None and rel is None and change is not None
  left = shapes.Scene((red_circle,), shapes.POSITIONS.index("on the left"))
  assert shapes.caption(negatives.hard_negatives(left, np.random.default_rng(0))[1]).endswith(
    "on the right"
  )
  # Same colours: the swap exchanges sizes; identical objects: no swap at all.
  same = shapes.Scene(((0, 0, 0), (1, 0, 1)), 0)
  assert (
    shapes.caption(negatives.hard_negatives(same, np.random.default_rng(0))[0])
    == "a large red circle above a small red square"
  )
  twins = shapes.Scene(((0, 0, 0), (1, 0, 0)), 0)
  assert negatives.hard_negatives(twins, np.random.default_rng(0))[0] is None
  # Records: negatives use the same template; invalid ones are empty and flagged.
  src = shapes.ShapesSource(split="test", num_examples=100, image_size=8)
  for i in range(50):
    r = src[i]
    for text, valid, mid in zip(
      r["hard_negative_captions"], r["hard_negative_valid"], r["hard_negative_meaning_ids"]
    ):
      assert valid == bool(text) and (mid >= 0) == valid
      if valid:
        assert text != r["caption"] and mid != r["meaning_id"]
        assert len(text.split()) == len(r["caption"].split())
