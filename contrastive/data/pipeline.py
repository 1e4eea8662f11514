"""The grain pipeline: source, shuffle, repeat, per-process shard, transform, batch, workers.

    it = make_pipeline(config.data, split="train")          # per-process numpy batches
    batch = sharding.to_global(next(it), mesh)              # global, batch-sharded jax.Arrays
    it.num_skipped                                          # corrupt/empty records dropped so far

The chain (one seed drives it all): `source -> shuffle(seed), reshuffled every epoch -> repeat ->
transform (random by seed and stream position) -> [process_index::process_count] -> drop bad
records (counted) -> batch -> worker processes`. Process `p` of `n` takes stream positions
`p, p + n, ...`, so the processes see disjoint parts of every epoch that together cover it.

Training streams are infinite (`num_epochs=None`) and batched in the workers. Finite streams
(evaluation: `training=False` reads the split once, in order) are batched in the main process
and padded: every process yields the same number of full batches, with `mask` False on the
padding rows.

The iterator is a grain `DatasetIterator`: `grain.checkpoint.CheckpointSave(it)` saves it with the
model, and a restored one continues with exactly the next batch (same `num_workers` and process
count). Changing `num_workers` changes which examples share a batch.
"""

from __future__ import annotations

from collections.abc import Sequence
import math
from typing import Any

from absl import flags
from absl import logging
import grain
import jax
from jax.sharding import Mesh
import ml_collections
import numpy as np

from contrastive import parallel
from contrastive.data import mixture as mixture_lib
from contrastive.data import sources as sources_lib
from contrastive.data import tokenizer_specs
from contrastive.data import tokenizers as tokenizers_lib
from contrastive.data import transforms
from contrastive.data.config import resolve_config


def make_tokenizer(config: ml_collections.ConfigDict | str) -> tokenizers_lib.Tokenizer:
  """The tokenizer `config.tokenizer` names (`"bytes"` by default), or a spec such as `"clip"`.

  A string is a spec for `tokenizer_specs.make_tokenizer` (e.g. `Pretrained.data.tokenizer`).
  """
  if isinstance(config, str):
    return tokenizer_specs.make_tokenizer(config)
  return tokenizer_specs.make_tokenizer(resolve_config(config).tokenizer)


def make_transform(
  config: ml_collections.ConfigDict,
  source: sources_lib.Source,
  *,
  training: bool,
  hard_negatives: bool | None = None,
) -> transforms.ExampleTransform | transforms.ModalityTransform:
  """The per-example transform the pipeline runs; checks the config against the source.

  A source of named modalities (`source.modalities`, e.g. `xor`) gets a
  `transforms.ModalityTransform`, every other one an `ExampleTransform`.
  """
  cfg = resolve_config(config)
  hard_negatives = cfg.hard_negatives if hard_negatives is None else hard_negatives
  if hard_negatives and not source.has_hard_negatives:
    raise ValueError(
      f"data.hard_negatives=True, but source {cfg.source!r} has no hard-negative "
      "captions (only 'synthetic' does)."
    )
  if cfg.flip and cfg.source == "synthetic":
    raise ValueError(
      "data.flip=True would contradict the left/right words of the built-in "
      "dataset's captions; leave it off for source 'synthetic'."
    )
  tokenizer = tokenizer_specs.make_tokenizer(cfg.tokenizer)
  if source.modalities:
    return _modality_transform(cfg, source, tokenizer)
  if cfg.source == "synthetic" and cfg.tokenizer == "bytes" and cfg.max_len < 110:
    logging.warning(
      "data.max_len=%d cuts some built-in captions (up to 109 bytes + end); their "
      "relation words may be lost.",
      cfg.max_len,
    )
  passthrough = tuple(k for k in source.passthrough if k != cfg.label_key)
  return transforms.ExampleTransform(
    image_key=cfg.image_key,
    text_key=cfg.text_key,
    label_key=cfg.label_key,
    image_size=cfg.image_size,
    tokenizer=tokenizer,
    max_len=cfg.max_len,
    training=training,
    random_resized_crop=cfg.random_resized_crop,
    crop_scale=tuple(cfg.crop_scale),
    flip=cfg.flip,
    normalization=cfg.normalization,
    text_delete_prob=cfg.text_delete_prob,
    text_mask_prob=cfg.text_mask_prob,
    hard_negatives=hard_negatives,
    passthrough=passthrough,
  )


def _modality_transform(
  cfg: ml_collections.ConfigDict, source: sources_lib.Source, tokenizer: tokenizers_lib.Tokenizer
) -> transforms.ModalityTransform:
  """The transform of a source of named modalities, which takes no augmentation."""
  for key in ("random_resized_crop", "flip", "text_delete_prob", "text_mask_prob"):
    if cfg[key]:
      raise ValueError(
        f"data.{key}={cfg[key]!r} has no effect on data source {cfg.source!r}, "
        f"whose modalities {list(source.modalities)} are not augmented; leave "
        "it off."
      )
  passthrough = tuple(k for k in source.passthrough if k != cfg.label_key)
  return transforms.ModalityTransform(
    modalities=tuple(source.modalities),
    tokenizer=tokenizer,
    max_len=cfg.max_len,
    normalization=cfg.normalization,
    label_key=cfg.label_key,
    passthrough=passthrough,
  )


# ---------------------------------------------------------------------------------------------
# Iterators.


class _DropBad(grain.IterDataset):
  """Drops `{"_bad": ...}` examples; the next kept one carries their number in `_skipped`.

  At the end of a finite stream, a pending count comes out alone as `{"_skipped": n}`.
  """

  def __init__(self, parent: grain.IterDataset):
    super().__init__(parent)

  def __iter__(self):
    return _DropBadIterator(self._parent.__iter__())

  def __str__(self) -> str:
    return "DropBad"


class _DropBadIterator(grain.DatasetIterator):
  def __next__(self):
    skipped = 0
    while True:
      try:
        example = next(self._parent)
      except StopIteration:
        if skipped:
          return {transforms.SKIPPED_KEY: skipped}
        raise
      if transforms.is_bad(example):
        skipped += 1
        continue
      if skipped:
        example = dict(example)
        example[transforms.SKIPPED_KEY] = example.get(transforms.SKIPPED_KEY, 0) + skipped
      return example

  def get_state(self):
    return self._parent.get_state()

  def set_state(self, state):
    self._parent.set_state(state)


class _Finish(grain.IterDataset):
  """The last stage, in the main process: see `DataIterator`."""

  def __init__(self, parent: grain.IterDataset, **kwargs):
    super().__init__(parent)
    self._kwargs = kwargs

  def __iter__(self):
    return DataIterator(self._parent.__iter__(), **self._kwargs)

  def __str__(self) -> str:
    return "Finish"


class DataIterator(grain.DatasetIterator):
  """Per-process batches; counts dropped records; saves and restores with grain/orbax.

  `next(it)` is a dict of numpy arrays, leading dimension `batch_size` (per process):
    image: float32 `[b, image_size, image_size, 3]`, normalized.
    text: int32 `[b, max_len]`, 0 = padding.
    mask: bool `[b]`, False only on padding rows of a finite stream.
    index: int32 `[b]`, the record's position in its source.
    label: int32 `[b]`, when `label_key` is set (or the built-in views' class; -1 otherwise).
    meaning_id, num_objects: int32 `[b]`; heldout: bool `[b]` (built-in dataset).
    hard_negatives: int32 `[b, 3, max_len]`, hard_negatives_mask: bool `[b, 3]`, when enabled.

  Attributes:
    num_skipped: records this process dropped as corrupt, unreadable or captionless since the
      start of the run (restored with the iterator).
    batch_size: the per-process batch size; global_batch_size: the global one.
    num_batches: the batches a finite stream yields (the same on every process), or None.
    tokenizer: the tokenizer of `text`.
    source: the `sources.Source` read (a mixture's first).
    source_counts: with `data.mixture`, `{name: examples}` this process has yielded from each
      source since the start of the run (restored with the iterator); empty otherwise.
  """

  def __init__(
    self,
    parent,
    *,
    batch_size: int,
    global_batch_size: int,
    batched: bool,
    num_batches: int | None,
    template,
    tokenizer,
    source,
    source_names=(),
  ):
    super().__init__(parent)
    self._source_names = tuple(source_names)
    self._counts = np.zeros(len(self._source_names), np.int64)
    self.batch_size = batch_size
    self.global_batch_size = global_batch_size
    self.num_batches = num_batches
    self.tokenizer = tokenizer
    self.source = source
    self._batched = batched
    self._template_fn = template
    self._template = None
    self._skipped = 0
    self._yielded = 0
    self._exhausted = False

  @property
  def num_skipped(self) -> int:
    return self._skipped

  @property
  def source_counts(self) -> dict[str, int]:
    return {n: int(c) for n, c in zip(self._source_names, self._counts)}

  def __next__(self) -> dict[str, np.ndarray]:
    if self.num_batches is not None and self._yielded >= self.num_batches:
      raise StopIteration
    if self._batched:
      # Copied out of grain's shared memory (when workers made the batch): the segment is
      # unlinked now, not when the last view dies, which at exit is never.
      batch = {k: np.array(v) for k, v in next(self._parent).items()}
      self._skipped += int(batch.pop(transforms.SKIPPED_KEY))
    else:
      batch = self._collect()
    if self._source_names:
      self._counts += np.bincount(batch[mixture_lib.SOURCE_ID], minlength=len(self._counts))
    self._yielded += 1
    return batch

  def _collect(self) -> dict[str, np.ndarray]:
    examples = []
    while len(examples) < self.batch_size and not self._exhausted:
      try:
        example = next(self._parent)
      except StopIteration:
        self._exhausted = True
        break
      self._skipped += int(example.get(transforms.SKIPPED_KEY, 0))
      if "mask" in example:  # not a lone count of dropped records
        examples.append(example)
    if self._template is None:
      first = examples[0] if examples else self._template_fn()
      self._template = {k: np.zeros(np.shape(v), np.asarray(v).dtype) for k, v in first.items()}
    pad = self.batch_size - len(examples)
    examples += [self._template] * pad
    batch = transforms.stack_examples(examples)
    batch.pop(transforms.SKIPPED_KEY)
    return batch

  def get_state(self) -> dict[str, Any]:
    state = {"parent": self._parent.get_state(), "skipped": self._skipped, "yielded": self._yielded}
    if self._source_names:
      state["source_counts"] = [int(c) for c in self._counts]
    return state

  def set_state(self, state: dict[str, Any]) -> None:
    self._parent.set_state(state["parent"])
    self._skipped = int(state["skipped"])
    self._yielded = int(state["yielded"])
    if self._source_names and "source_counts" in state:
      self._counts = np.asarray(state["source_counts"], np.int64)
    self._exhausted = False

  def __str__(self) -> str:
    return f"DataIterator(batch_size={self.batch_size}, num_batches={self.num_batches})"


def make_pipeline(
  config: ml_collections.ConfigDict,
  *,
  split: str | None = None,
  training: bool = True,
  seed: int | None = None,
  num_epochs: int | None = None,
  hard_negatives: bool | None = None,
  process_index: int | None = None,
  process_count: int | None = None,
  mesh: Mesh | None = None,
  batch_axes: Sequence[str] = parallel.BATCH_AXES,
) -> DataIterator:
  """The data iterator of one split, for this process.

  Args:
    config: the data config, `config.data` (see `default_config()`; a whole config with a
      `data` block works too).
    split: the split; default `config.train_split` when training, else `config.eval_split`.
    training: shuffle, augment and repeat forever; False reads the split once, in order,
      without augmentation, padding the last batches (`mask`).
    seed: overrides `config.seed`.
    num_epochs: passes over the split; default None (forever) when training, else 1.
    hard_negatives: overrides `config.hard_negatives`.
    process_index, process_count: this process and how many read the split; default
      `jax.process_index()` and `jax.process_count()`.
    mesh: if given, the global batch is checked to divide over its `batch_axes`.
    batch_axes: the mesh axes the batch is sharded over (those present in `mesh`).

  Returns:
    A `DataIterator` of per-process batches of `config.batch_size // process_count`.

  Raises:
    ValueError, FileNotFoundError: at once, for a bad config value, source, split, field or
    file, naming it.
  """
  cfg = resolve_config(config)
  split = split or (cfg.train_split if training else cfg.eval_split)
  seed = cfg.seed if seed is None else int(seed)
  if not 0 <= seed < 2**31:
    raise ValueError(f"seed must be in [0, 2**31), got {seed}.")
  if num_epochs is None and not training:
    num_epochs = 1
  if num_epochs is not None and num_epochs < 1:
    raise ValueError(f"num_epochs must be positive or None, got {num_epochs}.")
  pi = jax.process_index() if process_index is None else int(process_index)
  pc = jax.process_count() if process_count is None else int(process_count)
  if not 0 <= pi < pc:
    raise ValueError(f"process_index {pi} is not in [0, process_count={pc}).")
  if cfg.batch_size < 1 or cfg.batch_size % pc:
    raise ValueError(
      f"The global batch size data.batch_size={cfg.batch_size} must be a "
      f"positive multiple of the process count {pc}."
    )
  if mesh is not None:
    shards = parallel.batch_shards(mesh, batch_axes)
    if cfg.batch_size % shards:
      raise ValueError(
        f"The global batch size data.batch_size={cfg.batch_size} does not divide "
        f"over the {shards} devices of mesh axes {tuple(batch_axes)}."
      )
  if cfg.num_workers < 0:
    raise ValueError(f"data.num_workers must be >= 0, got {cfg.num_workers}.")
  batch_size = cfg.batch_size // pc

  if training and cfg.mixture:
    mapped, source, transform, names = _mixture(cfg, seed, hard_negatives)
    length = len(source)
  else:
    names = ()
    source = sources_lib.make_source(cfg, split=split)
    transform = make_transform(cfg, source, training=training, hard_negatives=hard_negatives)
    length = len(source)
    if length == 0:
      raise ValueError(f"Split {split!r} of data source {cfg.source!r} is empty.")
    if training and cfg.batch_size % source.group_size:
      raise ValueError(
        f"The global batch size data.batch_size={cfg.batch_size} must be a multiple "
        f"of {source.group_size}: the source's records come in groups of that "
        "many, which share a batch."
      )
    # Reshuffled every epoch (grain reseeds by epoch).
    ds = source.dataset(shuffle_seed=seed if training and cfg.shuffle else None)
    ds = ds.repeat(num_epochs)
    mapped = ds.random_map(transform, seed=(seed + 1) % 2**32)
  ds = mapped[pi::pc]
  it = ds.to_iter_dataset(
    grain.ReadOptions(num_threads=cfg.read_threads, prefetch_buffer_size=cfg.read_buffer_size)
  )
  it = _DropBad(it)
  batched = num_epochs is None
  if batched:
    it = it.batch(batch_size, drop_remainder=True, batch_fn=transforms.stack_examples)
  if cfg.num_workers > 0:
    if not flags.FLAGS.is_parsed():
      # grain reads its absl flags in the workers; outside `app.run` nobody parsed them.
      flags.FLAGS.mark_as_parsed()
    buffer = cfg.worker_buffer_size if batched else cfg.worker_buffer_size * batch_size
    it = it.mp_prefetch(
      grain.MultiprocessingOptions(num_workers=cfg.num_workers, per_worker_buffer_size=buffer)
    )
  num_batches = None
  if not batched:
    per_process = math.ceil(length * num_epochs / pc)
    num_batches = math.ceil(per_process / batch_size)

  def template():
    for i in range(min(length, 1000)):
      example = mapped[i]
      if not transforms.is_bad(example):
        return example
    raise ValueError(f"No usable record among the first {min(length, 1000)} of split {split!r}.")

  logging.info(
    "Data: %s split %r (%d records), %d per process x %d processes, %s, %d workers.",
    source.data,
    split,
    length,
    batch_size,
    pc,
    "training" if training else "evaluation",
    cfg.num_workers,
  )
  return iter(
    _Finish(
      it,
      batch_size=batch_size,
      global_batch_size=cfg.batch_size,
      batched=batched,
      num_batches=num_batches,
      template=template,
      tokenizer=transform.tokenizer,
      source=source,
      source_names=names,
    )
  )


class _Tag:
  """Adds `source_id` to an example (picklable for grain's workers)."""

  def __init__(self, index: int):
    self.index = index

  def __call__(self, example):
    return {**example, mixture_lib.SOURCE_ID: np.int32(self.index)}


def _mixture(cfg, seed: int, hard_negatives):
  """`(mixed dataset, first source, first transform, names)` of `data.mixture` (training)."""
  datasets, weights, names, first = [], [], [], None
  for i, (name, weight, entry) in enumerate(mixture_lib.entries(cfg)):
    source = sources_lib.make_source(entry, split=entry.train_split)
    if len(source) == 0:
      raise ValueError(f"data.mixture.{name}: split {entry.train_split!r} is empty.")
    if source.group_size != 1:
      raise ValueError(
        f"data.mixture.{name}: its records come in groups of {source.group_size} that must "
        "share a batch (e.g. synthetic.shape_variants > 1), which a mixture cannot keep."
      )
    transform = make_transform(entry, source, training=True, hard_negatives=hard_negatives)
    ds = source.dataset(shuffle_seed=seed + i if entry.shuffle else None).repeat(None)
    ds = ds.random_map(transform, seed=(seed + 1 + i) % 2**32).map(_Tag(i))
    datasets.append(ds)
    weights.append(weight)
    names.append(name)
    first = first or (source, transform)
  return grain.MapDataset.mix(datasets, weights), first[0], first[1], tuple(names)
