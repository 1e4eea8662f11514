"""Evaluation as a run config says: `synthetic_subset` keeps only the records it names."""

from contrastive.data import shapes
from contrastive.evaluate import configured


def test_synthetic_subset_keeps_the_first_records_of_one_heldout_flag():
  held = configured.synthetic_subset(split="shape", num_examples=20, image_size=16)
  seen = configured.synthetic_subset(split="shape", num_examples=20, image_size=16, heldout=False)
  assert len(held.source) == len(seen.source) == 20
  assert all(held.source[i]["heldout"] for i in range(20))
  assert not any(seen.source[i]["heldout"] for i in range(20))
  assert tuple(held.class_names) == shapes.SHAPES
  full = shapes.ShapesSource(split="shape", num_examples=10**6, image_size=16)
  first = [i for i in range(400) if full[i]["heldout"]][:20]
  assert [held.source[i]["index"] for i in range(20)] == first
