"""The built-in dataset as a grain random-access source: scenes, captions, negatives, images.

Every record is a pure function of `(seed, split, index)`: one stream of draws per record picks
the scene, the caption template and the hard negatives, then draws the image. Nothing is
downloaded and nothing is stored.

Splits: `train`, `test`, and the labelled views `shape`, `colour` (one object each) and `count`
(one to three objects), for zero-shot classification (`captions.labelled_views()`). The `test`
split draws half its examples with at least one held-out (colour, shape) pair; its `heldout`
flag says which. `train` never shows one, not even in its hard-negative captions.
"""

from __future__ import annotations

from collections.abc import Sequence
import hashlib
from typing import Any, Literal

import numpy as np

from contrastive.data.shapes import captions
from contrastive.data.shapes import draws as draws_lib
from contrastive.data.shapes import negatives
from contrastive.data.shapes import rasterizer
from contrastive.data.shapes import scenes

SPLITS = ("train", "test", "shape", "colour", "count")


def _stream_key(seed: int, split: str) -> int:
  """A 64-bit key of `(seed, split)`, stable across processes (unlike the salted `hash()`)."""
  # The module's former name stays in the key: changing it would change every record.
  digest = hashlib.blake2b(f"contrastive.synthetic/{seed}/{split}".encode(), digest_size=8)
  return int.from_bytes(digest.digest(), "little")


class ShapesSource:
  """Random-access source of the built-in dataset (grain `RandomAccessDataSource` protocol).

  `source[i]` is a dict:
    image: uint8 `[image_size, image_size, 3]`.
    caption: str.
    meaning_id: int, the canonical meaning (see `scenes.meaning_id`).
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
    if not 1 <= shape_variants <= len(scenes.SHAPES):
      raise ValueError(
        f"shape_variants must be in [1, {len(scenes.SHAPES)}], got {shape_variants}."
      )
    self.split = split
    self.num_examples = int(num_examples)
    self.image_size = int(image_size)
    self.seed = int(seed)
    self.num_heldout = int(num_heldout)
    self.min_objects, self.max_objects = int(min_objects), int(max_objects)
    self.shape_variants = int(shape_variants)
    self.heldout = scenes.heldout_pairs(num_heldout)
    colours_shapes = [(c, s) for c in range(len(scenes.COLOURS)) for s in range(len(scenes.SHAPES))]
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

  def _object(self, draws: draws_lib.Draws, pool) -> tuple[int, int, int]:
    colour, shape = pool[draws.integer(len(pool))]
    return (shape, colour, draws.integer(len(scenes.SIZES)))

  def scene(self, rng: np.random.Generator | draws_lib.Draws) -> tuple[scenes.Scene, int]:
    """Draws a scene of this split and its label (-1 outside the labelled views)."""
    draws = draws_lib.as_draws(rng)
    split = self.split
    if split in ("shape", "colour"):
      obj = self._object(draws, self._all)
      scene = scenes.Scene((obj,), draws.integer(len(scenes.POSITIONS)))
      return scene, obj[0] if split == "shape" else obj[1]
    if split == "count":
      n = 1 + draws.integer(3)
    elif self._object_cdf is not None:
      n = self.min_objects + draws.weighted(self._object_cdf)
    else:
      n = self.min_objects + draws.integer(self.max_objects - self.min_objects + 1)
    num_layouts = (len(scenes.POSITIONS), len(scenes.RELATIONS), len(scenes.DIRECTIONS))
    layout = draws.integer(num_layouts[n - 1])
    if split == "count":
      return scenes.Scene(tuple(self._object(draws, self._all) for _ in range(n)), layout), n - 1
    pools = [self._seen] * n
    if split == "test" and self._held and draws.uniform() < 0.5:
      pools[draws.integer(n)] = self._held
    return scenes.Scene(tuple(self._object(draws, p) for p in pools), layout), -1

  def _draws(self, index: int) -> draws_lib.Draws:
    # Philox takes its key directly (no SeedSequence hashing): one independent stream per
    # (seed, split, index).
    return draws_lib.Draws(np.random.Generator(np.random.Philox(key=index + (self._key << 64))))

  def _variant(
    self, scene: scenes.Scene, label: int, first: int, member: int
  ) -> tuple[scenes.Scene, int]:
    """Member `member` of the contrast set of record `first` (whose scene is `scene`)."""
    draws = self._draws(first + 1)  # one draw for the whole group
    forbidden = self.heldout if self.split == "train" else frozenset()
    i = draws.integer(len(scene.objects))
    shape, colour, _ = scene.objects[i]
    options = [s for s in range(len(scenes.SHAPES)) if s != shape and (colour, s) not in forbidden]
    order = sorted(options, key=lambda _: draws.uniform())
    new_shape = order[(member - 1) % len(order)]
    return (
      scenes.Scene(scenes.with_attribute(scene.objects, i, 0, new_shape), scene.layout),
      new_shape if self.split == "shape" else label,
    )

  def scene_at(self, index: int) -> tuple[scenes.Scene, int]:
    """The scene of `self[index]` and its label, without drawing the image or the captions."""
    index = int(index) % self.num_examples
    member = index % self.shape_variants
    scene, label = self.scene(self._draws(index - member))
    if member:
      scene, label = self._variant(scene, label, index - member, member)
    return scene, label

  def is_heldout(self, index: int) -> bool:
    """`self[index]["heldout"]`, without drawing the image or the captions."""
    return scenes.has_heldout(self.scene_at(index)[0].objects, self.heldout)

  def __getitem__(self, index: int) -> dict[str, Any]:
    index = int(index) % self.num_examples
    member = index % self.shape_variants
    # A variant replays the draws of its group's first record: it is rendered in the same place.
    draws = self._draws(index - member)
    scene, label = self.scene(draws)
    template = draws.integer(captions.num_templates(len(scene.objects)))
    forbidden = self.heldout if self.split == "train" else frozenset()
    hard = negatives.hard_negatives(scene, draws, forbidden=forbidden)
    if member:
      scene, label = self._variant(scene, label, index - member, member)
      hard = negatives.hard_negatives(scene, self._draws(index), forbidden=forbidden)
    return {
      "image": rasterizer.render(scene, draws, self.image_size),
      "caption": captions.caption(scene, template),
      "meaning_id": scenes.meaning_id(scene),
      "heldout": scenes.has_heldout(scene.objects, self.heldout),
      "num_objects": len(scene.objects),
      "label": label,
      "hard_negative_captions": tuple(
        "" if s is None else captions.caption(s, template) for s in hard
      ),
      "hard_negative_valid": np.array([s is not None for s in hard]),
      "hard_negative_meaning_ids": np.array(
        [-1 if s is None else scenes.meaning_id(s) for s in hard], np.int32
      ),
      "index": index,
    }
