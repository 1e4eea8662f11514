"""What the evaluation tasks share: the model's embed function, input preparation, and a cache.

The model is reached only through two callables, so nothing here depends on its class:

- `embed_fn(batch) -> {modality: [batch, dim]}`: the model with its parameters bound, e.g.
  `jax.jit(lambda b: model.apply({"params": params}, b, train=False)[0])` for a `TowerModel`.
  The caller jits it (it may need a context around the jitted call, such as
  `parallel.use_rules(mesh)`); `jit=True` jits a plain function here instead.
- `prepare(raw) -> batch`: turns a raw batch, `{image_modality: list of b images}` (each as
  the source stores it: a uint8 `[H, W, C]` array, or encoded bytes) or `{text_modality: list
  of b str}`, into the model's inputs (decoding, resizing, normalization, tokenization), the
  same transforms as the training pipeline.

Records carrying an `"__error__"` field (unreadable, as `contrastive.data`'s sources mark them)
are skipped with a warning.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
import dataclasses
import json
from typing import Any

from absl import logging
import jax
from jax.sharding import Mesh
import ml_collections
import numpy as np

from contrastive import parallel
from contrastive.evaluate import embed
from contrastive.evaluate import similarity
from contrastive.evaluate import sources as sources_lib

ERROR_KEY = "__error__"  # as contrastive.data.transforms.ERROR_KEY

Prepare = Callable[[Mapping[str, Any]], Mapping[str, np.ndarray]]


def _key(config: Any) -> str:
  if isinstance(config, ml_collections.ConfigDict):
    config = config.to_dict()
  return json.dumps(config, sort_keys=True, default=str)


@dataclasses.dataclass
class Context:
  """The model and options the tasks of one evaluation share, with caches.

  Attributes:
    embed_fn: `batch -> {modality: [batch, dim]}`, jitted by the caller (or set `jit`).
    prepare: raw batch -> model inputs (see the module docstring).
    batch_size: the fixed evaluation batch size (divisible by the mesh's batch axes).
    mesh: optional mesh to place the batches on and to split the similarity rows over.
    batch_axes: the mesh axes of the batch dimension.
    image_modality, text_modality: the model's names for the two modalities.
    sources: extra source factories by name (see `sources.make_source`).
    block_size: the largest similarity tile.
    jit: wrap `embed_fn` in `jax.jit` here.
    logit_scale: the model's logit scale (`exp(log_scale)`), for tasks that score with the
      model's own softmax (zero-shot `ensemble="marginal"`); None if unknown.
    caption_fn: for a model with a captioning decoder, `(images, method=, beam_size=) ->
      [batch, max_len]` generated token ids (`models.generate`); None: no decoder.
    pairs: paired `(image, text)` embeddings kept for the report, by task name.
    task_name: the task running now (set by `run_tasks`).
  """

  embed_fn: Callable[[dict[str, jax.Array]], Mapping[str, jax.Array]]
  prepare: Prepare
  batch_size: int
  mesh: Mesh | None = None
  batch_axes: Sequence[str] = parallel.BATCH_AXES
  image_modality: str = "image"
  text_modality: str = "text"
  sources: Mapping[str, Callable[..., Any]] | None = None
  block_size: int = similarity.DEFAULT_BLOCK_SIZE
  jit: bool = False
  logit_scale: float | None = None
  caption_fn: Callable[..., Any] | None = None
  pairs: dict[str, tuple[np.ndarray, np.ndarray]] = dataclasses.field(default_factory=dict)
  task_name: str = ""
  _cache: dict[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    self._fn = jax.jit(self.embed_fn) if self.jit else self.embed_fn

  def _prepare(self, raw: Mapping[str, Any]) -> dict[str, np.ndarray]:
    batch = dict(self.prepare(raw))
    if not batch:
      raise ValueError(
        f"prepare returned no model inputs for a raw batch of {sorted(raw)}; the "
        f"modality names are image={self.image_modality!r}, "
        f"text={self.text_modality!r}."
      )
    return batch

  def prepare_inputs(self, raw: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Model inputs of a raw batch (`prepare`), checked."""
    return self._prepare(raw)

  def _embed(self, batches: Iterator[Mapping[str, np.ndarray]], modality: str) -> np.ndarray:
    out = embed.embed_dataset(
      self._fn,
      batches,
      batch_size=self.batch_size,
      mesh=self.mesh,
      batch_axes=self.batch_axes,
      jit=False,
    )
    if modality not in out:
      raise ValueError(f"embed_fn returned modalities {sorted(out)}, not {modality!r}.")
    return out[modality]

  def source(self, config: Mapping[str, Any]) -> sources_lib.EvalSource:
    """The source a config names (built once per evaluation)."""
    key = "source:" + _key(config)
    if key not in self._cache:
      self._cache[key] = sources_lib.make_source(config, sources=self.sources)
    return self._cache[key]

  def load(
    self, config: Mapping[str, Any], *, image_key: str = "image"
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
        bad = [r for r in records if ERROR_KEY in r]
        if bad:
          logging.warning(
            "Skipping %d unreadable record(s) of %s, e.g. %s",
            len(bad),
            _key(config),
            bad[0][ERROR_KEY],
          )
          records = [r for r in records if ERROR_KEY not in r]
          if not records:
            continue
        if image_key not in records[0]:
          raise ValueError(
            f"Records of source {_key(config)} have no {image_key!r} field; "
            f"fields: {sorted(records[0])}."
          )
        for r in records:
          for k, v in r.items():
            if k != image_key:
              fields.setdefault(k, []).append(v)
        yield self._prepare({self.image_modality: [r[image_key] for r in records]})

    self._cache[key] = (self._embed(batches(), self.image_modality), fields)
    return self._cache[key]

  def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
    """`[len(texts), dim]` text embeddings (each distinct string embedded once)."""
    if not len(texts):
      raise ValueError("No texts to embed.")
    unique, inverse = np.unique(np.asarray(texts, dtype=object).astype(str), return_inverse=True)
    todo = [t for t in unique if "text:" + t not in self._cache]
    if todo:
      batches = (
        self._prepare({self.text_modality: list(chunk)})
        for chunk in embed.batched(todo, self.batch_size)
      )
      for t, e in zip(todo, self._embed(batches, self.text_modality)):
        self._cache["text:" + t] = e
    return np.stack([self._cache["text:" + t] for t in unique])[inverse]
