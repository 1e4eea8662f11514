"""Symmetric InfoNCE with extra hard negatives per anchor (generated captions, edited images)."""

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


def hard_negative_loss(
  x: jax.typing.ArrayLike,
  y: jax.typing.ArrayLike,
  scale: jax.typing.ArrayLike,
  neg_y: jax.typing.ArrayLike,
  neg_x: jax.typing.ArrayLike | None = None,
  *,
  shared: bool = False,
  axis_name: str | tuple[str, ...] | None = None,
  block_size: int | None = None,
) -> jax.Array:
  r"""Softmax contrastive loss whose denominators also hold hard negatives, in both directions.

  Each pair :math:`i` brings :math:`k` hard negatives :math:`\tilde y_{ih}` for its anchor
  :math:`x_i` (e.g. captions with swapped attributes) and optionally :math:`k'` hard negatives
  :math:`\tilde x_{ih}` for :math:`y_i` (e.g. edited images). With :math:`l_{ij} = t\, x_i \cdot
  y_j` and :math:`H^y_i` the extra negatives of :math:`x_i`:

  .. math::
    L = \frac{1}{2B} \sum_i \Big[ -l_{ii} + \log\Big( \sum_j e^{l_{ij}} + \sum_{\tilde y \in
        H^y_i} e^{t\, x_i \cdot \tilde y} \Big) \Big] + (\text{the same for } y_i
        \text{ with } H^x_i)

  * ``shared=False``: :math:`H^y_i = \{\tilde y_{ih}\}_h`, each anchor sees its own negatives.
  * ``shared=True`` (NegCLIP): :math:`H^y_i = \{\tilde y_{jh}\}_{j,h}`, every hard negative of
    the global batch is an extra column for every anchor; the real captions alone are anchors
    of the other direction.

  Without hard negatives this is :func:`softmax_loss`.

  Runs on the ring. ``shared=False``: the :math:`k` extra logits of each anchor are local, reduced
  to one log-sum-exp per anchor before the ring; memory per device :math:`O(b\,k\,d +
  \text{block\_size}^2)`. ``shared=True``: ``neg_y`` travels with the ``y`` block, ``neg_x``
  stays with ``x``, and each tile also forms ``[block, block, k]`` logits; memory per device
  :math:`O(b\,(k + k')\,d + \text{block\_size}^2\,\max(k, k'))`, ring traffic :math:`(1 + k)`
  times the plain loss's.

  Args:
    x: [batch, dim] embeddings of one modality (the local shard under ``axis_name``).
    y: [batch, dim] embeddings of the other; ``y[i]`` is the positive of ``x[i]``.
    scale: scalar logit scale :math:`t`.
    neg_y: [batch, k, dim] hard negatives for the ``x`` anchors (in ``y``'s modality).
    neg_x: optional [batch, k', dim] hard negatives for the ``y`` anchors (in ``x``'s modality).
    shared: every anchor sees every hard negative of the batch (NegCLIP), not only its own.
    axis_name: the ``jax.shard_map`` axis the batch is split over; None for a whole batch.
    block_size: largest tile side on a device; None picks one.

  Returns:
    float32 scalar, identical on every device of ``axis_name``.

  Example:
    >>> images = captions = jnp.eye(4)  # four orthogonal pairs
    >>> negatives = -captions[:, None, :]  # one hard negative per image: [batch, 1, dim]
    >>> loss = hard_negative_loss(images, captions, 2.0, negatives)
    >>> print(f"{loss:.3f}")  # (log(1 + 3 e^-2 + e^-4) + log(1 + 3 e^-2)) / 2
    0.347

  References:
    Yuksekgonul et al., When and Why Vision-Language Models Behave like Bags-of-Words (NegCLIP),
    ICLR 2023 (hard-negative captions appended as columns); the hard-negative seeds of
    ``LOSSES.md`` L5 (CLIP-IN's symmetric hard-negative loss; generative negative mining).
  """
  fn = "hard_negative_loss"
  _checks.check_embeddings(fn, x=x, y=y)
  _checks.check_scalars(fn, scale=scale)
  _checks.check_block_size(fn, block_size)
  batch, dim = np.shape(x)
  _check_negatives(fn, "neg_y", neg_y, batch, dim)
  if neg_x is not None:
    _check_negatives(fn, "neg_x", neg_x, batch, dim)
  has_x = neg_x is not None
  params = {"scale": scale}
  if shared:
    row = {"neg_x": neg_x} if has_x else None
    return ring_loss(
      _hard_negative_tiles(True, has_x),
      x,
      y,
      params,
      row=row,
      col={"neg_y": neg_y},
      axis_name=axis_name,
      block_size=block_size,
    )
  # Each anchor's own negatives are local: one log-sum-exp per anchor, before the ring.
  row = {"extra_x": _extra_lse(x, neg_y, scale)}
  if has_x:
    row["extra_y"] = _extra_lse(y, neg_x, scale)
  return ring_loss(
    _hard_negative_tiles(False, has_x),
    x,
    y,
    params,
    row=row,
    axis_name=axis_name,
    block_size=block_size,
  )


def _check_negatives(fn, name, neg, batch, dim):
  shape = np.shape(neg)
  if len(shape) != 3 or shape[0] != batch or shape[2] != dim or shape[1] < 1:
    raise ValueError(
      f"{fn}: `{name}` must be [batch, k, dim] = [{batch}, k >= 1, {dim}], got shape {shape}."
    )
  if not jnp.issubdtype(jnp.result_type(neg), jnp.floating):
    raise TypeError(f"{fn}: `{name}` must be a floating array, got dtype {jnp.result_type(neg)}.")


def _extra_lse(anchors, negatives, scale):
  """[b] log sum_h exp(t a_i . n_ih)."""
  logits = jnp.einsum(
    "id,ihd->ih",
    _pairwise.f32(anchors),
    _pairwise.f32(negatives),
    preferred_element_type=jnp.float32,
  )
  return jax.nn.logsumexp(jnp.asarray(scale, jnp.float32) * logits, axis=-1)


def _shared_lse(anchors, negatives, scale):
  """[anchors, owners] log sum_h exp(t a_i . n_jh)."""
  logits = jnp.einsum(
    "id,jhd->ijh", anchors, _pairwise.f32(negatives), preferred_element_type=jnp.float32
  )
  return jax.nn.logsumexp(scale * logits, axis=-1)


@functools.cache
def _hard_negative_tiles(shared: bool, has_x: bool) -> TileLoss:
  def tile_fn(tile: Tile):
    t = tile.params["scale"]
    logits = t * tile.sim
    values = {"lse_x": logits, "lse_y": logits}
    if shared:
      values["hard_x"] = _shared_lse(tile.x, tile.col["neg_y"], t)  # [i, j]: x_i vs y~_j.
      if has_x:  # [i, j]: y_j against the negatives x~_i.
        values["hard_y"] = _shared_lse(tile.y, tile.row["neg_x"], t).T
    return values

  def finalize_fn(home: ReducedBlock):
    s = home.stats
    hard_x = s["hard_x"] if shared else home.row["extra_x"]
    lse_x, lse_y = jnp.logaddexp(s["lse_x"], hard_x), s["lse_y"]
    if has_x:
      lse_y = jnp.logaddexp(lse_y, s["hard_y"] if shared else home.row["extra_y"])
    positive = home.params["scale"] * _pairwise.rowdot(home.x, home.y)
    return jnp.sum(lse_x + lse_y - 2 * positive) / (2 * home.global_batch)

  reductions = {"lse_x": "row_lse", "lse_y": "col_lse"}
  if shared:
    reductions["hard_x"] = "row_lse"
    if has_x:
      reductions["hard_y"] = "col_lse"
  return TileLoss(tile_fn=tile_fn, reductions=reductions, finalize_fn=finalize_fn)
