"""CACR: attraction of positives and repulsion of negatives, each weighted by a softmax of its
own cost (far positives pulled harder, close negatives pushed harder)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from contrastive.losses import _checks
from contrastive.losses import _pairwise
from contrastive.losses.ring import ReducedBlock
from contrastive.losses.ring import Tile
from contrastive.losses.ring import TileLoss
from contrastive.losses.ring import ring_loss

# Squared distances below this count as this in log d (a term of weight d < 1e-30: nothing).
_TINY = 1e-30


def cacr_loss(
  x: jax.typing.ArrayLike,
  y: jax.typing.ArrayLike,
  *,
  alpha: float = 1.0,
  beta: float = 1.0,
  tau_neg: float = 1.0,
  axis_name: str | tuple[str, ...] | None = None,
  block_size: int | None = None,
) -> jax.Array:
  r"""Contrastive attraction and contrastive repulsion, cross-modal and symmetric.

  With :math:`d_{ij} = \lVert x_i - y_j \rVert^2`:

  .. math::
    L = \frac{\alpha}{B} \sum_i d_{ii} - \frac{\beta}{2B} \sum_i \Big[
        \sum_{j \ne i} \pi^{x}_{ij} d_{ij} + \sum_{j \ne i} \pi^{y}_{ji} d_{ji} \Big], \quad
    \pi^{x}_{ij} = \operatorname{softmax}_{j \ne i}(-\tau^- d_{ij}), \;
    \pi^{y}_{ji} = \operatorname{softmax}_{j \ne i}(-\tau^- d_{ji})

  (:math:`\pi^x` over the columns of anchor :math:`x_i`, :math:`\pi^y` over the rows of anchor
  :math:`y_i`). The attraction weights :math:`\pi^+ = \operatorname{softmax}(\tau^+ d)` run over
  an anchor's positives; a two-tower pair has one, so :math:`\pi^+ = 1` and the attraction is
  :math:`\alpha d_{ii}`. With :math:`M` views, each anchor's :math:`M-1` positives would share
  :math:`\pi^+`, the authors' ``our_loss1``. Neither :math:`\pi` is stop-gradient (the authors'
  code lets both weights carry gradient). The authors repel one direction per pair of views
  (rows of the first); here both directions are averaged, as the other losses of this package.

  Runs on the ring: per anchor, the weighted mean :math:`\sum_j \pi_{ij} d_{ij}` is
  :math:`\exp(\mathrm{LSE}_j(-\tau^- d_{ij} + \log d_{ij}) - \mathrm{LSE}_j(-\tau^- d_{ij}))`,
  two online log-sum-exps per direction: no overflow or underflow whatever the scale of
  :math:`d`, and a relative error of about :math:`10^{-7}\,\tau^- \min_j d_{ij}` (float32
  log-sum-exps of that size), negligible for unit-norm embeddings at the paper's
  :math:`\tau^-`. Memory per device :math:`O(b\,d + \text{block\_size}^2)`.

  Args:
    x: [batch, dim] embeddings of one modality (the local shard under ``axis_name``).
    y: [batch, dim] embeddings of the other; ``y[i]`` is the positive of ``x[i]``.
    alpha: attraction weight :math:`\alpha > 0` (the authors' ``alpha``, 1).
    beta: repulsion weight :math:`\beta > 0` (the authors' ``beta``, 1).
    tau_neg: repulsion temperature :math:`\tau^- > 0` (the authors' ``tau_neg``, 1); larger
      concentrates the repulsion on the closest negatives.
    axis_name: the ``jax.shard_map`` axis the batch is split over; None for a whole batch.
    block_size: largest tile side on a device; None picks one.

  Returns:
    float32 scalar, identical on every device of ``axis_name``. Needs a global batch of 2 or
    more. There is no logit scale.

  Example:
    >>> x = y = jnp.eye(4)  # aligned pairs, every negative at squared distance 2
    >>> loss = cacr_loss(x, y)
    >>> print(f"{loss:.3f}")  # 0 - beta * 2
    -2.000

  References:
    Zheng et al., Contrastive Attraction and Contrastive Repulsion for Representation Learning,
    TMLR 2023 (arXiv:2105.03746); the authors' ``our_loss1``/``forward_negative_loss``
    (JegZheng/CACR-SSL, ``small_scale_experiments/losses/__init__.py``), Euclidean cost.
  """
  fn = "cacr_loss"
  _checks.check_embeddings(fn, x=x, y=y)
  _checks.check_block_size(fn, block_size)
  _pairwise.check_positive(fn, alpha=alpha, beta=beta, tau_neg=tau_neg)
  _pairwise.check_global_batch(fn, np.shape(x)[0], axis_name)
  tiles = _cacr_tiles(float(alpha), float(beta), float(tau_neg))
  return ring_loss(tiles, x, y, {}, axis_name=axis_name, block_size=block_size)


@functools.cache
def _cacr_tiles(alpha: float, beta: float, tau_neg: float) -> TileLoss:
  def tile_fn(tile: Tile):
    d2 = _pairwise.sq_dists(tile.x, tile.y)
    off_diagonal = ~tile.positive
    weight = jnp.where(off_diagonal, -tau_neg * d2, _pairwise.NEG_INF)
    weighted = jnp.where(
      off_diagonal, -tau_neg * d2 + jnp.log(jnp.maximum(d2, _TINY)), _pairwise.NEG_INF
    )
    return {"w_x": weight, "w_y": weight, "wd_x": weighted, "wd_y": weighted}

  def finalize_fn(home: ReducedBlock):
    s = home.stats
    diff = _pairwise.f32(home.x) - _pairwise.f32(home.y)
    attraction = alpha * jnp.sum(diff * diff)
    repulsion = jnp.sum(jnp.exp(s["wd_x"] - s["w_x"]) + jnp.exp(s["wd_y"] - s["w_y"])) / 2
    return (attraction - beta * repulsion) / home.global_batch

  reductions = {"w_x": "row_lse", "wd_x": "row_lse", "w_y": "col_lse", "wd_y": "col_lse"}
  return TileLoss(tile_fn=tile_fn, reductions=reductions, finalize_fn=finalize_fn)
