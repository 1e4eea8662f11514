"""What a ring loss is: the tile of pairs it sees, the reduced block it finishes from, and the
`TileLoss` that names its reductions (see `contrastive.losses.ring` for the engine that runs it)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
import dataclasses
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp

Reduction = Literal["row_lse", "row_sum", "col_lse", "col_sum", "row_topk", "col_topk"]
REDUCTIONS = ("row_lse", "row_sum", "col_lse", "col_sum", "row_topk", "col_topk")
# The id of an empty top-k slot: after every real id in the (value desc, id asc) order.
NO_ID = 2**31 - 1


class Tile(NamedTuple):
  """What ``tile_fn`` sees: one block of pairs and the data that travels with it."""

  x: Any  # [rows, dim] float32 tile of x (or a pytree of [rows, ...] leaves)
  y: Any  # [cols, dim] float32 tile of y (or a pytree of [cols, ...] leaves)
  params: Any  # pytree of float32 scalars (scale, bias, ...), the same on every device
  row: Any  # pytree of per-row side data, leaves [rows, ...]
  col: Any  # pytree of per-column side data, leaves [cols, ...]
  row_ids: jax.Array  # [rows] int32 position of each row in the global batch
  col_ids: jax.Array  # [cols] int32 position of each column in the global batch

  @property
  def sim(self) -> jax.Array:
    """[rows, cols] float32 similarities x_i . y_j (for array x and y)."""
    return jnp.dot(self.x, self.y.T, preferred_element_type=jnp.float32)

  @property
  def positive(self) -> jax.Array:
    """[rows, cols] bool, true where row and column are the same pair (the diagonal)."""
    return self.row_ids[:, None] == self.col_ids[None, :]


class ReducedBlock(NamedTuple):
  """What ``finalize_fn`` sees: one device's own samples and their complete statistics."""

  # name -> [b] float32 (log-sum-exp or sum over the whole batch); a top-k reduction gives
  # name -> [b, k] float32 values (descending) and name + "_ids" -> [b, k] int32 their ids
  stats: Mapping[str, jax.Array]
  x: Any  # [b, d] local rows, input dtype (or the pytree given)
  y: Any  # [b, d] local columns, input dtype
  params: Any
  row: Any
  col: Any
  ids: jax.Array  # [b] int32 global positions of the local samples
  global_batch: int  # B, the number of pairs on all devices together


@dataclasses.dataclass(frozen=True)
class TileLoss:
  """A contrastive loss written as reductions over similarity tiles.

  A ``row_topk`` reduction keeps, per row, the ``top_k`` largest values of its tile quantity over
  the whole global batch, with their column ids (``Tile.col_ids``); ``col_topk`` the same per
  column, with row ids. Ties go to the smaller id, so the result does not depend on the tiling or
  the device count. A top-k tile value may also be ``[rows, cols, r]``, ``r`` candidates per
  column (a folded queue): candidate ``t`` of column ``j`` has id ``col_ids[j] * r + t`` (rows:
  ``row_ids[i] * r + t``). Gradients flow through the selected values only.
  """

  tile_fn: Callable[[Tile], Mapping[str, jax.Array]]
  reductions: Mapping[str, Reduction]
  finalize_fn: Callable[[ReducedBlock], jax.Array]
  # True when finalize_fn is linear in its statistics, all of them `row_sum`/`col_sum` (it may
  # use x, y, params and side data in any way besides): the statistics' cotangents are then known
  # before the statistics are, and one fused pass computes value and gradient.
  linear: bool = False
  # k of the row_topk/col_topk reductions (memory O(b * k) per reduction).
  top_k: int = 0

  def __post_init__(self):
    for name, kind in self.reductions.items():
      if kind not in REDUCTIONS:
        raise ValueError(f"Unknown reduction {kind!r} for {name!r}; known: {REDUCTIONS}.")
      if kind.endswith("topk") and (name + "_ids") in self.reductions:
        raise ValueError(f"Reduction name {name + '_ids'!r} is taken by the ids of {name!r}.")
    if self.linear and not all(k.endswith("sum") for k in self.reductions.values()):
      raise ValueError("A linear TileLoss can only use row_sum/col_sum reductions.")
    has_topk = any(k.endswith("topk") for k in self.reductions.values())
    if has_topk and (not isinstance(self.top_k, int) or self.top_k < 1):
      raise ValueError(f"A top-k reduction needs top_k >= 1, got top_k={self.top_k!r}.")

  def __hash__(self):
    return hash(
      (self.tile_fn, self.finalize_fn, tuple(self.reductions.items()), self.linear, self.top_k)
    )
