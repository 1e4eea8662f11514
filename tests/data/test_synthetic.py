"""The built-in dataset: determinism, held-out pairs, meanings, hard negatives, views, drawing."""

import pickle
import re

import numpy as np
import pytest

from contrastive.data import synthetic as S


def _phrases(text: str) -> set[tuple[int, int]]:
  """(colour, shape) pairs named in a caption."""
  pattern = r"(%s) (%s)" % ("|".join(S.COLOURS), "|".join(S.SHAPES))
  return {(S.COLOURS.index(c), S.SHAPES.index(s)) for c, s in re.findall(pattern, text)}


def test_deterministic_by_seed_and_index():
  a = S.ShapesSource(split="train", num_examples=100, image_size=32, seed=3)
  b = pickle.loads(
    pickle.dumps(S.ShapesSource(split="train", num_examples=50, image_size=32, seed=3))
  )
  c = S.ShapesSource(split="train", num_examples=100, image_size=32, seed=4)
  for i in (0, 7, 49):
    ra, rb = a[i], b[i]
    np.testing.assert_array_equal(ra["image"], rb["image"])
    assert ra["caption"] == rb["caption"] and ra["meaning_id"] == rb["meaning_id"]
    assert ra["hard_negative_captions"] == rb["hard_negative_captions"]
  assert [a[i]["caption"] for i in range(10)] != [c[i]["caption"] for i in range(10)]
  test = S.ShapesSource(split="test", num_examples=100, image_size=32, seed=3)
  assert [a[i]["caption"] for i in range(10)] != [test[i]["caption"] for i in range(10)]


@pytest.mark.parametrize("size", [32, 224])
def test_record_fields_and_image(size):
  src = S.ShapesSource(split="test", num_examples=10, image_size=size)
  r = src[3]
  assert set(r) == set(S.ShapesSource.fields)
  assert r["image"].shape == (size, size, 3) and r["image"].dtype == np.uint8
  assert r["image"].flags["C_CONTIGUOUS"]
  assert len(r["hard_negative_captions"]) == 3 and r["hard_negative_valid"].shape == (3,)
  assert r["index"] == 3 and src[13]["caption"] == r["caption"]  # indices wrap


def test_heldout_pairs_never_in_train():
  held = S.heldout_pairs(8)
  assert len(held) == 8
  assert len({c for c, _ in held}) == 8 and len({s for _, s in held}) == 8
  train = S.ShapesSource(split="train", num_examples=10**6, image_size=8)
  for i in range(1500):
    r = train[i]
    assert not r["heldout"]
    assert not _phrases(r["caption"]) & held, r["caption"]
    for neg in r["hard_negative_captions"]:
      assert not _phrases(neg) & held, neg
  test = S.ShapesSource(split="test", num_examples=10**6, image_size=8)
  flags = [test[i]["heldout"] for i in range(300)]
  assert 0.3 < np.mean(flags) < 0.8
  r = next(test[i] for i in range(300) if test[i]["heldout"])
  assert _phrases(r["caption"]) & held


def test_meaning_id_is_canonical_and_injective():
  a, b = (0, 1, 1), (2, 3, 0)
  above = S.Scene((a, b), S.RELATIONS.index("above"))
  below = S.Scene((b, a), S.RELATIONS.index("below"))
  assert S.meaning_id(above) == S.meaning_id(below)
  assert S.meaning_id(above) != S.meaning_id(S.Scene((b, a), S.RELATIONS.index("above")))
  row = S.Scene((a, b, (4, 4, 1)), S.DIRECTIONS.index("from left to right"))
  rev = S.Scene(((4, 4, 1), b, a), S.DIRECTIONS.index("from right to left"))
  assert S.meaning_id(row) == S.meaning_id(rev)
  # Injective over distinct canonical scenes (a sample of them).
  rng = np.random.default_rng(0)
  seen = {}
  for _ in range(3000):
    n = int(rng.integers(1, 4))
    objs = tuple(
      (int(rng.integers(8)), int(rng.integers(8)), int(rng.integers(2))) for _ in range(n)
    )
    scene = S.canonical(S.Scene(objs, int(rng.integers(5 if n == 1 else 4))))
    mid = S.meaning_id(scene)
    assert 0 <= mid < 2**31
    assert seen.setdefault(mid, scene) == scene
  # Many random images share a meaning (one-object scenes have 640 meanings).
  src = S.ShapesSource(split="shape", num_examples=5000, image_size=8)
  ids = [src[i]["meaning_id"] for i in range(1000)]
  assert len(set(ids)) < 640


def test_hard_negatives_are_compositional():
  red_circle, blue_square = (0, 0, 0), (1, 5, 1)
  scene = S.Scene((red_circle, blue_square), S.RELATIONS.index("above"))
  swap, rel, change = S.hard_negatives(scene, np.random.default_rng(0))
  assert S.caption(scene) == "a small red circle above a large blue square"
  assert S.caption(swap) == "a small blue circle above a large red square"
  assert S.caption(rel) == "a small red circle below a large blue square"
  words, changed = S.caption(scene).split(), S.caption(change).split()
  assert len(words) == len(changed) and sum(x != y for x, y in zip(words, changed)) == 1
  for neg in (swap, rel, change):
    assert S.meaning_id(neg) != S.meaning_id(scene)
  # One object: no swap; "in the middle" has no reversal; left <-> right.
  single = S.Scene((red_circle,), S.POSITIONS.index("in the middle"))
  swap, rel, change = S.hard_negatives(single, np.random.default_rng(0))
  assert swap is None and rel is None and change is not None
  left = S.Scene((red_circle,), S.POSITIONS.index("on the left"))
  assert S.caption(S.hard_negatives(left, np.random.default_rng(0))[1]).endswith("on the right")
  # Same colours: the swap exchanges sizes; identical objects: no swap at all.
  same = S.Scene(((0, 0, 0), (1, 0, 1)), 0)
  assert (
    S.caption(S.hard_negatives(same, np.random.default_rng(0))[0])
    == "a large red circle above a small red square"
  )
  twins = S.Scene(((0, 0, 0), (1, 0, 0)), 0)
  assert S.hard_negatives(twins, np.random.default_rng(0))[0] is None
  # Records: negatives use the same template; invalid ones are empty and flagged.
  src = S.ShapesSource(split="test", num_examples=100, image_size=8)
  for i in range(50):
    r = src[i]
    for text, valid, mid in zip(
      r["hard_negative_captions"], r["hard_negative_valid"], r["hard_negative_meaning_ids"]
    ):
      assert valid == bool(text) and (mid >= 0) == valid
      if valid:
        assert text != r["caption"] and mid != r["meaning_id"]
        assert len(text.split()) == len(r["caption"].split())


def test_labelled_views():
  views = S.labelled_views()
  assert set(views) == {"shape", "colour", "count"}
  assert views["shape"].class_names == S.SHAPES and len(S.SHAPES) >= 8
  assert views["colour"].class_names == S.COLOURS and len(S.COLOURS) >= 8
  prompts = views["count"].prompts()
  assert len(prompts) == 3 and "two" in prompts[1][0]
  for name, view in views.items():
    src = S.ShapesSource(split=name, num_examples=100, image_size=8)
    labels = []
    for i in range(40):
      r = src[i]
      labels.append(r["label"])
      if name == "count":
        assert r["label"] == r["num_objects"] - 1
      else:
        assert r["num_objects"] == 1
        assert view.class_names[r["label"]] in r["caption"].split()
    assert len(set(labels)) > 1
  assert S.ShapesSource(split="train", num_examples=5, image_size=8)[0]["label"] == -1


def test_drawn_colour_and_position():
  """A large object on the left is drawn in its colour, left of the centre."""
  for colour in range(len(S.COLOURS)):
    scene = S.Scene(((S.SHAPES.index("square"), colour, 1),), S.POSITIONS.index("on the left"))
    rng = np.random.default_rng(colour)
    image = S.render(scene, rng, 64).astype(np.float32)
    distance = np.abs(image - S.RGB[colour]).max(-1)
    ys, xs = np.nonzero(distance < 20)
    assert len(xs) > 150, S.COLOURS[colour]
    assert xs.mean() < 28


@pytest.mark.parametrize(
  "name, area",
  [  # in units of the radius squared, from `_mask`
    ("circle", np.pi),
    ("ring", np.pi * (1 - 0.36)),
    ("square", 1.64**2),
    ("diamond", 2.0),
    ("triangle", 0.58 * 1.7**2),
    ("cross", 2 * 0.6 * 1.9 - 0.6**2),
    ("hexagon", 0.87 * (2 + 2 * (1 - 0.87 / 1.732))),
  ],
)
def test_drawn_coverage_is_the_shapes_area(name, area):
  """Anti-aliased: each pixel holds its covered share, so the shares add up to the area."""
  size, r, centre = 32, 0.25, 0.5 + 0.3 / 32  # a radius of 8 pixels, off the pixel grid
  lo, hi = int((centre - r) * size), int(np.ceil((centre + r) * size)) + 1
  cover = S._coverage(S.SHAPES.index(name), lo, hi, lo, hi, centre, centre, r, size)
  assert cover.min() == 0.0 and cover.max() == 1.0
  assert ((cover > 0) & (cover < 1)).sum() >= 12  # the edge is partly covered, not cut
  np.testing.assert_allclose(cover.sum(), area * (r * size) ** 2, rtol=0.02)


def test_large_images_keep_hard_edges():
  """From 128 pixels on a shape is sampled once per pixel (sub-pixel detail is a few % there)."""
  cover = S._coverage(S.SHAPES.index("circle"), 0, 60, 0, 60, 0.12, 0.12, 0.1, 224)
  assert set(np.unique(cover)) == {0.0, 1.0}
  assert abs(cover.sum() - np.pi * 22.4**2) < 0.02 * np.pi * 22.4**2


def test_bad_arguments():
  with pytest.raises(ValueError, match="'val'.*known"):
    S.ShapesSource(split="val", num_examples=10)
  with pytest.raises(ValueError, match="image_size"):
    S.ShapesSource(split="train", num_examples=10, image_size=4)
  with pytest.raises(ValueError, match="num_heldout"):
    S.heldout_pairs(9)


@pytest.mark.parametrize("split", ["train", "test", "shape"])
def test_is_heldout_reads_the_flag_without_drawing(split):
  source = S.ShapesSource(split=split, num_examples=200, image_size=16)
  flags = [source.is_heldout(i) for i in range(200)]
  assert flags == [bool(source[i]["heldout"]) for i in range(200)]
  assert any(flags) == (split != "train")  # held-out pairs never occur in train


@pytest.mark.parametrize("split", ["train", "shape"])
def test_shape_variants_differ_in_one_shape_only(split):
  k = 4
  plain = S.ShapesSource(split=split, num_examples=400, image_size=32)
  src = S.ShapesSource(split=split, num_examples=400, image_size=32, shape_variants=k)
  for first in range(0, 60, k):
    base = src[first]
    np.testing.assert_array_equal(base["image"], plain[first]["image"])  # the first is plain
    assert base["caption"] == plain[first]["caption"]
    words = re.findall(r"\w+", base["caption"])
    shapes = set()
    for m in range(1, k):
      r = src[first + m]
      assert r["meaning_id"] != base["meaning_id"] and r["num_objects"] == base["num_objects"]
      assert src.is_heldout(first + m) == r["heldout"]
      variant = re.findall(r"\w+", r["caption"])
      changed = [i for i, (a, b) in enumerate(zip(words, variant)) if a != b]
      assert len(changed) == 1 and len(words) == len(variant), (base["caption"], r["caption"])
      assert words[changed[0]] in S.SHAPES and variant[changed[0]] in S.SHAPES
      shapes |= {words[changed[0]], variant[changed[0]]}
      # Same background and placement: the images differ only around the objects.
      differs = (r["image"] != base["image"]).any(axis=-1)
      assert 0 < differs.mean() < 0.3
      if split == "shape":
        assert S.SHAPES[r["label"]] == variant[changed[0]]
    assert len(shapes) == k  # k different shapes for the changed object


def test_shape_variants_keep_heldout_pairs_out_of_train():
  held = S.heldout_pairs(8)
  src = S.ShapesSource(split="train", num_examples=10**6, image_size=8, shape_variants=8)
  for i in range(400):
    r = src[i]
    assert not r["heldout"] and not _phrases(r["caption"]) & held, r["caption"]
  with pytest.raises(ValueError, match="shape_variants"):
    S.ShapesSource(split="train", num_examples=10, shape_variants=9)


def test_object_weights_set_the_share_of_each_object_count():
  def counts(split="train", **kwargs):
    source = S.ShapesSource(split=split, num_examples=3000, image_size=8, **kwargs)
    return np.bincount([source[i]["num_objects"] for i in range(3000)], minlength=4)[1:] / 3000

  np.testing.assert_allclose(counts(object_weights=(4, 1, 1)), [4 / 6, 1 / 6, 1 / 6], atol=0.04)
  np.testing.assert_allclose(counts(object_weights=(1, 1, 1)), [1 / 3] * 3, atol=0.04)
  np.testing.assert_array_equal(counts("test", min_objects=2, object_weights=(0, 1)), [0, 0, 1])
  with pytest.raises(ValueError, match="object_weights must be 3 non-negative"):
    S.ShapesSource(split="train", num_examples=10, object_weights=(1, 1))
  with pytest.raises(ValueError, match="not all zero"):
    S.ShapesSource(split="train", num_examples=10, max_objects=2, object_weights=(0, 0))
  with pytest.raises(ValueError, match="object_weights"):
    S.ShapesSource(split="train", num_examples=10, object_weights=(2, -1, 1))
