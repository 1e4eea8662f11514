"""Embedding an evaluation set with any model: fixed-size batches on the mesh, padding dropped."""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Mapping, Sequence

import jax
from jax.sharding import Mesh
import numpy as np

from contrastive import parallel
from contrastive.evaluate import _common

EmbedFn = Callable[[dict[str, jax.Array]], Mapping[str, jax.Array]]


def pad_batch(
  batch: Mapping[str, np.ndarray], batch_size: int
) -> tuple[dict[str, np.ndarray], int]:
  """Pads every array to `batch_size` rows by repeating its last row.

  Repeating a real example (rather than zeros) keeps the padding rows finite through any
  normalization in the model. Returns the padded batch and the number of real rows.
  """
  sizes = {k: len(v) for k, v in batch.items()}
  if not sizes:
    raise ValueError("Empty batch: no arrays.")
  n = next(iter(sizes.values()))
  if len(set(sizes.values())) > 1 or not 0 < n <= batch_size:
    raise ValueError(
      f"Every array of a batch needs the same leading size in [1, {batch_size}], got {sizes}."
    )
  out = {}
  for k, v in batch.items():
    v = np.asarray(v)
    out[k] = np.concatenate([v, np.repeat(v[-1:], batch_size - n, axis=0)]) if n < batch_size else v
  return out, n


def embed_dataset(
  embed_fn: EmbedFn,
  batches: Iterable[Mapping[str, np.ndarray]],
  *,
  batch_size: int,
  mesh: Mesh | None = None,
  batch_axes: Sequence[str] = parallel.BATCH_AXES,
  jit: bool = False,
) -> dict[str, np.ndarray]:
  """Embeds every batch with `embed_fn` and concatenates the outputs on the host.

  Every batch is padded to exactly `batch_size` rows (its last row repeated), so `embed_fn` is
  compiled once; with a `mesh` the padded batch is placed with its leading dimension split over
  `batch_axes`. The rows of padding are dropped from the outputs. Every process feeds the same
  batches (evaluation sets are small); outputs spanning processes are gathered.

  Args:
    embed_fn: `batch -> {modality: [batch_size, dim]}`; the model with its parameters bound, e.g.
      `jax.jit(lambda b: model.apply(params, b, train=False)[0])`, jitted by the caller (it may
      need a context around the jitted call, such as `parallel.use_rules(mesh)`).
    batches: an iterable of dicts of host arrays with equal leading sizes, at most `batch_size`.
    batch_size: the fixed batch size; with a mesh, divisible by the size of the batch axes.
    mesh: optional; where to place the batches.
    batch_axes: the mesh axes the batch dimension is split over.
    jit: wrap `embed_fn` in `jax.jit` here (for an un-jitted function).

  Returns:
    `{modality: [num_examples, dim]}` float32 host arrays.

  Example:
    >>> emb = embed_dataset(lambda b: {"image": model.apply(p, b["image"])}, batches,
    ...                     batch_size=64, mesh=mesh)
  """
  if int(batch_size) < 1:
    raise ValueError(f"batch_size must be positive, got {batch_size!r}.")
  sharding = None
  if mesh is not None:
    sharding = parallel.batch_sharding(mesh, batch_axes=batch_axes)
    shards = parallel.batch_shards(mesh, batch_axes)
    if batch_size % shards:
      raise ValueError(
        f"batch_size {batch_size} is not divisible by the {shards} devices of the "
        f"batch axes {sharding.spec[0]}."
      )
  fn = jax.jit(embed_fn) if jit else embed_fn
  outputs = collections.defaultdict(list)
  for batch in batches:
    padded, n = pad_batch(batch, batch_size)
    if sharding is not None:
      padded = jax.device_put(padded, sharding)
    emb = fn(padded)
    if not isinstance(emb, Mapping):
      raise ValueError(
        f"embed_fn must return a dict of modality to [batch, dim] arrays, got {type(emb).__name__}."
      )
    for k, v in emb.items():
      v = _common.to_host(v)
      if v.ndim != 2 or len(v) != batch_size:
        raise ValueError(f"embed_fn output {k!r} must be [{batch_size}, dim], got {v.shape}.")
      outputs[k].append(v[:n].astype(np.float32))
  if not outputs:
    raise ValueError("No batches to embed.")
  return {k: np.concatenate(v) for k, v in outputs.items()}


def batched(items: Sequence, batch_size: int) -> Iterable[Sequence]:
  """Consecutive slices of `items` of `batch_size` (the last may be shorter)."""
  for start in range(0, len(items), batch_size):
    yield items[start : start + batch_size]
