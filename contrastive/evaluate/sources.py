"""Evaluation sources by name: the built-in dataset, tfds, or any random-access source.

A source is anything with `__len__` and `__getitem__(i) -> dict` (grain's
`RandomAccessDataSource` protocol). The evaluation tasks read these record fields (the names
are options of each task):

- `image`: uint8 `[H, W, C]` (turned into model input by the caller's `prepare`);
- `caption`: a str, or a sequence of str (several captions per image);
- `label`: int class, or a multi-hot `[num_classes]` vector (zero-shot, probes);
- `meaning_id`: int (retrieval counts a hit of the same meaning as correct);
- `heldout`: bool (results are reported apart for held-out and seen combinations);
- `hard_negative_captions`: sequence of str, with `hard_negative_valid`: bool per entry.

A source config is a mapping with `name` (a key of `SOURCES`, or of the `sources` a caller
adds) and the factory's keyword arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import dataclasses
from typing import Any, Protocol

import ml_collections


class RandomAccessSource(Protocol):
  def __len__(self) -> int: ...
  def __getitem__(self, index: int) -> Mapping[str, Any]: ...


@dataclasses.dataclass(frozen=True)
class EvalSource:
  """A source with what a zero-shot task may need to know about it.

  Attributes:
    source: the random-access source of records.
    class_names: the class names in label order, when the source is labelled.
    templates: default prompt templates (one `{}` each) for its class names.
    negative_types: the kind of each entry of its records' `hard_negative_captions`.
  """
  source: RandomAccessSource
  class_names: tuple[str, ...] | None = None
  templates: tuple[str, ...] | None = None
  negative_types: tuple[str, ...] | None = None


DEFAULT_TEMPLATES = ("a photo of a {}.", "a picture of a {}.", "an image of a {}.")


def synthetic(*, split: str, num_examples: int, **kwargs) -> EvalSource:
  """The built-in dataset (`contrastive.data.synthetic.ShapesSource`); the labelled views
  (`shape`, `colour`, `count`) bring their class names and templates."""
  from contrastive.data import synthetic as shapes  # pylint: disable=g-import-not-at-top
  source = shapes.ShapesSource(split=split, num_examples=num_examples, **kwargs)
  view = shapes.labelled_views().get(split)
  kinds = tuple(shapes.HARD_NEGATIVE_KINDS)
  if view is None:
    return EvalSource(source, negative_types=kinds)
  return EvalSource(source, tuple(view.class_names), tuple(view.templates), kinds)


class _Renamed:
  """A source whose records get some fields renamed (e.g. tfds's `label` to the task's)."""

  def __init__(self, source, rename: Mapping[str, str]):
    self._source, self._rename = source, dict(rename)

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict[str, Any]:
    record = dict(self._source[index])
    return {self._rename.get(k, k): v for k, v in record.items()}

  def __repr__(self) -> str:
    return f"_Renamed({self._source!r}, {self._rename})"


def tfds(*, dataset: str, split: str, data_dir: str | None = None, image_key: str = "image",
         label_key: str = "label", templates: Sequence[str] = DEFAULT_TEMPLATES) -> EvalSource:
  """A prepared tfds classification dataset through `tfds.data_source` (no TensorFlow).

  Its records are renamed to `image` and `label`, and the class names come from the dataset's
  `ClassLabel` feature `label_key` (underscores read as spaces).
  """
  import tensorflow_datasets as tfds_lib  # pylint: disable=g-import-not-at-top
  builder = tfds_lib.builder(dataset, data_dir=data_dir)
  feature = builder.info.features[label_key]
  names = tuple(n.replace("_", " ") for n in getattr(feature, "names", ()) or ()) or None
  source = tfds_lib.data_source(dataset, split=split, data_dir=data_dir, try_gcs=False)
  return EvalSource(_Renamed(source, {image_key: "image", label_key: "label"}), names,
                    tuple(templates))


# name: factory(**config) -> EvalSource. Callers add their own with `sources=`.
SOURCES: dict[str, Callable[..., EvalSource]] = {
    "synthetic": synthetic,
    "tfds": tfds,
}


def make_source(config: Mapping[str, Any] | ml_collections.ConfigDict, *,
                sources: Mapping[str, Callable[..., EvalSource | RandomAccessSource]]
                | None = None) -> EvalSource:
  """Builds the source a config names; an unknown name fails with the known ones.

  A factory may return an `EvalSource` or a bare random-access source.
  """
  config = dict(config.to_dict() if isinstance(config, ml_collections.ConfigDict) else config)
  table = {**SOURCES, **(sources or {})}
  name = config.pop("name", None)
  if name not in table:
    raise ValueError(f"Unknown evaluation source {name!r}; known: {sorted(table)}.")
  try:
    made = table[name](**config)
  except TypeError as e:
    raise ValueError(f"Bad options {sorted(config)} for evaluation source {name!r}: {e}") from e
  return made if isinstance(made, EvalSource) else EvalSource(made)
