"""The built-in dataset's source: determinism, held-out pairs, fields, contrast sets, counts."""

import pickle
import re

import numpy as np
import pytest

from contrastive.data.shapes import scenes
from contrastive.data.shapes import source as source_lib


def _phrases(text: str) -> set[tuple[int, int]]:
  """(colour, shape) pairs named in a caption."""
  pattern = rf"({'|'.join(scenes.COLOURS)}) ({'|'.join(scenes.SHAPES)})"
  return {(scenes.COLOURS.index(c), scenes.SHAPES.index(s)) for c, s in re.findall(pattern, text)}


def test_deterministic_by_seed_and_index():
  a = source_lib.ShapesSource(split="train", num_examples=100, image_size=32, seed=3)
  b = pickle.loads(
    pickle.dumps(source_lib.ShapesSource(split="train", num_examples=50, image_size=32, seed=3))
  )
  c = source_lib.ShapesSource(split="train", num_examples=100, image_size=32, seed=4)
  for i in (0, 7, 49):
    ra, rb = a[i], b[i]
    np.testing.assert_array_equal(ra["image"], rb["image"])
    assert ra["caption"] == rb["caption"] and ra["meaning_id"] == rb["meaning_id"]
    assert ra["hard_negative_captions"] == rb["hard_negative_captions"]
  assert [a[i]["caption"] for i in range(10)] != [c[i]["caption"] for i in range(10)]
  test = source_lib.ShapesSource(split="test", num_examples=100, image_size=32, seed=3)
  assert [a[i]["caption"] for i in range(10)] != [test[i]["caption"] for i in range(10)]


@pytest.mark.parametrize("size", [32, 224])
def test_record_fields_and_image(size):
  src = source_lib.ShapesSource(split="test", num_examples=10, image_size=size)
  r = src[3]
  assert set(r) == set(source_lib.ShapesSource.fields)
  assert r["image"].shape == (size, size, 3) and r["image"].dtype == np.uint8
  assert r["image"].flags["C_CONTIGUOUS"]
  assert len(r["hard_negative_captions"]) == 3 and r["hard_negative_valid"].shape == (3,)
  assert r["index"] == 3 and src[13]["caption"] == r["caption"]  # indices wrap


def test_heldout_pairs_never_in_train():
  held = scenes.heldout_pairs(8)
  assert len(held) == 8
  assert len({c for c, _ in held}) == 8 and len({s for _, s in held}) == 8
  train = source_lib.ShapesSource(split="train", num_examples=10**6, image_size=8)
  for i in range(1500):
    r = train[i]
    assert not r["heldout"]
    assert not _phrases(r["caption"]) & held, r["caption"]
    for neg in r["hard_negative_captions"]:
      assert not _phrases(neg) & held, neg
  test = source_lib.ShapesSource(split="test", num_examples=10**6, image_size=8)
  flags = [test[i]["heldout"] for i in range(300)]
  assert 0.3 < np.mean(flags) < 0.8
  r = next(test[i] for i in range(300) if test[i]["heldout"])
  assert _phrases(r["caption"]) & held


def test_bad_arguments():
  with pytest.raises(ValueError, match="'val'.*known"):
    source_lib.ShapesSource(split="val", num_examples=10)
  with pytest.raises(ValueError, match="image_size"):
    source_lib.ShapesSource(split="train", num_examples=10, image_size=4)
  with pytest.raises(ValueError, match="num_heldout"):
    scenes.heldout_pairs(9)


@pytest.mark.parametrize("split", ["train", "test", "shape"])
def test_is_heldout_reads_the_flag_without_drawing(split):
  source = source_lib.ShapesSource(split=split, num_examples=200, image_size=16)
  flags = [source.is_heldout(i) for i in range(200)]
  assert flags == [bool(source[i]["heldout"]) for i in range(200)]
  assert any(flags) == (split != "train")  # held-out pairs never occur in train


@pytest.mark.parametrize("split", ["train", "shape"])
def test_shape_variants_differ_in_one_shape_only(split):
  k = 4
  plain = source_lib.ShapesSource(split=split, num_examples=400, image_size=32)
  src = source_lib.ShapesSource(split=split, num_examples=400, image_size=32, shape_variants=k)
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
      assert words[changed[0]] in scenes.SHAPES and variant[changed[0]] in scenes.SHAPES
      shapes |= {words[changed[0]], variant[changed[0]]}
      # Same background and placement: the images differ only around the objects.
      differs = (r["image"] != base["image"]).any(axis=-1)
      assert 0 < differs.mean() < 0.3
      if split == "shape":
        assert scenes.SHAPES[r["label"]] == variant[changed[0]]
    assert len(shapes) == k  # k different shapes for the changed object


def test_shape_variants_keep_heldout_pairs_out_of_train():
  held = scenes.heldout_pairs(8)
  src = source_lib.ShapesSource(split="train", num_examples=10**6, image_size=8, shape_variants=8)
  for i in range(400):
    r = src[i]
    assert not r["heldout"] and not _phrases(r["caption"]) & held, r["caption"]
  with pytest.raises(ValueError, match="shape_variants"):
    source_lib.ShapesSource(split="train", num_examples=10, shape_variants=9)


def test_object_weights_set_the_share_of_each_object_count():
  def counts(split="train", **kwargs):
    source = source_lib.ShapesSource(split=split, num_examples=3000, image_size=8, **kwargs)
    return np.bincount([source[i]["num_objects"] for i in range(3000)], minlength=4)[1:] / 3000

  np.testing.assert_allclose(counts(object_weights=(4, 1, 1)), [4 / 6, 1 / 6, 1 / 6], atol=0.04)
  np.testing.assert_allclose(counts(object_weights=(1, 1, 1)), [1 / 3] * 3, atol=0.04)
  np.testing.assert_array_equal(counts("test", min_objects=2, object_weights=(0, 1)), [0, 0, 1])
  with pytest.raises(ValueError, match="object_weights must be 3 non-negative"):
    source_lib.ShapesSource(split="train", num_examples=10, object_weights=(1, 1))
  with pytest.raises(ValueError, match="not all zero"):
    source_lib.ShapesSource(split="train", num_examples=10, max_objects=2, object_weights=(0, 0))
  with pytest.raises(ValueError, match="object_weights"):
    source_lib.ShapesSource(split="train", num_examples=10, object_weights=(2, -1, 1))
