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
adds, such as `data_sources(config.data)`) and the factory's keyword arguments:

- `{"name": "synthetic", "split": "shape", "num_examples": 256, "image_size": 64, "seed": 0,
  "num_heldout": 8}`: the built-in dataset (any `ShapesSource` option);
- `{"name": "tfds", "dataset": "imagenette", "split": "validation", "data_dir": ...,
  "num_examples": 1000}`: a tfds classification dataset prepared as ArrayRecord;
- `{"name": "arrayrecord", "path": "/data/my_set", "split": "val"}`: a dataset directory
  written by `python -m contrastive.data.build`;
- `{"name": "data", "split": "test", "num_examples": 512}`: the training data config's own
  source (`data_sources`).
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
  """The built-in dataset (`contrastive.data.shapes.ShapesSource`); the labelled views
  (`shape`, `colour`, `count`) bring their class names and templates."""
  from contrastive.data import shapes

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


def tfds(
  *,
  dataset: str,
  split: str,
  data_dir: str | None = None,
  image_key: str = "image",
  label_key: str = "label",
  num_examples: int | None = None,
  templates: Sequence[str] = DEFAULT_TEMPLATES,
) -> EvalSource:
  """A tfds classification dataset prepared in ArrayRecord format, read without TensorFlow.

  Records are renamed to `image` (left encoded: the caller's `prepare` decodes it) and `label`;
  the class names come from the dataset's `ClassLabel` feature (underscores read as spaces).
  `num_examples` keeps the first ones only.
  """
  import tensorflow_datasets as tfds_lib

  builder = tfds_lib.builder(dataset, data_dir=data_dir, try_gcs=False)
  features = builder.info.features
  for key in (image_key, label_key):
    if key not in features:
      raise ValueError(
        f"tfds dataset {dataset!r} has no feature {key!r}; features: {sorted(features.keys())}."
      )
  names = tuple(n.replace("_", " ") for n in getattr(features[label_key], "names", ()) or ())
  decoders = None
  if isinstance(features[image_key], tfds_lib.features.Image):
    decoders = {image_key: tfds_lib.decode.SkipDecoding()}
  source = builder.as_data_source(split, decoders=decoders)
  source = _Renamed(source, {image_key: "image", label_key: "label"})
  return EvalSource(_head(source, num_examples), names or None, tuple(templates))


def arrayrecord(*, path: str, split: str, num_examples: int | None = None) -> EvalSource:
  """A dataset directory written by `python -m contrastive.data.build` (`image` left encoded,
  `caption` a list of str), e.g. `{"name": "arrayrecord", "path": "/data/my_set",
  "split": "val"}` for retrieval."""
  from contrastive import data

  cfg = data.resolve_config(dict(source="arrayrecord", arrayrecord=dict(path=path)))
  return EvalSource(_head(data.make_source(cfg, split=split).data, num_examples))


def data_sources(data_config: Any) -> dict[str, Callable[..., EvalSource]]:
  """`{"data": factory}`: evaluation sources read through the training data config.

  `{"name": "data", "split": "test", "num_examples": 512}` reads `split` of whatever
  `data_config.source` names (`synthetic`, `tfds`, `arrayrecord`, via
  `contrastive.data.make_source`), so any image-text dataset the trainer reads can be
  evaluated; the built-in views bring their class names and templates, the built-in dataset its
  negative types. Pass the result as `sources=` to `run_tasks` / `evaluate`.
  """

  def factory(*, split: str, num_examples: int | None = None) -> EvalSource:
    from contrastive import data

    cfg = data.resolve_config(data_config)
    source = data.make_source(cfg, split=split)
    names = templates = None
    view = data.labelled_views().get(split) if cfg.source == "synthetic" else None
    if view is not None:
      names, templates = tuple(view.class_names), tuple(view.templates)
    kinds = tuple(data.HARD_NEGATIVE_KINDS) if source.has_hard_negatives else None
    return EvalSource(_head(source.data, num_examples), names, templates, kinds)

  return {"data": factory}


class _Head:
  """The first `n` records of a source."""

  def __init__(self, source, n: int):
    self._source, self._n = source, min(int(n), len(source))

  def __len__(self) -> int:
    return self._n

  def __getitem__(self, index: int):
    if not 0 <= index < self._n:
      raise IndexError(index)
    return self._source[index]

  def __repr__(self) -> str:
    return f"_Head({self._source!r}, {self._n})"


def _head(source, n: int | None):
  if n is None:
    return source
  if int(n) < 1:
    raise ValueError(f"num_examples must be positive, got {n}.")
  return _Head(source, n)


# name: factory(**config) -> EvalSource. Callers add their own with `sources=`.
SOURCES: dict[str, Callable[..., EvalSource]] = {
  "synthetic": synthetic,
  "tfds": tfds,
  "arrayrecord": arrayrecord,
}


def make_source(
  config: Mapping[str, Any] | ml_collections.ConfigDict,
  *,
  sources: Mapping[str, Callable[..., EvalSource | RandomAccessSource]] | None = None,
) -> EvalSource:
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
