"""Data sources by name: `synthetic`, `tfds`, `arrayrecord`, `xor`.

A source is random access (`len`, `[i]`) over dicts. `make_source(config, split=...)` looks the
name `config.source` up in `SOURCES`, checks that the configured fields exist, and returns a
`Source`; `Source.dataset()` is the `grain.MapDataset` of its records. Reading never raises on a
bad record: the record comes back as `{"__error__": reason, "index": i}` and the pipeline skips
and counts it. Every record carries its source position under `"index"`.

Sources and their options (`config.<source>.<option>`):

- `synthetic`: the built-in dataset (`contrastive.data.shapes`). Options: `seed` (0),
  `train_size` (100_000), `test_size` (2_000), `view_size` (1_000), `num_heldout` (8),
  `min_objects` (1), `max_objects` (3), `object_weights` (None: uniform over the counts),
  `shape_variants` (1; k: groups of k records that differ in one object's shape, kept in one
  batch; see `shapes.ShapesSource`). Splits: `train`, `test`, `shape`, `colour`, `count`.
  Fields: `image` (uint8 array), `caption`, `meaning_id`, `heldout`, `num_objects`, `label`,
  `hard_negative_captions`, `hard_negative_valid`, `hard_negative_meaning_ids`, `index`.
- `tfds`: a tensorflow-datasets dataset prepared in ArrayRecord format, read with
  `tfds.data_source` (no TensorFlow). Options: `name` (e.g. `"coco_captions"` or
  `"my_set:1.0.0"`), `data_dir` (None for the tfds default). Splits: the dataset's (slices like
  `"train[:90%]"` too). Fields: the dataset's features; images are read undecoded and decoded
  in the pipeline, so a corrupt one is skipped.
- `arrayrecord`: a directory written by `python -m contrastive.data.build`. Options: `path`.
  Fields: `image` (encoded bytes), `caption` (list of str), `key`.
- `xor`: three modalities `a`, `b`, `c = a XOR b` whose signal is in no pair (Symile's
  construction; `contrastive.data.xor`), drawn at `config.image_size`. Options: `seed` (0),
  `train_size` (100_000), `test_size` (2_000), `bits` (4), `xor_prob` (1.0), `noise` (0.0),
  `jitter` (False), `tokens` (()). Splits: `train`, `test`. Fields: `a`, `b`, `c` (uint8
  images, or str for the modalities in `tokens`), `a_bits`, `b_bits`, `c_bits`, `index`. Its
  modalities reach the batch under their own names (`Source.modalities`); `image_key` and
  `text_key` are unused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import dataclasses
import os
from typing import Any

import grain
import ml_collections

from contrastive.data import records
from contrastive.data import shapes
from contrastive.data import transforms
from contrastive.data import xor
from contrastive.data.transforms import ERROR_KEY


@dataclasses.dataclass(frozen=True)
class Source:
  """A random-access source and what the pipeline needs to know about it.

  Attributes:
    data: random access (`__len__`, `__getitem__`, a stable `__repr__`) over record dicts.
    fields: the top-level record keys.
    passthrough: numeric fields the pipeline copies into each example.
    has_hard_negatives: whether records carry `hard_negative_captions`.
    group_size: records `[k * group_size, (k + 1) * group_size)` belong together (the built-in
      dataset's shape variants): a shuffle moves whole groups, so they share a batch.
    modalities: record fields that are model inputs under their own names (`xor`: `a`, `b`,
      `c`); when set, the pipeline runs `transforms.ModalityTransform` instead of reading
      `image_key` and `text_key`.
  """

  data: Any
  fields: tuple[str, ...]
  passthrough: tuple[str, ...] = ("index",)
  has_hard_negatives: bool = False
  group_size: int = 1
  modalities: tuple[str, ...] = ()

  def __len__(self) -> int:
    return len(self.data)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return self.data[index]

  def dataset(self, *, shuffle_seed: int | None = None) -> grain.MapDataset:
    """The records as a `grain.MapDataset`, shuffled anew each epoch if `shuffle_seed` is given.

    Built as `range(len).map(read)` rather than `MapDataset.source`, which walks every record's
    tree for byte-count metrics (about a fifth of the cost of a built-in example).
    """
    indices = grain.MapDataset.range(len(self.data))
    if shuffle_seed is not None:
      if self.group_size == 1:
        indices = indices.shuffle(seed=shuffle_seed)
      else:
        indices = _GroupShuffle(indices, group_size=self.group_size, seed=shuffle_seed)
    return indices.map(_Read(self.data))


class _GroupShuffle(grain.MapDataset):
  """Shuffles groups of `group_size` consecutive elements, anew each epoch; drops a partial one."""

  def __init__(self, parent: grain.MapDataset, *, group_size: int, seed: int):
    super().__init__(parent)
    self._group_size = group_size
    self._groups = grain.MapDataset.range(len(parent) // group_size).shuffle(seed=seed)

  def __len__(self) -> int:
    return len(self._groups) * self._group_size

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    epoch, position = divmod(index, len(self))
    group, member = divmod(position, self._group_size)
    # Past the first epoch the shuffled range reseeds and wraps: a new order of the same groups.
    group = self._groups[epoch * len(self._groups) + group]
    return self._parent[group * self._group_size + member]

  def __str__(self) -> str:
    return f"GroupShuffle(group_size={self._group_size})"


class _Read:
  """`index -> data[index]`, a picklable map function."""

  def __init__(self, data: Any):
    self.data = data

  def __call__(self, index: int) -> dict[str, Any]:
    return self.data[index]

  def __repr__(self) -> str:
    return f"Read({self.data!r})"


class SafeSource:
  """Wraps a source so a record that fails to read becomes `{"__error__": reason}`."""

  def __init__(self, data: Any):
    self._data = data

  def __len__(self) -> int:
    return len(self._data)

  def __getitem__(self, index: int) -> dict[str, Any]:
    index = int(index)
    try:
      record = dict(self._data[index])
    except Exception as e:
      return {ERROR_KEY: f"{type(e).__name__}: {e}", "index": index}
    record.setdefault("index", index)
    return record

  def __repr__(self) -> str:
    return f"SafeSource({self._data!r})"


def _options(
  config: ml_collections.ConfigDict, name: str, defaults: dict[str, Any]
) -> dict[str, Any]:
  """`config.<name>` merged over `defaults`; unknown keys fail, listing the known ones."""
  given = dict(config.get(name) or {})
  unknown = sorted(set(given) - set(defaults))
  if unknown:
    raise ValueError(
      f"Unknown option(s) {unknown} for data source {name!r}; known: {sorted(defaults)}."
    )
  return {**defaults, **{k: v for k, v in given.items() if v is not None}}


SYNTHETIC_DEFAULTS = dict(
  seed=0,
  train_size=100_000,
  test_size=2_000,
  view_size=1_000,
  num_heldout=8,
  min_objects=1,
  max_objects=3,
  object_weights=None,
  shape_variants=1,
)
TFDS_DEFAULTS = dict(name=None, data_dir=None)
ARRAYRECORD_DEFAULTS = dict(path=None)
XOR_DEFAULTS = xor.XOR_DEFAULTS


def synthetic_source(config: ml_collections.ConfigDict, *, split: str) -> Source:
  """The built-in dataset at `config.image_size`."""
  opts = _options(config, "synthetic", SYNTHETIC_DEFAULTS)
  size = {"train": opts["train_size"], "test": opts["test_size"]}.get(split, opts["view_size"])
  data = shapes.ShapesSource(
    split=split,
    num_examples=size,
    image_size=config.get("image_size", 64),
    seed=opts["seed"],
    num_heldout=opts["num_heldout"],
    min_objects=opts["min_objects"],
    max_objects=opts["max_objects"],
    object_weights=opts["object_weights"],
    shape_variants=opts["shape_variants"],
  )
  return Source(
    data=SafeSource(data),
    fields=shapes.ShapesSource.fields,
    passthrough=("index", "meaning_id", "heldout", "num_objects", "label"),
    has_hard_negatives=True,
    group_size=opts["shape_variants"],
  )


def tfds_source(config: ml_collections.ConfigDict, *, split: str) -> Source:
  """A tfds dataset in ArrayRecord format, `config.tfds.name` under `config.tfds.data_dir`."""
  import tensorflow_datasets as tfds

  opts = _options(config, "tfds", TFDS_DEFAULTS)
  if not opts["name"]:
    raise ValueError("data.source='tfds' needs data.tfds.name (e.g. 'coco_captions').")
  if opts["data_dir"] is not None and not os.path.isdir(opts["data_dir"]):
    raise FileNotFoundError(f"data.tfds.data_dir {opts['data_dir']!r} does not exist.")
  try:
    builder = tfds.builder(opts["name"], data_dir=opts["data_dir"], try_gcs=False)
  except Exception as e:
    raise FileNotFoundError(
      f"tfds dataset {opts['name']!r} not found under data_dir {opts['data_dir']!r}: {e}"
    ) from e
  if not builder.is_prepared():
    raise FileNotFoundError(
      f"tfds dataset {opts['name']!r} is not prepared under {builder.data_dir!r}; prepare it "
      "with file_format='array_record' first."
    )
  file_format = getattr(builder.info, "file_format", None)
  file_format = str(getattr(file_format, "value", file_format)).lower()
  if "array_record" not in file_format:
    raise ValueError(
      f"tfds dataset {opts['name']!r} is stored as {file_format!r}; random access "
      "without TensorFlow needs file_format='array_record'."
    )
  base_split = split.split("[")[0]
  if base_split not in builder.info.splits:
    raise ValueError(
      f"Split {split!r} is not in tfds dataset {opts['name']!r}; known: "
      f"{sorted(builder.info.splits)}."
    )
  features = builder.info.features
  decoders = _skip_image_decoding(features, config.get("image_key", "image"))
  data = builder.as_data_source(split, decoders=decoders)
  return Source(data=SafeSource(data), fields=tuple(features.keys()), passthrough=("index",))


def _skip_image_decoding(features, key: str) -> dict[str, Any] | None:
  """tfds decoders that leave the image at `key` (a `/` path) encoded, or None."""
  import tensorflow_datasets as tfds

  parts = key.split("/")
  feature = features
  for part in parts:
    try:
      feature = feature[part]
    except (KeyError, TypeError):
      return None
  if not isinstance(feature, tfds.features.Image):
    return None
  decoders: Any = tfds.decode.SkipDecoding()
  for part in reversed(parts):
    decoders = {part: decoders}
  return decoders


def arrayrecord_source(config: ml_collections.ConfigDict, *, split: str) -> Source:
  """A dataset directory written by `python -m contrastive.data.build`."""
  opts = _options(config, "arrayrecord", ARRAYRECORD_DEFAULTS)
  if not opts["path"]:
    raise ValueError(
      "data.source='arrayrecord' needs data.arrayrecord.path (a directory "
      "written by `python -m contrastive.data.build`)."
    )
  data = records.ImageTextSource(opts["path"], split)
  return Source(data=SafeSource(data), fields=records.FIELDS, passthrough=("index",))


def xor_source(config: ml_collections.ConfigDict, *, split: str) -> Source:
  """Symile's XOR modalities (`contrastive.data.xor`) at `config.image_size`."""
  opts = _options(config, "xor", XOR_DEFAULTS)
  size = opts["train_size"] if split == "train" else opts["test_size"]
  data = xor.XorSource(
    split=split,
    num_examples=size,
    image_size=config.get("image_size", 64),
    **{k: v for k, v in opts.items() if k not in ("train_size", "test_size")},
  )
  return Source(
    data=SafeSource(data),
    fields=xor.XorSource.fields,
    passthrough=("index", "a_bits", "b_bits", "c_bits"),
    modalities=xor.MODALITIES,
  )


# Sources by the name `config.source` gives.
SOURCES: dict[str, Callable[..., Source]] = {
  "synthetic": synthetic_source,
  "tfds": tfds_source,
  "arrayrecord": arrayrecord_source,
  "xor": xor_source,
}


def make_source(config: ml_collections.ConfigDict, *, split: str) -> Source:
  """The source `config.source` names, for `split`, with its fields checked.

  Args:
    config: the data config (`config.data`): `source`, its options block, `image_key`,
      `text_key`, `label_key`, `image_size`.
    split: the split to read.

  Raises:
    ValueError: an unknown source, an unknown split, or a configured field the source lacks.
    FileNotFoundError: missing files or directories.
  """
  name = config.get("source", "synthetic")
  if name not in SOURCES:
    raise ValueError(f"Unknown data source {name!r}; known: {sorted(SOURCES)}.")
  source = SOURCES[name](config, split=split)
  for key_name in ("image_key", "text_key", "label_key"):
    if source.modalities and key_name != "label_key":
      continue  # its modalities are read under their own names
    key = config.get(key_name)
    if key is None:
      continue
    if key.split("/")[0] not in source.fields:
      raise ValueError(
        f"data.{key_name}={key!r} is not a field of data source {name!r} "
        f"(split {split!r}); its fields: {sorted(source.fields)}."
      )
  return source


def iter_captions(
  source: Source, *, text_key: str = "caption", limit: int | None = None
) -> Iterator[str]:
  """Every non-empty caption of the first `limit` records (all by default), e.g. to fit a BPE
  vocabulary with `tokenizers.train_bpe(iter_captions(source), path)`. Unreadable records are
  passed over."""
  for i in range(len(source) if limit is None else min(limit, len(source))):
    record = source[i]
    if ERROR_KEY not in record:
      yield from transforms.caption_list(transforms.get_field(record, text_key))
