"""Decoupled contrastive learning: the positive pair leaves the denominator (DCL, DCLW)."""

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


def dcl_loss(
  x: jax.typing.ArrayLike,
  y: jax.typing.ArrayLike,
  scale: jax.typing.ArrayLike,
  *,
  intra_modal: bool = False,
  axis_name: str | tuple[str, ...] | None = None,
  block_size: int | None = None,
) -> jax.Array:
  r"""Decoupled contrastive loss: symmetric InfoNCE without the positive in the denominator.

  With logits :math:`l_{ij} = t\, x_i \cdot y_j`:

  .. math::
    L = \frac{1}{2B} \sum_i \Big[ \big(-l_{ii} + \log \sum_{j \ne i} e^{l_{ij}}\big)
        + \big(-l_{ii} + \log \sum_{j \ne i} e^{l_{ji}}\big) \Big]

  With ``intra_modal=True`` the negatives of :math:`x_i` also include :math:`t\, x_i \cdot x_j`
  and those of :math:`y_i` include :math:`t\, y_i \cdot y_j` (:math:`j \ne i`): the two-view
  SimCLR form of the paper, with ``x`` and ``y`` the two views.

  Runs on the ring: two masked log-sum-exps (four with ``intra_modal``) accumulated tile by tile.
  Memory per device :math:`O(b\,d + \text{block\_size}^2)`; ``intra_modal`` sends both ``x``
  and ``y`` around the ring (twice the traffic).

  Args:
    x: [batch, dim] embeddings of one modality (the local shard under ``axis_name``).
    y: [batch, dim] embeddings of the other; ``y[i]`` is the positive of ``x[i]``.
    scale: scalar logit scale :math:`t = 1/\tau`.
    intra_modal: also contrast against same-modality negatives.
    axis_name: the ``jax.shard_map`` axis the batch is split over; None for a whole batch.
    block_size: largest tile side on a device; None picks one.

  Returns:
    float32 scalar, identical on every device of ``axis_name``. Needs a global batch of 2 or
    more (each positive needs a negative).

  Example:
    >>> x = y = jnp.eye(4)  # four orthogonal pairs
    >>> loss = dcl_loss(x, y, 2.0)
    >>> print(f"{loss:.3f}")  # -t + log 3
    -0.901

  References:
    Yeh et al., Decoupled Contrastive Learning, ECCV 2022 (arXiv:2110.06848); the two-view form
    follows the authors' code (raminnakhli/Decoupled-Contrastive-Learning, ``loss/dcl.py``).
  """
  return _dcl("dcl_loss", x, y, scale, None, intra_modal, axis_name, block_size)


def dclw_loss(
  x: jax.typing.ArrayLike,
  y: jax.typing.ArrayLike,
  scale: jax.typing.ArrayLike,
  *,
  sigma: float = 0.5,
  intra_modal: bool = False,
  axis_name: str | tuple[str, ...] | None = None,
  block_size: int | None = None,
) -> jax.Array:
  r"""Weighted decoupled contrastive loss: DCL with a von Mises-Fisher weight on each positive.

  .. math::
    w_i = 2 - B\, \frac{e^{x_i \cdot y_i / \sigma}}{\sum_k e^{x_k \cdot y_k / \sigma}}, \qquad
    L = \frac{1}{2B} \sum_i \Big[ \big(-w_i l_{ii} + \log \sum_{j \ne i} e^{l_{ij}}\big)
        + \big(-w_i l_{ii} + \log \sum_{j \ne i} e^{l_{ji}}\big) \Big]

  The weight is not stop-gradient (as in the authors' code); its normaliser is a softmax over the
  global batch, a scalar log-sum-exp reduced over the mesh (``psum``) before the ring, whose
  gradient reaches every positive on every device. ``intra_modal`` as in :func:`dcl_loss`.

  Runs on the ring, memory per device :math:`O(b\,d + \text{block\_size}^2)`.

  Args:
    x: [batch, dim] embeddings of one modality (the local shard under ``axis_name``).
    y: [batch, dim] embeddings of the other; ``y[i]`` is the positive of ``x[i]``.
    scale: scalar logit scale :math:`t = 1/\tau`.
    sigma: the weight's temperature :math:`\sigma > 0` (0.5 in the paper).
    intra_modal: also contrast against same-modality negatives.
    axis_name: the ``jax.shard_map`` axis the batch is split over; None for a whole batch.
    block_size: largest tile side on a device; None picks one.

  Returns:
    float32 scalar, identical on every device of ``axis_name``.

  Example:
    >>> x = y = jnp.eye(4)  # equally good positives: every weight is 1, as in DCL
    >>> loss = dclw_loss(x, y, 2.0, sigma=0.5)
    >>> print(f"{loss:.3f}")
    -0.901

  References:
    Yeh et al., Decoupled Contrastive Learning, ECCV 2022; weight as in the authors' code
    (``DCLW``: ``2 - B * softmax(x_i . y_i / sigma)``).
  """
  _pairwise.check_positive("dclw_loss", sigma=sigma)
  return _dcl("dclw_loss", x, y, scale, float(sigma), intra_modal, axis_name, block_size)


def _dcl(fn, x, y, scale, sigma, intra_modal, axis_name, block_size):
  _checks.check_embeddings(fn, x=x, y=y)
  _checks.check_scalars(fn, scale=scale)
  _checks.check_block_size(fn, block_size)
  _pairwise.check_global_batch(fn, np.shape(x)[0], axis_name)
  params = {"scale": scale}
  if sigma is not None:
    params["weight_lse"] = _pairwise.global_logsumexp(_pairwise.rowdot(x, y) / sigma, axis_name)
  rows, cols = ({"x": x, "y": y}, {"x": x, "y": y}) if intra_modal else (x, y)
  return ring_loss(
    _dcl_tiles(bool(intra_modal), sigma),
    rows,
    cols,
    params,
    axis_name=axis_name,
    block_size=block_size,
  )


@functools.cache
def _dcl_tiles(intra_modal: bool, sigma: float | None) -> TileLoss:
  def tile_fn(tile: Tile):
    if not intra_modal:
      negatives = _pairwise.negative_logits(tile)
      return {"neg_xy": negatives, "neg_yx": negatives}
    t, off_diagonal = tile.params["scale"], ~tile.positive
    x_r, y_r, x_c, y_c = tile.x["x"], tile.x["y"], tile.y["x"], tile.y["y"]
    negatives = lambda a, b: jnp.where(off_diagonal, t * _pairwise.dot(a, b), _pairwise.NEG_INF)
    cross = negatives(x_r, y_c)
    return {
      "neg_xy": cross,
      "neg_yx": cross,
      "neg_xx": negatives(x_r, x_c),
      "neg_yy": negatives(y_r, y_c),
    }

  def finalize_fn(home: ReducedBlock):
    x, y = (home.x["x"], home.y["y"]) if intra_modal else (home.x, home.y)
    sim = _pairwise.rowdot(x, y)
    weight = 1.0
    if sigma is not None:
      weight = 2.0 - home.global_batch * jnp.exp(sim / sigma - home.params["weight_lse"])
    lse_x, lse_y = home.stats["neg_xy"], home.stats["neg_yx"]
    if intra_modal:
      lse_x = jnp.logaddexp(lse_x, home.stats["neg_xx"])
      lse_y = jnp.logaddexp(lse_y, home.stats["neg_yy"])
    positive = home.params["scale"] * sim
    return jnp.sum(lse_x + lse_y - 2.0 * weight * positive) / (2 * home.global_batch)

  reductions = {"neg_xy": "row_lse", "neg_yx": "col_lse"}
  if intra_modal:
    reductions.update(neg_xx="row_lse", neg_yy="col_lse")
  return TileLoss(tile_fn=tile_fn, reductions=reductions, finalize_fn=finalize_fn)
