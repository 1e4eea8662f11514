"""Multi-view InfoNCE and MV-DHEL: one loss term per sample covering all of its k views."""

from __future__ import annotations

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np

from contrastive.losses import _checks
from contrastive.losses._modalities import check_modalities
from contrastive.losses._modalities import masked_logsumexp
from contrastive.losses.ring import ReducedBlock
from contrastive.losses.ring import Tile
from contrastive.losses.ring import TileLoss
from contrastive.losses.ring import ring_loss


def mv_infonce_loss(
  embeddings,
  scale: jax.typing.ArrayLike,
  *,
  axis_name: str | tuple[str, ...] | None = None,
  block_size: int | None = None,
) -> jax.Array:
  r"""Multi-view InfoNCE: all positive pairs of a sample against all its view-to-sample pairs.

  With views :math:`u^1, \dots, u^k` (``embeddings``) and :math:`t = 1/\tau`:

  .. math::
    L = \frac{1}{B} \sum_i \Big[ -\log \Big( 2 \sum_{l<m} e^{t\, u^l_i \cdot u^m_i} \Big)
        + \log \sum_{l=1}^{k} \sum_{(j, m) \ne (i, l)} e^{t\, u^l_i \cdot u^m_j} \Big]

  The denominator pools, over all views :math:`l` of sample :math:`i`, every other row of the
  ``kB`` stacked views (its own positives included), as in the authors' ``MVINFONCE``
  (pakoromilas/Multi-View-CL ``models/losses.py``).

  Runs on the ring in one pass: the ``k`` views stay as ``x`` and travel as ``y``; each tile
  folds the ``k^2`` view-pair similarities of a (row, column) pair into one log-sum-exp before the
  row reduction. Memory per device :math:`O(k\, b\, d + k^2\, \text{block\_size}^2)`.

  Args:
    embeddings: ``k >= 2`` aligned ``[batch, dim]`` views (local shards under ``axis_name``).
    scale: scalar :math:`t = 1/\tau` (already exponentiated; the authors use :math:`\tau = 0.2`).
    axis_name: the ``jax.shard_map`` axis the batch is split over; None for a whole batch.
    block_size: largest tile side on a device; None picks one.

  Returns:
    float32 scalar, identical on every device of ``axis_name``.

  Example:
    >>> view1 = view2 = view3 = jnp.eye(4)  # identical views: every positive at similarity 1
    >>> loss = mv_infonce_loss([view1, view2, view3], 2.0)
    >>> print(f"{loss:.3f}")
    0.476

  References:
    Koromilas et al., A Principled Framework for Multi-View Contrastive Learning, 2025.
    Code: pakoromilas/Multi-View-CL.
  """
  fn = "mv_infonce_loss"
  emb = check_modalities(fn, embeddings)
  _checks.check_scalars(fn, scale=scale)
  _checks.check_block_size(fn, block_size)
  return ring_loss(
    _mv_infonce_tiles(len(emb)),
    emb,
    emb,
    {"scale": scale},
    axis_name=axis_name,
    block_size=block_size,
  )


def mv_dhel_loss(
  embeddings,
  scale: jax.typing.ArrayLike,
  *,
  axis_name: str | tuple[str, ...] | None = None,
  block_size: int | None = None,
) -> jax.Array:
  r"""MV-DHEL: multi-view alignment decoupled from per-view uniformity.

  .. math::
    L = \frac{1}{B} \sum_i \Big[ -\log \sum_{l<m} e^{t\, u^l_i \cdot u^m_i}
        + \sum_{l=1}^{k} \log \sum_{j \ne i} e^{t\, u^l_i \cdot u^l_j} \Big]

  The uniformity (energy) terms stay inside each view, as in the authors' ``MVDHEL``
  (pakoromilas/Multi-View-CL ``models/losses.py``, default :math:`\tau = 0.2`). With ``k = 2``
  it is the two-view DHEL, :math:`-t\, u^1_i \cdot u^2_i + \mathrm{LSE}_{j \ne i}(t\, u^1_i
  \cdot u^1_j) + \mathrm{LSE}_{j \ne i}(t\, u^2_i \cdot u^2_j)` (their ``NTXentHPS``).

  Runs on the ring in one pass: the views stay as ``x`` and travel as ``y``, ``k`` intra-view
  log-sum-exps per row. Memory per device :math:`O(k\, b\, d + k\, \text{block\_size}^2)`.

  Args:
    embeddings: ``k >= 2`` aligned ``[batch, dim]`` views (local shards under ``axis_name``).
    scale: scalar :math:`t = 1/\tau` (already exponentiated).
    axis_name: the ``jax.shard_map`` axis the batch is split over; None for a whole batch.
    block_size: largest tile side on a device; None picks one.

  Returns:
    float32 scalar, identical on every device of ``axis_name``.

  Example:
    >>> view1 = view2 = view3 = jnp.eye(4)  # k = 3 views of four orthogonal samples
    >>> loss = mv_dhel_loss([view1, view2, view3], 2.0)
    >>> print(f"{loss:.3f}")  # 3 log 3 - (t + log 3)
    0.197

  References:
    Koromilas et al., A Principled Framework for Multi-View Contrastive Learning, 2025.
    Code: pakoromilas/Multi-View-CL.
  """
  fn = "mv_dhel_loss"
  emb = check_modalities(fn, embeddings)
  _checks.check_scalars(fn, scale=scale)
  _checks.check_block_size(fn, block_size)
  return ring_loss(
    _mv_dhel_tiles(len(emb)), emb, emb, {"scale": scale}, axis_name=axis_name, block_size=block_size
  )


def _positive_logits(home: ReducedBlock) -> jax.Array:
  """[pairs, b]: t u^l_i . u^m_i for every l < m."""
  views = [v.astype(jnp.float32) for v in home.x]
  return home.params["scale"] * jnp.stack(
    [jnp.sum(views[l] * views[m], axis=-1) for l, m in itertools.combinations(range(len(views)), 2)]
  )


@functools.cache
def _mv_infonce_tiles(k: int) -> TileLoss:
  same_view = np.eye(k, dtype=bool).reshape(k * k)  # numpy: a constant, never a tracer

  def tile_fn(tile: Tile):
    scale = tile.params["scale"]
    logits = jnp.stack(
      [
        scale * jnp.dot(tile.x[l], tile.y[m].T, preferred_element_type=jnp.float32)
        for l in range(k)
        for m in range(k)
      ]
    )  # [k*k, rows, cols]
    keep = ~(same_view[:, None, None] & tile.positive[None])  # drop (j, m) == (i, l)
    return {"neg": masked_logsumexp(logits, keep, axis=0)}

  def finalize_fn(home: ReducedBlock):
    positive = jax.nn.logsumexp(_positive_logits(home), axis=0) + math.log(2.0)
    return jnp.sum(home.stats["neg"] - positive) / home.global_batch

  return TileLoss(tile_fn=tile_fn, reductions={"neg": "row_lse"}, finalize_fn=finalize_fn)


@functools.cache
def _mv_dhel_tiles(k: int) -> TileLoss:
  def tile_fn(tile: Tile):
    scale = tile.params["scale"]
    return {
      f"energy_{l}": jnp.where(
        tile.positive,
        -jnp.inf,
        scale * jnp.dot(tile.x[l], tile.y[l].T, preferred_element_type=jnp.float32),
      )
      for l in range(k)
    }

  def finalize_fn(home: ReducedBlock):
    positive = jax.nn.logsumexp(_positive_logits(home), axis=0)
    energy = sum(home.stats[f"energy_{l}"] for l in range(k))
    return jnp.sum(energy - positive) / home.global_batch

  return TileLoss(
    tile_fn=tile_fn,
    reductions={f"energy_{l}": "row_lse" for l in range(k)},
    finalize_fn=finalize_fn,
  )
