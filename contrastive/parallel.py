"""Meshes, where arrays go on them, and the bridge to per-device losses.

- `make_mesh`: the `("data", "fsdp", "tensor")` mesh every part of the library uses.
- `BATCH_AXES`, `batch_axes`, `batch_shards`, `batch_sharding`: the leading (batch) dimension of
  inputs, embeddings and queues is split over `data` and `fsdp` (those the mesh has).
- `shard_loss`: a loss in `contrastive.losses` is written for the local shard of the batch and
  reaches the other devices itself (a ring of `ppermute` over `axis_name`); `shard_loss` wraps it
  so it can be called on global, batch-sharded `jax.Array`s, which is what a jitted step holds.
- `LOGICAL_RULES`, `logical_shardings`, `use_rules`, `sharded_init`: model code names the axes
  of its parameters and activations; one table decides where they go on the mesh.

Connecting the processes of a multi-host run is `contrastive.multihost`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import contextlib
import functools
from typing import Any

from absl import logging
import flax.linen as nn
import jax
from jax.experimental import mesh_utils
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

MESH_AXES = ("data", "fsdp", "tensor")
# The mesh axes the batch dimension is split over: data parallelism, and FSDP's share of it.
BATCH_AXES = ("data", "fsdp")


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, *, devices=None) -> Mesh:
  """A mesh with axes `("data", "fsdp", "tensor")` and automatic axis types.

  Args:
    data, fsdp, tensor: the size of each axis; one of them may be `-1`, which takes the devices
      that the others leave.
    devices: the devices to lay out (default: `jax.devices()`, every process's).

  Returns:
    A `jax.sharding.Mesh` of shape `(data, fsdp, tensor)`.
  """
  devices = list(jax.devices() if devices is None else devices)
  sizes = {"data": data, "fsdp": fsdp, "tensor": tensor}
  free = [name for name, size in sizes.items() if size == -1]
  if len(free) > 1:
    raise ValueError(f"Only one mesh axis may be -1, got {sizes}.")
  for name, size in sizes.items():
    if size != -1 and (not isinstance(size, (int, np.integer)) or size < 1):
      raise ValueError(f"Mesh axis {name!r} must be a positive int or -1, got {size!r}.")
  fixed = int(np.prod([s for s in sizes.values() if s != -1]))
  if free:
    if len(devices) % fixed:
      raise ValueError(
        f"{len(devices)} devices do not divide into mesh axes {sizes} (the fixed axes take "
        f"{fixed})."
      )
    sizes[free[0]] = len(devices) // fixed
  shape = tuple(sizes[name] for name in MESH_AXES)
  if int(np.prod(shape)) != len(devices):
    raise ValueError(
      f"Mesh shape {dict(zip(MESH_AXES, shape))} needs {int(np.prod(shape))} "
      f"devices, but {len(devices)} are available."
    )
  # The batch axes in ring order, so that every hop of the loss's ring is one link; not with
  # FSDP, whose all-gathers over every `fsdp`-th chip of such a cycle v5e's compiler cannot
  # route ("Failed to create limited ICI routing replica info table").
  cycle = ring_order(devices) if sizes["tensor"] == 1 and sizes["fsdp"] == 1 else None
  if cycle is not None:
    device_array = np.asarray(cycle, dtype=object).reshape(shape)
  else:
    try:  # a layout that follows the physical interconnect, where the platform describes one
      device_array = mesh_utils.create_device_mesh(shape, devices)
    except (ValueError, NotImplementedError, AssertionError):
      device_array = np.asarray(devices, dtype=object).reshape(shape)
  return Mesh(device_array, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES))


def ring_order(devices: Sequence[Any]) -> list[Any] | None:
  """The chips of a flat X x Y TPU grid as a cycle through neighbours, or None for other devices.

  The losses' ring sends each block to the next device of the batch axes and the last device
  back to the first. On a 2-D grid of chips (v5e, v6e) XLA:TPU makes a collective-permute
  asynchronous, so that it overlaps the tile compute, only where each source and target are
  neighbours; a row-by-row order jumps at every row's end and compiles to synchronous transfers.
  The cycle runs along the first row, snakes back and forth over the other columns of the rows
  below, and returns up the first column; it needs one side even and both at least 2.

  Args:
    devices: the mesh's devices; TPU devices carry `coords` (x, y, z) and `core_on_chip`.

  Returns:
    The devices in cycle order, or None where they are not one core per chip of a flat grid
    (CPU and GPU devices, 3-D slices, a grid with both sides odd, a single row or column).
  """
  coords = [getattr(d, "coords", None) for d in devices]
  if any(c is None or len(c) < 2 for c in coords) or len(devices) < 4:
    return None
  if any(getattr(d, "core_on_chip", 0) for d in devices) or any(
    c[2:] and any(c[2:]) for c in coords
  ):
    return None
  by_xy = {(int(c[0]), int(c[1])): d for c, d in zip(coords, devices)}
  xs = sorted({x for x, _ in by_xy})
  ys = sorted({y for _, y in by_xy})
  if len(by_xy) != len(devices) or len(xs) * len(ys) != len(devices):
    return None
  transpose = len(ys) % 2 == 1  # the snake must cover an odd number of rows below the first
  if transpose:
    xs, ys = ys, xs
  if len(ys) % 2 or len(xs) < 2 or len(ys) < 2:
    return None
  cycle = [(x, ys[0]) for x in xs]
  for row, y in enumerate(ys[1:]):
    cycle += [(x, y) for x in (reversed(xs[1:]) if row % 2 == 0 else xs[1:])]
  cycle += [(xs[0], y) for y in reversed(ys[1:])]
  return [by_xy[(y, x) if transpose else (x, y)] for x, y in cycle]


# The batch dimension.
# ------------------------------------------------------------------------------------------------


def _present(mesh: Mesh, axes: Sequence[str]) -> tuple[str, ...]:
  present = tuple(a for a in axes if a in mesh.axis_names)
  if not present:
    raise ValueError(
      f"None of the batch axes {tuple(axes)} is in the mesh, whose axes are "
      f"{tuple(mesh.axis_names)}."
    )
  return present


def batch_axes(mesh: Mesh, axes: Sequence[str] = BATCH_AXES) -> tuple[str, ...]:
  """Those of `axes` that `mesh` has, in order; at least one must be there."""
  return _present(mesh, axes)


def batch_shards(mesh: Mesh, axes: Sequence[str] = BATCH_AXES) -> int:
  """How many pieces the batch dimension is cut into: the product of `batch_axes`' sizes."""
  return int(np.prod([mesh.shape[a] for a in _present(mesh, axes)]))


def batch_sharding(mesh: Mesh, *, batch_axes: Sequence[str] = BATCH_AXES) -> NamedSharding:
  """`NamedSharding(mesh, P(axes))`: the leading dimension split over the `batch_axes` that
  `mesh` has, the others replicated."""
  return NamedSharding(mesh, P(_present(mesh, batch_axes)))


# Ring losses on global arrays.
# ------------------------------------------------------------------------------------------------


def _axis_size(mesh: Mesh, axis: str | Sequence[str]) -> int:
  names = (axis,) if isinstance(axis, str) else tuple(axis)
  for name in names:
    if name not in mesh.shape:
      raise ValueError(f"Axis {name!r} is not in the mesh, whose axes are {tuple(mesh.shape)}.")
  return int(np.prod([mesh.shape[name] for name in names]))


def shard_loss(
  loss_fn: Callable[..., jax.Array], mesh: Mesh, axis: str | Sequence[str] = "data"
) -> Callable[..., jax.Array]:
  """Wraps a ring loss for global arrays whose leading (batch) dimension is sharded over `axis`.

  Array arguments with at least one dimension are split along their first dimension over `axis`
  (sequences of arrays, as the n-modal losses take, too); scalars are replicated. Keyword
  arguments pass through to `loss_fn`, which is called inside `jax.shard_map` with
  `axis_name=axis`, and the scalar it returns (the same on every device) is the result.

  Example:
    >>> mesh = make_mesh()
    >>> fn = shard_loss(losses.softmax_loss, mesh, axis="data")
    >>> loss = fn(x_global, y_global, scale)   # jit- and grad-able
  """
  axis = axis if isinstance(axis, str) else tuple(axis)
  n = _axis_size(mesh, axis)

  def spec(leaf: Any) -> P:
    ndim = np.ndim(leaf)
    if ndim == 0:
      return P()
    if leaf.shape[0] % n:
      raise ValueError(
        f"The batch dimension {leaf.shape[0]} of an argument of shape {tuple(leaf.shape)} is not "
        f"divisible by the {n} devices of mesh axis {axis!r}."
      )
    return P(axis)

  @functools.wraps(loss_fn)
  def wrapped(*args, **kwargs):
    in_specs = jax.tree.map(spec, args)
    body = lambda *a: loss_fn(*a, axis_name=axis, **kwargs)
    return jax.shard_map(body, mesh=mesh, in_specs=in_specs, out_specs=P())(*args)

  return wrapped


# Logical axis rules: model code names the axes of its parameters and activations (`batch`,
# `embed`, `mlp`, ...); this one table decides where they go on the mesh.
# ------------------------------------------------------------------------------------------------

LogicalRules = tuple[tuple[str, "str | tuple[str, ...] | None"], ...]

# (logical name, mesh axes), in priority order: an array dimension takes the first rule for its
# name whose mesh axes the array's other dimensions have not taken already. So an activation
# `[batch, length, embed]` puts `batch` on `BATCH_AXES` and leaves `embed` whole, while a
# parameter `[embed, mlp]` is split over `fsdp` (FSDP / ZeRO-3) and `tensor` (Megatron-style
# tensor parallelism). With `fsdp = tensor = 1` this is plain data parallelism.
LOGICAL_RULES: LogicalRules = (
  ("batch", BATCH_AXES),  # examples: data parallel, and FSDP's share of the batch
  ("embed", "fsdp"),  # the residual stream of parameters (not of activations)
  ("mlp", "tensor"),  # MLP hidden units
  ("heads", "tensor"),  # attention heads
  ("vocab", "tensor"),  # rows of token embedding tables
  ("kv", None),  # per-head features
  ("length", None),  # tokens and patches
  ("joint", None),  # the shared embedding space of the towers
  ("layers", None),  # the stacked axis of scanned layers
)


def logical_spec(names: Sequence[str | None], *, rules: LogicalRules = LOGICAL_RULES) -> P:
  """The `PartitionSpec` that `rules` give an array whose dimensions have logical `names`."""
  return nn.logical_to_mesh_axes(tuple(names), rules)


def logical_sharding(
  names: Sequence[str | None], mesh: Mesh, *, rules: LogicalRules = LOGICAL_RULES
) -> NamedSharding:
  """A `NamedSharding` for one array (an input batch, an activation) with logical `names`.

  Example:
    >>> images = jax.device_put(images, logical_sharding(("batch", None, None, None), mesh))
  """
  return NamedSharding(mesh, logical_spec(names, rules=rules))


def _fit_spec(spec: P, shape: Sequence[int], mesh: Mesh) -> tuple[P, list[str]]:
  """`spec` with every dimension its mesh axes do not divide evenly left whole, and what was."""
  fitted, whole = [], []
  for dim, axes in enumerate(tuple(spec) + (None,) * (len(shape) - len(spec))):
    names = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
    ways = int(np.prod([mesh.shape[a] for a in names])) if names else 1
    if ways > 1 and shape[dim] % ways:
      whole.append(f"size {shape[dim]} over {'x'.join(names)} ({ways} ways)")
      axes = None
    fitted.append(axes)
  return P(*fitted), whole


def logical_shardings(tree: Any, mesh: Mesh, *, rules: LogicalRules = LOGICAL_RULES) -> Any:
  """`NamedSharding`s for a pytree whose leaves carry logical axis names.

  A dimension whose size the mesh axes do not divide (3 heads over `tensor=2`) is left whole,
  with one logged warning, so every model runs on every mesh.

  Args:
    tree: variables as `model.init` returns them, or `jax.eval_shape(model.init, ...)` (leaves
      boxed in `flax.linen.LogicallyPartitioned`); unboxed leaves are replicated.
    mesh: the mesh.
    rules: the logical-to-mesh rules.

  Returns:
    A pytree of `NamedSharding` with the structure of `flax.linen.unbox(tree)`.
  """
  whole = {}

  def one(path, leaf):
    if isinstance(leaf, nn.LogicallyPartitioned):
      spec = logical_spec(leaf.names, rules=rules)
    elif isinstance(leaf, nn.Partitioned):
      spec = P(*leaf.names)
    else:
      return NamedSharding(mesh, P())
    spec, dims = _fit_spec(spec, np.shape(leaf.value), mesh)
    for dim in dims:
      whole.setdefault(dim, []).append(jax.tree_util.keystr(path))
    return NamedSharding(mesh, spec)

  shardings = jax.tree_util.tree_map_with_path(
    one, tree, is_leaf=lambda x: isinstance(x, nn.Partitioned)
  )
  for dim, paths in whole.items():
    logging.warning(
      "%d parameters have a dimension of %s that does not divide evenly; it is "
      "left whole (first: %s).",
      len(paths),
      dim,
      paths[0],
    )
  return shardings


@contextlib.contextmanager
def use_rules(mesh: Mesh, *, rules: LogicalRules = LOGICAL_RULES):
  """The context in which to trace (jit) a model so its logical constraints shard activations.

  Sets `mesh` as the current mesh (`jax.set_mesh`) and `rules` as flax's logical axis rules.
  Outside it, the models' `with_logical_constraint` calls are no-ops.
  """
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield


def sharded_init(
  init_fn: Callable[..., Any], mesh: Mesh, *args, rules: LogicalRules = LOGICAL_RULES
) -> tuple[Any, Any]:
  """Runs `init_fn(*args)` (e.g. `model.init`) with every parameter created in its sharding.

  No device ever holds a whole unsharded parameter tree.

  Returns:
    `(variables, shardings)`: the unboxed variables (plain `jax.Array`s laid out by `rules`) and
    their `NamedSharding` pytree, ready for `jax.jit(..., in_shardings=...)`.
  """
  abstract = jax.eval_shape(init_fn, *args)
  shardings = logical_shardings(abstract, mesh, rules=rules)
  with use_rules(mesh, rules=rules):
    variables = jax.jit(lambda *a: nn.unbox(init_fn(*a)), out_shardings=shardings)(*args)
  return variables, shardings
