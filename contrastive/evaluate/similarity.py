"""Blocked similarity over large sets: top-k neighbours, ranks of positives, Gaussian potentials.

The score between row `x_i` and column `y_j` is the dot product :math:`s_{ij} = \\langle x_i,
y_j\\rangle` (the cosine for unit vectors; nothing here normalizes). No `[N, M]` matrix is ever
built: the rows are cut into blocks of at most `block_size` (and, when a `mesh` is given, first
split over all of its devices with `jax.shard_map`), and for each row block the columns stream
through a `lax.scan` in blocks of at most `block_size`, keeping only running statistics (a top-k
list, a best positive score, a count, a max-shifted sum of exponentials). The memory per device is
`O((n / devices + m) * dim + block_size**2)`; the columns are replicated on every device.

Matrix products run at `Precision.HIGHEST` with float32 accumulation, so the blocked and the dense
computation agree to rounding on every backend.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P
import numpy as np

from contrastive.evaluate import _common

DEFAULT_BLOCK_SIZE = 1024


def _scores(a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.dot(a, b.T, precision=jax.lax.Precision.HIGHEST, preferred_element_type=jnp.float32)


def _layout(n: int, m: int, block_size: int, mesh: Mesh | None) -> tuple[int, int, int, int]:
  """(row block, padded rows, column block, padded columns) for `n` rows and `m` columns."""
  shards = 1 if mesh is None else mesh.size
  per_device = -(-n // shards)
  row_block = max(1, min(block_size, per_device))
  rows = shards * -(-per_device // row_block) * row_block
  col_block = max(1, min(block_size, m))
  cols = -(-m // col_block) * col_block
  return row_block, rows, col_block, cols


def _pad(a: jax.Array, size: int) -> jax.Array:
  return jnp.pad(a, [(0, size - a.shape[0])] + [(0, 0)] * (a.ndim - 1))


def _blocked(
  row_fn: Callable[..., Any],
  rows: Sequence[jax.Array],
  cols: Sequence[jax.Array],
  *,
  row_block: int,
  col_block: int,
  mesh: Mesh | None,
) -> Any:
  """Maps `row_fn(row_block_arrays, column_block_arrays)` over row blocks, rows over `mesh`.

  `rows` are padded to the layout's row count (split evenly over the devices), `cols` to a
  multiple of `col_block`. `row_fn` gets a list of `[row_block, ...]` arrays and a list of
  `[num_col_blocks, col_block, ...]` arrays and returns a pytree of `[row_block, ...]` arrays.
  """

  def local(*arrays):
    row_blocks = [a.reshape(-1, row_block, *a.shape[1:]) for a in arrays[: len(rows)]]
    col_blocks = [a.reshape(-1, col_block, *a.shape[1:]) for a in arrays[len(rows) :]]
    out = jax.lax.map(lambda blk: row_fn(blk, col_blocks), row_blocks)
    return jax.tree.map(lambda o: o.reshape(-1, *o.shape[2:]), out)

  if mesh is None:
    return local(*rows, *cols)
  spec = P(tuple(mesh.axis_names))
  fn = jax.shard_map(
    local,
    mesh=mesh,
    in_specs=(spec,) * len(rows) + (P(),) * len(cols),
    out_specs=spec,
    check_vma=False,
  )  # every output is row-sharded
  return fn(*rows, *cols)


def _check_pair(x, y, block_size: int) -> tuple[Any, Any]:
  x, y = _common.matrix("x", x), _common.matrix("y", y)
  _common.same_dim(x=x, y=y)
  if int(block_size) < 1:
    raise ValueError(f"block_size must be a positive int, got {block_size!r}.")
  if x.shape[0] == 0 or y.shape[0] == 0:
    raise ValueError(
      f"x and y must be non-empty, got shapes {tuple(x.shape)} and {tuple(y.shape)}."
    )
  return x, y


@functools.partial(jax.jit, static_argnames=("k", "block_size", "mesh"))
def _topk(x, y, *, k, block_size, mesh):
  n, m = x.shape[0], y.shape[0]
  row_block, rows, col_block, cols = _layout(n, m, block_size, mesh)
  col_ids = jnp.arange(cols, dtype=jnp.int32)

  def row_fn(blk, col_blocks):
    (xb,) = blk
    init = (
      jnp.full((row_block, k), -jnp.inf, jnp.float32),
      jnp.full((row_block, k), -1, jnp.int32),
    )

    def step(carry, c):
      yc, ic = c
      s = jnp.where(ic[None, :] < m, _scores(xb, yc), -jnp.inf)
      vals = jnp.concatenate([carry[0], s], axis=1)
      ids = jnp.concatenate([carry[1], jnp.broadcast_to(ic[None, :], s.shape)], axis=1)
      top, where = jax.lax.top_k(vals, k)
      return (top, jnp.take_along_axis(ids, where, axis=1)), None

    return jax.lax.scan(step, init, col_blocks)[0]

  vals, ids = _blocked(
    row_fn,
    [_pad(x.astype(jnp.float32), rows)],
    [_pad(y.astype(jnp.float32), cols), col_ids],
    row_block=row_block,
    col_block=col_block,
    mesh=mesh,
  )
  return vals[:n], ids[:n]


def topk(
  x: jax.typing.ArrayLike,
  y: jax.typing.ArrayLike,
  k: int,
  *,
  block_size: int = DEFAULT_BLOCK_SIZE,
  mesh: Mesh | None = None,
) -> tuple[jax.Array, jax.Array]:
  """The `k` columns of highest score for every row, computed in blocks.

  .. math::
    \\mathrm{topk}_i = \\operatorname{arg\\,top\\text{-}k}_j \\; \\langle x_i, y_j \\rangle

  Ties go to the lower column index, as a stable descending sort of the dense row would.

  Args:
    x: `[num_x, dim]` queries.
    y: `[num_y, dim]` keys, `num_y >= k`.
    k: how many neighbours per row.
    block_size: the largest number of rows or columns in one score tile.
    mesh: when given, the rows are split over all of its devices.

  Returns:
    `(scores, indices)`, both `[num_x, k]`, best first.

  Example:
    >>> scores, idx = topk(queries, keys, 5)
  """
  x, y = _check_pair(x, y, block_size)
  if not 1 <= int(k) <= y.shape[0]:
    raise ValueError(f"k must be in [1, {y.shape[0]}] (the number of columns), got {k!r}.")
  return _topk(x, y, k=int(k), block_size=int(block_size), mesh=mesh)


@functools.partial(jax.jit, static_argnames=("block_size", "mesh"))
def _positive_ranks(x, y, x_ids, y_ids, *, block_size, mesh):
  n, m = x.shape[0], y.shape[0]
  row_block, rows, col_block, cols = _layout(n, m, block_size, mesh)
  valid = jnp.arange(cols) < m

  def row_fn(blk, col_blocks):
    xb, xid = blk

    def tiles(c):
      yc, yid, ok = c
      s = _scores(xb, yc)
      pos = (xid[:, None] == yid[None, :]) & ok[None, :]
      return s, pos, ok

    def best(carry, c):
      s, pos, _ = tiles(c)
      return jnp.maximum(carry, jnp.max(jnp.where(pos, s, -jnp.inf), axis=1)), None

    p = jax.lax.scan(best, jnp.full((row_block,), -jnp.inf, jnp.float32), col_blocks)[0]

    def count(carry, c):
      s, pos, ok = tiles(c)
      above = (s >= p[:, None]) & ~pos & ok[None, :]
      return carry + jnp.sum(above, axis=1, dtype=jnp.int32), None

    return 1 + jax.lax.scan(count, jnp.zeros((row_block,), jnp.int32), col_blocks)[0]

  ranks = _blocked(
    row_fn,
    [_pad(x.astype(jnp.float32), rows), _pad(x_ids, rows)],
    [_pad(y.astype(jnp.float32), cols), _pad(y_ids, cols), valid],
    row_block=row_block,
    col_block=col_block,
    mesh=mesh,
  )
  return ranks[:n]


def positive_ranks(
  x: jax.typing.ArrayLike,
  y: jax.typing.ArrayLike,
  *,
  x_ids: jax.typing.ArrayLike,
  y_ids: jax.typing.ArrayLike,
  block_size: int = DEFAULT_BLOCK_SIZE,
  mesh: Mesh | None = None,
) -> jax.Array:
  """The rank of the best-scoring positive of every row, computed in blocks.

  Column `j` is a positive of row `i` when `x_ids[i] == y_ids[j]`. With :math:`p_i` the best
  positive score of row `i`,

  .. math::
    p_i = \\max_{j:\\, \\mathrm{id}(y_j) = \\mathrm{id}(x_i)} s_{ij}, \\qquad
    \\mathrm{rank}_i = 1 + \\#\\{ j : \\mathrm{id}(y_j) \\ne \\mathrm{id}(x_i),\\;
      s_{ij} \\ge p_i \\}

  Ties count against the query (a collapsed model that scores everything equal ranks last, not
  first). A row with no positive gets `1 + (number of its negatives)`.

  Args:
    x: `[num_x, dim]` queries.
    y: `[num_y, dim]` keys.
    x_ids: `[num_x]` integer ids of the queries.
    y_ids: `[num_y]` integer ids of the keys.
    block_size: the largest number of rows or columns in one score tile.
    mesh: when given, the rows are split over all of its devices.

  Returns:
    `[num_x]` int32 ranks, 1 for a hit at the top.
  """
  x, y = _check_pair(x, y, block_size)
  x_ids = _common.int_vector("x_ids", x_ids, length=x.shape[0])
  y_ids = _common.int_vector("y_ids", y_ids, length=y.shape[0])
  return _positive_ranks(x, y, x_ids, y_ids, block_size=int(block_size), mesh=mesh)


@functools.partial(jax.jit, static_argnames=("exclude_diagonal", "block_size", "mesh"))
def _log_mean_gaussian(x, y, t, *, exclude_diagonal, block_size, mesh):
  n, m = x.shape[0], y.shape[0]
  row_block, rows, col_block, cols = _layout(n, m, block_size, mesh)
  x = x.astype(jnp.float32)
  y = y.astype(jnp.float32)
  x2, y2 = jnp.sum(x * x, axis=1), jnp.sum(y * y, axis=1)

  def row_fn(blk, col_blocks):
    xb, xsq, i = blk

    def step(carry, c):
      yc, ysq, j = c
      d2 = jnp.maximum(xsq[:, None] + ysq[None, :] - 2 * _scores(xb, yc), 0.0)
      keep = (j[None, :] < m) & ((i[:, None] != j[None, :]) if exclude_diagonal else True)
      a = jnp.where(keep, -t * d2, -jnp.inf)
      top, total = carry
      new_top = jnp.maximum(top, jnp.max(a, axis=1))
      shift = jnp.where(jnp.isfinite(new_top), new_top, 0.0)
      total = total * jnp.exp(top - shift) + jnp.sum(jnp.exp(a - shift[:, None]), axis=1)
      return (new_top, total), None

    init = (jnp.full((row_block,), -jnp.inf), jnp.zeros((row_block,)))
    top, total = jax.lax.scan(step, init, col_blocks)[0]
    return jnp.where(total > 0, top + jnp.log(total), -jnp.inf)

  row_lse = _blocked(
    row_fn,
    [_pad(x, rows), _pad(x2, rows), jnp.arange(rows)],
    [_pad(y, cols), _pad(y2, cols), jnp.arange(cols)],
    row_block=row_block,
    col_block=col_block,
    mesh=mesh,
  )
  pairs = n * m - (min(n, m) if exclude_diagonal else 0)
  return jax.nn.logsumexp(row_lse[:n]) - jnp.log(jnp.float32(pairs))


def log_mean_gaussian_potential(
  x: jax.typing.ArrayLike,
  y: jax.typing.ArrayLike,
  *,
  t: float = 2.0,
  exclude_diagonal: bool = False,
  block_size: int = DEFAULT_BLOCK_SIZE,
  mesh: Mesh | None = None,
) -> jax.Array:
  """Log of the mean Gaussian potential over all pairs, computed in blocks.

  .. math::
    \\log \\frac{1}{|\\mathcal{P}|} \\sum_{(i, j) \\in \\mathcal{P}}
      \\exp\\!\\left(-t \\lVert x_i - y_j \\rVert_2^2\\right)

  over all pairs :math:`\\mathcal{P}`, or over the pairs with :math:`i \\ne j` when
  `exclude_diagonal` (with `y = x` this is Wang & Isola's uniformity, since the mean over
  :math:`i \\ne j` equals the mean over :math:`i < j`). A max-shifted log-sum-exp runs across the
  tiles.

  Args:
    x: `[num_x, dim]`.
    y: `[num_y, dim]`.
    t: the potential's sharpness (2 in the paper).
    exclude_diagonal: leave out the pairs `i == j`.
    block_size: the largest number of rows or columns in one tile.
    mesh: when given, the rows are split over all of its devices.

  Returns:
    A float32 scalar.

  References:
    Wang & Isola, "Understanding Contrastive Representation Learning through Alignment and
    Uniformity on the Hypersphere", ICML 2020, https://arxiv.org/abs/2005.10242
  """
  x, y = _check_pair(x, y, block_size)
  if exclude_diagonal and x.shape[0] * y.shape[0] <= min(x.shape[0], y.shape[0]):
    raise ValueError(f"No off-diagonal pairs for shapes {tuple(x.shape)} and {tuple(y.shape)}.")
  return _log_mean_gaussian(
    x,
    y,
    jnp.float32(t),
    exclude_diagonal=bool(exclude_diagonal),
    block_size=int(block_size),
    mesh=mesh,
  )


def dense_scores(x: jax.typing.ArrayLike, y: jax.typing.ArrayLike) -> np.ndarray:
  """The full `[num_x, num_y]` score matrix on the host; for tests and small sets only."""
  x, y = _check_pair(x, y, 1)
  return np.asarray(_scores(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)))
