"""What a ring loss is: the tile of pairs it sees, the reduced block it finishes from, and the
`TileLoss` that names its reductions (see `contrastive.losses.ring` for the engine that runs it)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
import dataclasses
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp

Reduction = Literal["row_lse", "row_sum", "col_lse", "col_sum"]
REDUCTIONS = ("row_lse", "row_sum", "col_lse", "col_sum")


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

  stats: Mapping[str, jax.Array]  # name -> [b] float32 (log-sum-exp or sum over the whole batch)
  x: Any  # [b, d] local rows, input dtype (or the pytree given)
  y: Any  # [b, d] local columns, input dtype
  params: Any
  row: Any
  col: Any
  ids: jax.Array  # [b] int32 global positions of the local samples
  global_batch: int  # B, the number of pairs on all devices together


@dataclasses.dataclass(frozen=True)
class TileLoss:
  """A contrastive loss written as reductions over similarity tiles."""

  tile_fn: Callable[[Tile], Mapping[str, jax.Array]]
  reductions: Mapping[str, Reduction]
  finalize_fn: Callable[[ReducedBlock], jax.Array]
  # True when finalize_fn is linear in its statistics, all of them `row_sum`/`col_sum` (it may
  # use x, y, params and side data in any way besides): the statistics' cotangents are then known
  # before the statistics are, and one fused pass computes value and gradient.
  linear: bool = False

  def __post_init__(self):
    for name, kind in self.reductions.items():
      if kind not in REDUCTIONS:
        raise ValueError(f"Unknown reduction {kind!r} for {name!r}; known: {REDUCTIONS}.")
    if self.linear and any(k.endswith("lse") for k in self.reductions.values()):
      raise ValueError("A linear TileLoss can only use row_sum/col_sum reductions.")

  def __hash__(self):
    return hash((self.tile_fn, self.finalize_fn, tuple(self.reductions.items()), self.linear))
