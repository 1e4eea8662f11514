"""The ring engine: exact contrastive losses over a device mesh, tile by tile.

Most contrastive objectives are reductions over the tile of pairwise similarities
:math:`s_{ij} = x_i \\cdot y_j`: a log-sum-exp or a sum along rows (anchors in `x`) or columns
(anchors in `y`). A loss is described here by a :class:`TileLoss`:

* ``tile_fn(tile) -> {name: [rows, cols] values}``, the per-pair values to reduce;
* ``reductions = {name: "row_lse" | "row_sum" | "col_lse" | "col_sum" | "row_topk" |
  "col_topk"}``, how each is reduced (a top-k keeps the ``TileLoss.top_k`` largest values and
  their global ids, merged tile by tile and hop by hop: memory O(b * k));
* ``finalize_fn(home) -> scalar``, the device's share of the loss, from the reduced statistics of
  its own rows and columns and any per-sample terms (the positives, say).

The engine runs it without ever holding more than a ``[block_size, block_size]`` tile:

* each device keeps its `x` block; the `y` block and its side data travel a ring of
  :func:`jax.lax.ppermute` over ``axis_name``, each hop's transfer overlapping that hop's tiles,
  and the block's column accumulators follow it one hop behind and are home after ``N`` hops;
* inside a device, tiles of at most ``block_size`` rows and columns, with an online, max-shifted
  log-sum-exp;
* the backward pass (a :func:`jax.custom_vjp`) keeps only the inputs and the per-row and
  per-column statistics, recomputes each tile, takes ``dL/ds`` from the statistics through the
  VJP of ``tile_fn``, accumulates ``dx`` locally and sends ``dy`` home around the ring;
* a loss that is linear in its sums (``linear=True``, as SigLIP) needs no statistic before its
  gradient, so one fused pass produces value and gradients and the backward pass only scales them.

Memory per device is :math:`O(b \\cdot d + \\text{block\\_size}^2)` for a local batch `b`.
Gradients flow to `x`, `y`, the scalar ``params`` and the floating side data; integer side data
(labels, ids) rides along without gradient.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Literal

import jax
import jax.numpy as jnp

from contrastive.losses import ring_pass
from contrastive.losses.tile_loss import REDUCTIONS
from contrastive.losses.tile_loss import ReducedBlock
from contrastive.losses.tile_loss import Reduction
from contrastive.losses.tile_loss import Tile
from contrastive.losses.tile_loss import TileLoss

__all__ = [
  "DEFAULT_BLOCK_SIZE",
  "REDUCTIONS",
  "Precision",
  "ReducedBlock",
  "Reduction",
  "Tile",
  "TileLoss",
  "axis_size",
  "ring_loss",
  "ring_stats",
]

Precision = Literal["default", "high", "highest"] | jax.lax.Precision | None
DEFAULT_BLOCK_SIZE = 1024


def ring_loss(
  loss: TileLoss,
  x: jax.Array,
  y: jax.Array,
  params: Any,
  row: Any = None,
  col: Any = None,
  *,
  axis_name: str | tuple[str, ...] | None = None,
  block_size: int | None = None,
  precision: Precision = None,
) -> jax.Array:
  """The global loss described by ``loss``, the same scalar on every device of ``axis_name``.

  Args:
    loss: the tiles, reductions and finalization.
    x: [batch, dim] local rows (the whole batch when ``axis_name`` is None).
    y: [batch, dim] local columns; row ``i`` of ``y`` is the positive of row ``i`` of ``x``.
    params: pytree of scalars, replicated across devices; cast to float32.
    row, col: pytrees of per-sample side data with leading dimension ``batch``; ``col`` travels
      the ring with ``y``.
    axis_name: mesh axis (or axes) of ``jax.shard_map`` the batch is split over, or None.
    block_size: the largest tile side; None picks ``min(batch, 1024)``.
    precision: of every matrix product of the tiles (``jax.lax.Precision`` or its name), in
      both passes. None keeps the backend's default, which on TPU multiplies float32 inputs
      rounded to bfloat16 (one MXU pass, products accumulated in float32); ``"highest"`` is
      float32 throughout (six passes), ``"high"`` three bfloat16 passes. The CPU computes
      float32 at every setting.

  Returns:
    float32 scalar.
  """
  plan, params = _plan(loss, x, params, axis_name, block_size, precision)
  local = _local_loss(plan, x, y, params, row, col)
  return local if axis_name is None else jax.lax.psum(local, axis_name)


def ring_stats(
  loss: TileLoss,
  x: jax.Array,
  y: jax.Array,
  params: Any,
  row: Any = None,
  col: Any = None,
  *,
  axis_name: str | tuple[str, ...] | None = None,
  block_size: int | None = None,
  precision: Precision = None,
) -> dict[str, jax.Array]:
  """The reduced statistics of ``loss`` for the local rows and columns, without a gradient.

  What ``finalize_fn`` would see in ``ReducedBlock.stats`` (``{name: [b]}``, a top-k's
  ``[b, k]`` values and ids), from one forward pass around the ring: for a loss's batch
  statistics that are state rather than loss (iSogCLR's moving averages). Arguments as
  :func:`ring_loss`; ``loss.finalize_fn`` is not called.
  """
  x, y, params, row, col = jax.lax.stop_gradient((x, y, params, row, col))
  plan, params = _plan(loss, x, params, axis_name, block_size, precision)
  stats, _ = ring_pass.run_pass(plan, x, y, params, row, col, want_stats=True)
  return stats


# ----------------------------------------------------------------------------------------------
# Plumbing.


@dataclasses.dataclass(frozen=True)
class _Plan:
  loss: TileLoss
  axis_name: Any
  n_dev: int
  block: int
  precision: str | None = None  # a jax.default_matmul_precision name, None: the default


def _plan(loss, x, params, axis_name, block_size, precision) -> tuple[_Plan, Any]:
  """The plan of a ring over ``axis_name``, and ``params`` as float32, varying over it."""
  b = ring_pass.local_batch(x)
  bs = min(b, DEFAULT_BLOCK_SIZE) if block_size is None else min(b, block_size)
  params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float32), params)
  if axis_name is not None:
    params = jax.tree.map(lambda p: ring_pass.vary(p, axis_name), params)
  plan = _Plan(
    loss=loss,
    axis_name=axis_name,
    n_dev=axis_size(axis_name),
    block=bs,
    precision=_precision_name(precision),
  )
  return plan, params


def _precision_name(precision) -> str | None:
  if precision is None or isinstance(precision, jax.lax.Precision):
    return None if precision is None else precision.name.lower()
  if isinstance(precision, str) and precision.upper() in jax.lax.Precision.__members__:
    return precision.lower()
  raise ValueError(
    f"precision={precision!r}; known: None, a jax.lax.Precision, or one of "
    f"{[p.name.lower() for p in jax.lax.Precision]}."
  )


def axis_size(axis_name: str | tuple[str, ...] | None) -> int:
  """How many devices the batch is split over: the size of mesh axis (or axes) ``axis_name``
  of the enclosing ``jax.shard_map``, 1 for None; a clear error where it is not bound."""
  if axis_name is None:
    return 1
  try:
    return jax.lax.axis_size(axis_name)
  except NameError as e:
    raise ValueError(
      f"axis_name={axis_name!r} is not bound: a ring loss with an axis_name must be called "
      "inside jax.shard_map over a mesh with that axis (or wrapped by "
      "contrastive.parallel.shard_loss, which does so for global arrays). For a whole batch on "
      "one device, pass axis_name=None."
    ) from e


# ----------------------------------------------------------------------------------------------
# The custom VJP.


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _local_loss(plan, x, y, params, row, col):
  return _local_loss_fwd(plan, x, y, params, row, col)[0]


def _local_loss_fwd(plan, x, y, params, row, col):
  if plan.loss.linear:
    cts = _stat_cotangents(plan, x, y, params, row, col)
    stats, grads = ring_pass.run_pass(plan, x, y, params, row, col, cts=cts, want_stats=True)
    home_loss, finalize_vjp = _finalize_vjp(plan, stats, x, y, params, row, col)
    # finalize_fn's own terms in x, y, params and side data (beyond the statistics).
    _, *home_grads = finalize_vjp(ring_pass.vary(jnp.ones((), jnp.float32), plan.axis_name))
    grads = tuple(ring_pass.tree_add(g, h) for g, h in zip(grads, home_grads))
    return home_loss, (grads, x, y, row, col)
  stats, _ = ring_pass.run_pass(plan, x, y, params, row, col, want_stats=True)
  home_loss, _ = _finalize_vjp(plan, stats, x, y, params, row, col)
  return home_loss, (stats, x, y, params, row, col)


def _local_loss_bwd(plan, residuals, g):
  if plan.loss.linear:
    grads, x, y, row, col = residuals
    dx, dy, dparams, drow, dcol = jax.tree.map(lambda a: a * g, grads)
  else:
    stats, x, y, params, row, col = residuals
    _, finalize_vjp = _finalize_vjp(plan, stats, x, y, params, row, col)
    cts, dx_h, dy_h, dparams_h, drow_h, dcol_h = finalize_vjp(g)
    _, (dx, dy, dparams, drow, dcol) = ring_pass.run_pass(
      plan, x, y, params, row, col, stats=stats, cts=cts, want_stats=False
    )
    dx, dy = ring_pass.tree_add(dx, dx_h), ring_pass.tree_add(dy, dy_h)
    drow, dcol = ring_pass.tree_add(drow, drow_h), ring_pass.tree_add(dcol, dcol_h)
    dparams = ring_pass.tree_add(dparams, dparams_h)
  cast = lambda grads, like: jax.tree.map(lambda g, a: g.astype(a.dtype), grads, like)
  return (
    cast(dx, x),
    cast(dy, y),
    dparams,
    ring_pass.float_cotangent(row, drow),
    ring_pass.float_cotangent(col, dcol),
  )


_local_loss.defvjp(_local_loss_fwd, _local_loss_bwd)


def _finalize_vjp(plan, stats, x, y, params, row, col):
  """The device's loss share and the VJP of finalize_fn in (stats, x, y, params, floats)."""
  b = ring_pass.local_batch(x)
  ids = ring_pass.axis_index(plan.axis_name) * b + jnp.arange(b, dtype=jnp.int32)
  row_f, rebuild_row = ring_pass.split_float(row)
  col_f, rebuild_col = ring_pass.split_float(col)
  # A top-k reduction's ids are integer statistics: they ride along without a cotangent.
  ids_stats = {n: v for n, v in stats.items() if n not in plan.loss.reductions}
  stats = {n: v for n, v in stats.items() if n in plan.loss.reductions}

  def finalize(stats, x, y, params, row_f, col_f):
    home = ReducedBlock(
      stats={**stats, **ids_stats},
      x=x,
      y=y,
      params=params,
      row=rebuild_row(row_f),
      col=rebuild_col(col_f),
      ids=ids,
      global_batch=b * plan.n_dev,
    )
    return jnp.asarray(plan.loss.finalize_fn(home), jnp.float32)

  value, vjp = jax.vjp(finalize, stats, x, y, params, row_f, col_f)
  return value, vjp


def _stat_cotangents(plan, x, y, params, row, col):
  """dL/dstats of a linear loss: constant, so read off at zero statistics."""
  b = ring_pass.local_batch(x)
  zeros = {
    name: ring_pass.vary(jnp.zeros((b,), jnp.float32), plan.axis_name)
    for name in plan.loss.reductions
  }
  _, vjp = _finalize_vjp(plan, zeros, x, y, params, row, col)
  return vjp(ring_pass.vary(jnp.ones((), jnp.float32), plan.axis_name))[0]
