"""Per-process batches to global `jax.Array`s sharded over the mesh's batch axes."""

from __future__ import annotations

from collections.abc import Sequence

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np


def batch_axes_of(mesh: Mesh, batch_axes: Sequence[str]) -> tuple[str, ...]:
  """The `batch_axes` that `mesh` has; at least one must be there."""
  axes = tuple(a for a in batch_axes if a in mesh.axis_names)
  if not axes:
    raise ValueError(f"None of the batch axes {tuple(batch_axes)} is in the mesh, whose axes are "
                     f"{tuple(mesh.axis_names)}.")
  return axes


def batch_shards(mesh: Mesh, batch_axes: Sequence[str]) -> int:
  """How many devices the batch dimension is split over."""
  return int(np.prod([mesh.shape[a] for a in batch_axes_of(mesh, batch_axes)]))


def batch_sharding(mesh: Mesh, *, batch_axes: Sequence[str] = ("data", "fsdp")) -> NamedSharding:
  """`NamedSharding(mesh, P(axes))` over the `batch_axes` present in `mesh`."""
  return NamedSharding(mesh, P(batch_axes_of(mesh, batch_axes)))


def to_global(batch: dict[str, np.ndarray], mesh_or_sharding: Mesh | NamedSharding, *,
              batch_axes: Sequence[str] = ("data", "fsdp")) -> dict[str, jax.Array]:
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
      raise ValueError(f"The global batch of {rows} rows ({key!r}: {value.shape[0]} per process x "
                       f"{jax.process_count()} processes) does not divide over the {shards} "
                       f"devices of mesh axes {axes}.")
    out[key] = jax.make_array_from_process_local_data(sharding, value)
  return out
