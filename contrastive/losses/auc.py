"""The Mann-Whitney (AUC) loss: every positive should outrank every negative of its query."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from contrastive.losses import _checks
from contrastive.losses import _pairwise
from contrastive.losses.ring import ReducedBlock
from contrastive.losses.ring import Tile
from contrastive.losses.ring import TileLoss
from contrastive.losses.ring import ring_loss


def auc_mw_loss(
  x: jax.typing.ArrayLike,
  y: jax.typing.ArrayLike,
  scale: jax.typing.ArrayLike,
  *,
  axis_name: str | tuple[str, ...] | None = None,
  block_size: int | None = None,
) -> jax.Array:
  r"""Per-query Mann-Whitney loss: binary cross-entropy on every (positive, negative) score
  difference, in both retrieval directions.

  With :math:`s_{ij} = x_i \cdot y_j`:

  .. math::
    L = \frac{1}{2B(B-1)} \sum_i \sum_{j \ne i} \Big[
        \operatorname{softplus}\big(-t\,(s_{ii} - s_{ij})\big)
        + \operatorname{softplus}\big(-t\,(s_{ii} - s_{ji})\big) \Big]

  :math:`-\log\sigma(t(s_{ii} - s_{ij}))` is the logistic surrogate of
  :math:`1[s_{ii} \le s_{ij}]`, so :math:`L` bounds each query's :math:`1 - \mathrm{AUC}`
  (the Mann-Whitney U statistic over its one positive and :math:`B-1` negatives).

  Runs on the ring in one fused pass: the loss is a plain sum over pairs once each query's
  positive score :math:`s_{ii}` (computed before the ring, ``[b]`` per device) travels with it.
  Memory per device :math:`O(b\,d + \text{block\_size}^2)`.

  Args:
    x: [batch, dim] query embeddings (the local shard under ``axis_name``).
    y: [batch, dim] document embeddings; ``y[i]`` is the positive of ``x[i]``.
    scale: scalar score scale :math:`t`.
    axis_name: the ``jax.shard_map`` axis the batch is split over; None for a whole batch.
    block_size: largest tile side on a device; None picks one.

  Returns:
    float32 scalar, identical on every device of ``axis_name``. Needs a global batch of 2 or
    more.

  Example:
    >>> queries = documents = jnp.eye(4)  # every positive scores 1, every negative 0
    >>> loss = auc_mw_loss(queries, documents, 2.0)
    >>> print(f"{loss:.3f}")  # -log sigmoid(t (1 - 0))
    0.127

  References:
    Optimizing What Matters: AUC-Driven Learning for Robust Neural Retrieval, 2025 (the MW loss:
    "binary cross entropy over score differences"). No public code was found; per-query pairing,
    in-batch negatives, the scale :math:`t` and the symmetric average are this library's reading
    (``LOSSES.md`` L6, K-M); a pooled global AUC would be cubic and is not offered.
  """
  fn = "auc_mw_loss"
  _checks.check_embeddings(fn, x=x, y=y)
  _checks.check_scalars(fn, scale=scale)
  _checks.check_block_size(fn, block_size)
  _pairwise.check_global_batch(fn, np.shape(x)[0], axis_name)
  positive = _pairwise.rowdot(x, y)
  return ring_loss(
    _AUC_TILES,
    x,
    y,
    {"scale": scale},
    row=positive,
    col=positive,
    axis_name=axis_name,
    block_size=block_size,
  )


def _tile_fn(tile: Tile):
  t, s, diagonal = tile.params["scale"], tile.sim, tile.positive
  x_query = jax.nn.softplus(-t * (tile.row[:, None] - s))  # x_i ranks y_j below y_i
  y_query = jax.nn.softplus(-t * (tile.col[None, :] - s))  # y_j ranks x_i below x_j
  return {"mw_x": jnp.where(diagonal, 0.0, x_query), "mw_y": jnp.where(diagonal, 0.0, y_query)}


def _finalize_fn(home: ReducedBlock):
  n = home.global_batch
  return jnp.sum(home.stats["mw_x"] + home.stats["mw_y"]) / (2 * n * (n - 1))


_AUC_TILES = TileLoss(
  tile_fn=_tile_fn,
  reductions={"mw_x": "row_sum", "mw_y": "col_sum"},
  finalize_fn=_finalize_fn,
  linear=True,
)
