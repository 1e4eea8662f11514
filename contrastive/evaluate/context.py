"""What the evaluation tasks share: the model's embed function, input preparation, and a cache.

The model is reached only through two callables, so nothing here depends on its class:

- `embed_fn(batch) -> {modality: [batch, dim]}`: the model with its parameters bound, e.g.
  `lambda b: model.apply(params, b, train=False)[0]` for a `TowerModel`.
- `prepare(raw) -> batch`: turns a raw batch, `{image_modality: uint8 [b, H, W, C]}` or
  `{text_modality: list of b str}`, into the model's inputs (image normalization and resizing,
  tokenization), the same transforms as the training pipeline.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
import dataclasses
import json
from typing import Any

import jax
from jax.sharding import Mesh
import ml_collections
import numpy as np

from contrastive.evaluate import embed
from contrastive.evaluate import similarity
from contrastive.evaluate import sources as sources_lib

Prepare = Callable[[Mapping[str, Any]], Mapping[str, np.ndarray]]


def _key(config: Any) -> str:
  if isinstance(config, ml_collections.ConfigDict):
    config = config.to_dict()
  return json.dumps(config, sort_keys=True, default=str)


@dataclasses.dataclass
class Context:
  """The model and options the tasks of one evaluation share, with caches.

  Attributes:
    embed_fn: `batch -> {modality: [batch, dim]}` (jitted here once).
    prepare: raw batch -> model inputs (see the module docstring).
    batch_size: the fixed evaluation batch size (divisible by the mesh's batch axes).
    mesh: optional mesh to place the batches on and to split the similarity rows over.
    batch_axes: the mesh axes of the batch dimension.
    image_modality, text_modality: the model's names for the two modalities.
    sources: extra source factories by name (see `sources.make_source`).
    block_size: the largest similarity tile.
    pairs: paired `(image, text)` embeddings kept for the report, by task name.
    task_name: the task running now (set by `run_tasks`).
  """
  embed_fn: Callable[[dict[str, jax.Array]], Mapping[str, jax.Array]]
  prepare: Prepare
  batch_size: int
  mesh: Mesh | None = None
  batch_axes: Sequence[str] = ("data", "fsdp")
  image_modality: str = "image"
  text_modality: str = "text"
  sources: Mapping[str, Callable[..., Any]] | None = None
  block_size: int = similarity.DEFAULT_BLOCK_SIZE
  pairs: dict[str, tuple[np.ndarray, np.ndarray]] = dataclasses.field(default_factory=dict)
  task_name: str = ""
  _cache: dict[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    self._jitted = jax.jit(self.embed_fn)

  def _prepare(self, raw: Mapping[str, Any]) -> dict[str, np.ndarray]:
    batch = dict(self.prepare(raw))
    if not batch:
      raise ValueError(f"prepare returned no model inputs for a raw batch of {sorted(raw)}; the "
                       f"modality names are image={self.image_modality!r}, "
                       f"text={self.text_modality!r}.")
    return batch

  def _embed(self, batches: Iterator[Mapping[str, np.ndarray]], modality: str) -> np.ndarray:
    out = embed.embed_dataset(self._jitted, batches, batch_size=self.batch_size, mesh=self.mesh,
                              batch_axes=self.batch_axes, jit=False)
    if modality not in out:
      raise ValueError(f"embed_fn returned modalities {sorted(out)}, not {modality!r}.")
    return out[modality]

  def source(self, config: Mapping[str, Any]) -> sources_lib.EvalSource:
    """The source a config names (built once per evaluation)."""
    key = "source:" + _key(config)
    if key not in self._cache:
      self._cache[key] = sources_lib.make_source(config, sources=self.sources)
    return self._cache[key]

  def load(self, config: Mapping[str, Any], *, image_key: str = "image"
           ) -> tuple[np.ndarray, dict[str, list[Any]]]:
    """Image embeddings `[num, dim]` and every other record field (as lists) of a source.

    Each record is read once per evaluation, whatever the number of tasks that use it.
    """
    key = f"load:{image_key}:" + _key(config)
    if key in self._cache:
      return self._cache[key]
    src = self.source(config).source
    if len(src) == 0:
      raise ValueError(f"Evaluation source {_key(config)} is empty.")
    fields: dict[str, list[Any]] = {}

    def batches():
      for chunk in embed.batched(range(len(src)), self.batch_size):
        records = [src[i] for i in chunk]
        missing = [k for k in (image_key,) if k not in records[0]]
        if missing:
          raise ValueError(f"Records of source {_key(config)} have no {missing[0]!r} field; "
                           f"fields: {sorted(records[0])}.")
        for r in records:
          for k, v in r.items():
            if k != image_key:
              fields.setdefault(k, []).append(v)
        raw = {self.image_modality: np.stack([np.asarray(r[image_key]) for r in records])}
        yield self._prepare(raw)

    self._cache[key] = (self._embed(batches(), self.image_modality), fields)
    return self._cache[key]

  def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
    """`[len(texts), dim]` text embeddings (each distinct string embedded once)."""
    if not len(texts):
      raise ValueError("No texts to embed.")
    unique, inverse = np.unique(np.asarray(texts, dtype=object).astype(str), return_inverse=True)
    todo = [t for t in unique if "text:" + t not in self._cache]
    if todo:
      batches = (self._prepare({self.text_modality: list(chunk)})
                 for chunk in embed.batched(todo, self.batch_size))
      for t, e in zip(todo, self._embed(batches, self.text_modality)):
        self._cache["text:" + t] = e
    return np.stack([self._cache["text:" + t] for t in unique])[inverse]
