"""Several positives per anchor: supervised contrastive (SupCon) and multi-positive InfoNCE.

Labels (class ids, or the id of the image several captions describe) travel with the blocks, so
the positive mask of every tile is built where the tile is.
"""

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


def supcon_loss(
  x: jax.typing.ArrayLike,
  y: jax.typing.ArrayLike,
  scale: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  intra_modal: bool = False,
  axis_name: str | tuple[str, ...] | None = None,
  block_size: int | None = None,
) -> jax.Array:
  r"""Supervised contrastive loss (:math:`L^{sup}_{out}`): the mean log-probability of every
  same-label candidate.

  Cross-modal form (default), with :math:`l_{ij} = t\, x_i \cdot y_j` and
  :math:`P(i) = \{j : c_j = c_i\}` (which contains :math:`i`):

  .. math::
    L = \frac{1}{2B} \sum_i \Big[ -\frac{1}{|P(i)|} \sum_{p \in P(i)}
        \log \frac{e^{l_{ip}}}{\sum_j e^{l_{ij}}} \Big] + (\text{the same with } x, y
        \text{ swapped})

  With all labels distinct it is :func:`softmax_loss`. With ``intra_modal=True`` it is the
  paper's loss over the :math:`2B` views :math:`\{x_i\} \cup \{y_i\}`: each view is contrasted
  with the :math:`2B - 1` others, and its positives are the other views of its label (:math:`x`
  and :math:`y` being two augmentations, this is SupCon's ``contrast_mode='all'``; with distinct
  labels, SimCLR's NT-Xent).

  Runs on the ring: per anchor a log-sum-exp, the sum of positive logits and the positive count
  (and their same-modality counterparts with ``intra_modal``); labels travel with the ``y``
  block. Memory per device :math:`O(b\,d + \text{block\_size}^2)`.

  Args:
    x: [batch, dim] embeddings of one modality (the local shard under ``axis_name``).
    y: [batch, dim] embeddings of the other; ``y[i]`` is the positive of ``x[i]``.
    scale: scalar logit scale :math:`t = 1/\tau`.
    labels: [batch] integer label of each pair.
    intra_modal: contrast each view with both modalities (the paper's two-view form).
    axis_name: the ``jax.shard_map`` axis the batch is split over; None for a whole batch.
    block_size: largest tile side on a device; None picks one.

  Returns:
    float32 scalar, identical on every device of ``axis_name``.

  Example:
    >>> x = y = jnp.eye(4)  # four orthogonal pairs in two classes
    >>> labels = jnp.array([0, 0, 1, 1])
    >>> loss = supcon_loss(x, y, 2.0, labels)
    >>> print(f"{loss:.3f}")  # log(1 + 3 e^-2) + t / 2
    1.341

  References:
    Khosla et al., Supervised Contrastive Learning, NeurIPS 2020 (the :math:`L_{out}` form, Eq. 2;
    its ``base_temperature`` factor, 1 at the defaults, is left out).
  """
  fn = "supcon_loss"
  _check(fn, x, y, scale, labels, axis_name, block_size)
  rows, cols = ({"x": x, "y": y}, {"x": x, "y": y}) if intra_modal else (x, y)
  return ring_loss(
    _supcon_tiles(bool(intra_modal)),
    rows,
    cols,
    {"scale": scale},
    row=labels,
    col=labels,
    axis_name=axis_name,
    block_size=block_size,
  )


def multi_positive_loss(
  x: jax.typing.ArrayLike,
  y: jax.typing.ArrayLike,
  scale: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  axis_name: str | tuple[str, ...] | None = None,
  block_size: int | None = None,
) -> jax.Array:
  r"""Multi-positive InfoNCE (MIL-NCE): the log of the total probability of the positives.

  With :math:`P(i) = \{j : c_j = c_i\}` (several captions of one image share its id):

  .. math::
    L = \frac{1}{2B} \sum_i \Big[ -\log \frac{\sum_{p \in P(i)} e^{l_{ip}}}{\sum_j e^{l_{ij}}}
        \Big] + (\text{the same with } x, y \text{ swapped})

  Unlike :func:`supcon_loss` (the mean of the positives' log-probabilities, :math:`L_{out}`), the
  positives pool their probability (:math:`L_{in}`), so an anchor is satisfied by any of them.
  With all labels distinct it is :func:`softmax_loss`.

  Runs on the ring: two log-sum-exps per anchor and direction, one over all candidates and one
  over the positives; labels travel with the ``y`` block. Memory per device
  :math:`O(b\,d + \text{block\_size}^2)`.

  Args:
    x: [batch, dim] embeddings of one modality (the local shard under ``axis_name``).
    y: [batch, dim] embeddings of the other; ``y[i]`` is a positive of ``x[i]``.
    scale: scalar logit scale :math:`t = 1/\tau`.
    labels: [batch] integer id of each pair; pairs with equal ids are positives of each other.
    axis_name: the ``jax.shard_map`` axis the batch is split over; None for a whole batch.
    block_size: largest tile side on a device; None picks one.

  Returns:
    float32 scalar, identical on every device of ``axis_name``.

  Example:
    >>> images = captions = jnp.eye(4)  # four orthogonal pairs of two images
    >>> image_ids = jnp.array([0, 0, 1, 1])
    >>> loss = multi_positive_loss(images, captions, 2.0, image_ids)
    >>> print(f"{loss:.3f}")  # log(1 + 3 e^-2) - log(1 + e^-2)
    0.214

  References:
    Miech et al., End-to-End Learning of Visual Representations from Uncurated Instructional
    Videos (MIL-NCE), CVPR 2020; Khosla et al., 2020 (:math:`L^{sup}_{in}`, Eq. 3).
  """
  fn = "multi_positive_loss"
  _check(fn, x, y, scale, labels, axis_name, block_size)
  return ring_loss(
    _MULTI_POSITIVE_TILES,
    x,
    y,
    {"scale": scale},
    row=labels,
    col=labels,
    axis_name=axis_name,
    block_size=block_size,
  )


def _check(fn, x, y, scale, labels, axis_name, block_size):
  _checks.check_embeddings(fn, x=x, y=y)
  _checks.check_scalars(fn, scale=scale)
  _checks.check_block_size(fn, block_size)
  _checks.check_ids(fn, np.shape(x)[0], labels=labels)
  del axis_name


def _same(tile: Tile) -> jax.Array:
  return tile.row[:, None] == tile.col[None, :]


@functools.cache
def _supcon_tiles(intra_modal: bool) -> TileLoss:
  def tile_fn(tile: Tile):
    t, same = tile.params["scale"], _same(tile)
    if intra_modal:
      x_r, y_r, x_c, y_c = tile.x["x"], tile.x["y"], tile.y["x"], tile.y["y"]
    else:
      x_r, y_c = tile.x, tile.y
    logits = t * _pairwise.dot(x_r, y_c)
    positives = jnp.where(same, logits, 0.0)
    count = same.astype(jnp.float32)
    values = {
      "lse_x": logits,
      "lse_y": logits,
      "pos_x": positives,
      "pos_y": positives,
      "count_x": count,
      "count_y": count,
    }
    if intra_modal:  # views of the same modality, the anchor itself excluded
      other = ~tile.positive
      for name, (a, b) in {"xx": (x_r, x_c), "yy": (y_r, y_c)}.items():
        logits = t * _pairwise.dot(a, b)
        values[f"lse_{name}"] = jnp.where(other, logits, _pairwise.NEG_INF)
        values[f"pos_{name}"] = jnp.where(same & other, logits, 0.0)
        values[f"count_{name}"] = (same & other).astype(jnp.float32)
    return values

  def finalize_fn(home: ReducedBlock):
    s = home.stats
    lse_x, lse_y = s["lse_x"], s["lse_y"]
    pos_x, pos_y, count_x, count_y = s["pos_x"], s["pos_y"], s["count_x"], s["count_y"]
    if intra_modal:
      lse_x, lse_y = jnp.logaddexp(lse_x, s["lse_xx"]), jnp.logaddexp(lse_y, s["lse_yy"])
      pos_x, pos_y = pos_x + s["pos_xx"], pos_y + s["pos_yy"]
      count_x, count_y = count_x + s["count_xx"], count_y + s["count_yy"]
    per_anchor = (lse_x - pos_x / count_x) + (lse_y - pos_y / count_y)
    return jnp.sum(per_anchor) / (2 * home.global_batch)

  reductions = {
    "lse_x": "row_lse",
    "lse_y": "col_lse",
    "pos_x": "row_sum",
    "pos_y": "col_sum",
    "count_x": "row_sum",
    "count_y": "col_sum",
  }
  if intra_modal:
    reductions.update(
      lse_xx="row_lse",
      pos_xx="row_sum",
      count_xx="row_sum",
      lse_yy="col_lse",
      pos_yy="col_sum",
      count_yy="col_sum",
    )
  return TileLoss(tile_fn=tile_fn, reductions=reductions, finalize_fn=finalize_fn)


def _multi_positive_tile_fn(tile: Tile):
  logits = tile.params["scale"] * tile.sim
  positives = jnp.where(_same(tile), logits, _pairwise.NEG_INF)
  return {"lse_x": logits, "lse_y": logits, "pos_x": positives, "pos_y": positives}


def _multi_positive_finalize_fn(home: ReducedBlock):
  s = home.stats
  return jnp.sum(s["lse_x"] - s["pos_x"] + s["lse_y"] - s["pos_y"]) / (2 * home.global_batch)


_MULTI_POSITIVE_TILES = TileLoss(
  tile_fn=_multi_positive_tile_fn,
  finalize_fn=_multi_positive_finalize_fn,
  reductions={"lse_x": "row_lse", "lse_y": "col_lse", "pos_x": "row_lse", "pos_y": "col_lse"},
)
