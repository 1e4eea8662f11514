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
  try:
    device_array = jax.experimental.mesh_utils.create_device_mesh(shape, devices)
  except Exception:  # noqa: BLE001  (simulated or odd topologies: a plain reshape is fine)
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
