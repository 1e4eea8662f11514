"""Meshes and the bridge from global arrays to per-device losses.

A loss in `contrastive.losses` is written for the local shard of the batch and reaches the other
devices itself (a ring of `ppermute` over `axis_name`). `shard_loss` wraps such a loss so it can be
called on global, batch-sharded `jax.Array`s, which is what a jitted train step holds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import functools
from typing import Any

import jax
from jax.experimental import mesh_utils
from jax.sharding import Mesh, PartitionSpec as P
import numpy as np

MESH_AXES = ("data", "fsdp", "tensor")


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
          f"{fixed}).")
    sizes[free[0]] = len(devices) // fixed
  shape = tuple(sizes[name] for name in MESH_AXES)
  if int(np.prod(shape)) != len(devices):
    raise ValueError(f"Mesh shape {dict(zip(MESH_AXES, shape))} needs {int(np.prod(shape))} "
                     f"devices, but {len(devices)} are available.")
  try:  # a layout that follows the physical interconnect, where the platform describes one
    device_array = mesh_utils.create_device_mesh(shape, devices)
  except (ValueError, NotImplementedError, AssertionError):
    device_array = np.asarray(devices, dtype=object).reshape(shape)
  return Mesh(device_array, MESH_AXES,
              axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES))


def _axis_size(mesh: Mesh, axis: str | Sequence[str]) -> int:
  names = (axis,) if isinstance(axis, str) else tuple(axis)
  for name in names:
    if name not in mesh.shape:
      raise ValueError(f"Axis {name!r} is not in the mesh, whose axes are {tuple(mesh.shape)}.")
  return int(np.prod([mesh.shape[name] for name in names]))


def shard_loss(loss_fn: Callable[..., jax.Array], mesh: Mesh, axis: str | Sequence[str] = "data"
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
          f"divisible by the {n} devices of mesh axis {axis!r}.")
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

import contextlib  # noqa: E402  (this section was appended to the module; its imports are here)

from absl import logging  # noqa: E402
import flax.linen as nn  # noqa: E402

LogicalRules = tuple[tuple[str, "str | tuple[str, ...] | None"], ...]

# (logical name, mesh axes), in priority order: an array dimension takes the first rule for its
# name whose mesh axes the array's other dimensions have not taken already. So an activation
# `[batch, length, embed]` puts `batch` on ("data", "fsdp") and leaves `embed` whole, while a
# parameter `[embed, mlp]` is split over `fsdp` (FSDP / ZeRO-3) and `tensor` (Megatron-style
# tensor parallelism). With `fsdp = tensor = 1` this is plain data parallelism.
LOGICAL_RULES: LogicalRules = (
    ("batch", ("data", "fsdp")),   # examples: data parallel, and FSDP's share of the batch
    ("embed", "fsdp"),             # the residual stream of parameters (not of activations)
    ("mlp", "tensor"),             # MLP hidden units
    ("heads", "tensor"),           # attention heads
    ("vocab", "tensor"),           # rows of token embedding tables
    ("kv", None),                  # per-head features
    ("length", None),              # tokens and patches
    ("joint", None),               # the shared embedding space of the towers
    ("layers", None),              # the stacked axis of scanned layers
)


def logical_spec(names: Sequence[str | None], *, rules: LogicalRules = LOGICAL_RULES) -> P:
  """The `PartitionSpec` that `rules` give an array whose dimensions have logical `names`."""
  return nn.logical_to_mesh_axes(tuple(names), rules)


def logical_sharding(names: Sequence[str | None], mesh: Mesh, *,
                     rules: LogicalRules = LOGICAL_RULES) -> jax.sharding.NamedSharding:
  """A `NamedSharding` for one array (an input batch, an activation) with logical `names`.

  Example:
    >>> images = jax.device_put(images, logical_sharding(("batch", None, None, None), mesh))
  """
  return jax.sharding.NamedSharding(mesh, logical_spec(names, rules=rules))


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
      return jax.sharding.NamedSharding(mesh, P())
    spec, dims = _fit_spec(spec, np.shape(leaf.value), mesh)
    for dim in dims:
      whole.setdefault(dim, []).append(jax.tree_util.keystr(path))
    return jax.sharding.NamedSharding(mesh, spec)

  shardings = jax.tree_util.tree_map_with_path(
      one, tree, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  for dim, paths in whole.items():
    logging.warning("%d parameters have a dimension of %s that does not divide evenly; it is "
                    "left whole (first: %s).", len(paths), dim, paths[0])
  return shardings


@contextlib.contextmanager
def use_rules(mesh: Mesh, *, rules: LogicalRules = LOGICAL_RULES):
  """The context in which to trace (jit) a model so its logical constraints shard activations.

  Sets `mesh` as the current mesh (`jax.set_mesh`) and `rules` as flax's logical axis rules.
  Outside it, the models' `with_logical_constraint` calls are no-ops.
  """
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield


def sharded_init(init_fn: Callable[..., Any], mesh: Mesh, *args,
                 rules: LogicalRules = LOGICAL_RULES) -> tuple[Any, Any]:
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
