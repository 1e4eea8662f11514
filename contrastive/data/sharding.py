"""Per-process batches to global `jax.Array`s sharded over the mesh's batch axes."""

from __future__ import annotations

from collections.abc import Sequence

import jax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
import numpy as np

from contrastive import parallel

# The batch's sharding is the mesh's business; it is re-exported here as `data.batch_sharding`.
from contrastive.parallel import batch_sharding


def to_global(
  batch: dict[str, np.ndarray],
  mesh_or_sharding: Mesh | NamedSharding,
  *,
  batch_axes: Sequence[str] = parallel.BATCH_AXES,
) -> dict[str, jax.Array]:
  """This process's batch to global `jax.Array`s sharded along the batch dimension.

  Every process calls it with its own batch of `b` rows; the result has `b * process_count`
  rows, split over the batch axes (`jax.make_array_from_process_local_data`).

  Args:
    batch: per-process arrays, leading dimension `b`.
    mesh_or_sharding: a mesh (sharded over the `batch_axes` it has) or a `NamedSharding`.
    batch_axes: the mesh axes of the batch dimension.

  Returns:
    A dict of the same keys; each value `[b * process_count, ...]`.
  """
  if isinstance(mesh_or_sharding, Mesh):
    sharding = batch_sharding(mesh_or_sharding, batch_axes=batch_axes)
  else:
    sharding = mesh_or_sharding
  spec = sharding.spec[0] if len(sharding.spec) else None
  axes = () if spec is None else ((spec,) if isinstance(spec, str) else tuple(spec))
  shards = int(np.prod([sharding.mesh.shape[a] for a in axes]))
  out = {}
  for key, value in batch.items():
    value = np.asarray(value)
    rows = value.shape[0] * jax.process_count()
    if rows % shards:
      raise ValueError(
        f"The global batch of {rows} rows ({key!r}: {value.shape[0]} per process x "
        f"{jax.process_count()} processes) does not divide over the {shards} "
        f"devices of mesh axes {axes}."
      )
    out[key] = jax.make_array_from_process_local_data(sharding, value)
  return out
