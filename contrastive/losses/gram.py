"""GRAM: contrastive alignment of k modalities by the volume of the parallelotope they span."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from contrastive.losses import _checks
from contrastive.losses import softmax
from contrastive.losses._modalities import check_modalities
from contrastive.losses.ring import ReducedBlock
from contrastive.losses.ring import Tile
from contrastive.losses.ring import TileLoss
from contrastive.losses.ring import ring_loss

# A Gram determinant below this is taken as this: the volume is floored at 1e-6, which keeps
# the gradient of sqrt(|det|) finite where k vectors are (numerically) linearly dependent.
DET_FLOOR = 1e-12
_COFACTOR_MAX_K = 5  # Laplace expansion (k! products) up to here, batched LU beyond


def gram_loss(
  embeddings,
  scale: jax.typing.ArrayLike,
  *,
  label_smoothing: float = 0.0,
  axis_name: str | tuple[str, ...] | None = None,
  block_size: int | None = None,
) -> jax.Array:
  r"""Symmetric cross-entropy over the volumes of the anchor and the other modalities (GRAM).

  With the anchor modality :math:`a` (``embeddings[0]``, the text in GRAM) and the others
  :math:`m^1, \dots, m^{k-1}`, the volume of the parallelotope spanned by the anchor of sample
  :math:`i` and the other modalities of sample :math:`j`, and the logits :math:`l_{ij}`:

  .. math::
    \mathrm{Vol}_{ij} = \sqrt{\big|\det G_{ij}\big|}, \quad
    G_{ij} = A_{ij}^\top A_{ij}, \quad A_{ij} = [a_i, m^1_j, \dots, m^{k-1}_j], \qquad
    l_{ij} = -t\, \mathrm{Vol}_{ij}

  .. math::
    L = \frac{1}{2B} \sum_i \Big[ \sum_j -q_{ij} \log \operatorname{softmax}_j(l_{ij})
        + \sum_j -q_{ij} \log \operatorname{softmax}_j(l_{ji}) \Big], \qquad
    q_{ij} = (1-\varepsilon)\,\delta_{ij} + \varepsilon / B

  the anchor-to-data and data-to-anchor cross-entropies of the authors' code (ispamm/GRAM
  ``model/gram.py``, ``forward_ret``: ``F.cross_entropy(-volume / contra_temp, targets,
  label_smoothing=0.1)`` both ways; volume as ``utils/volume.py``). The GRAM code uses
  :math:`\varepsilon = 0.1` and :math:`t = 1/\tau` with :math:`\tau` learnable from 0.07; the
  paper's data-anchor matching (ITM) term is `contrastive.losses.gram_itm_loss` (registry
  ``gram_itm``, a second term of the run).
  Volumes are floored at :math:`\sqrt{10^{-12}}` so gradients stay finite at degenerate tuples.

  For ``k = 2`` and unit vectors, :math:`\mathrm{Vol}_{ij} = \sqrt{1 - (a_i \cdot m_j)^2} =
  |\sin\theta_{ij}|`: the CLIP loss with the logit :math:`t \cos\theta` replaced by
  :math:`-t |\sin\theta|` (the paper's area of the parallelogram).

  Runs on the ring: the anchor stays as ``x`` and the other ``k - 1`` modalities travel as the
  pytree ``y``; each tile forms the ``k x k`` Gram matrices from ``k - 1`` matmuls and the
  per-column intra-modal dot products, and their determinants in closed form (Laplace expansion,
  ``k <= 5``). Memory per device :math:`O(k\, b\, d + k^2\, \text{block\_size}^2)`.

  Args:
    embeddings: ``k >= 2`` aligned ``[batch, dim]`` arrays (local shards under ``axis_name``);
      ``embeddings[0]`` is the anchor.
    scale: scalar :math:`t = 1/\tau` (already exponentiated).
    label_smoothing: :math:`\varepsilon` in [0, 1).
    axis_name: the ``jax.shard_map`` axis the batch is split over; None for a whole batch.
    block_size: largest tile side on a device; None picks one.

  Returns:
    float32 scalar, identical on every device of ``axis_name``.

  Example:
    >>> u = jax.random.normal(jax.random.key(1), (3, 8, 16))  # 3 modalities, batch 8, dim 16
    >>> text, video, audio = u / jnp.linalg.norm(u, axis=-1, keepdims=True)
    >>> loss = gram_loss([text, video, audio], 1 / 0.07, label_smoothing=0.1)
    >>> print(f"{loss:.3f}")
    2.785

  References:
    Cicchetti, Grassucci, Sigillo, Comminiello. Gramian Multimodal Representation Learning and
    Alignment. ICLR 2025. Code: ispamm/GRAM.
  """
  fn = "gram_loss"
  emb = check_modalities(fn, embeddings)
  _checks.check_scalars(fn, scale=scale)
  _checks.check_block_size(fn, block_size)
  _checks.check_label_smoothing(fn, label_smoothing)
  return ring_loss(
    _gram_tiles(float(label_smoothing)),
    emb[0],
    emb[1:],
    {"scale": scale},
    axis_name=axis_name,
    block_size=block_size,
  )


def volume(gram_entries) -> jax.Array:
  """sqrt(|det G|) (floored) from the ``k x k`` nested list of broadcastable Gram entries."""
  det = _det(gram_entries)
  return jnp.sqrt(jnp.maximum(jnp.abs(det), DET_FLOOR))


def _det(m):
  k = len(m)
  if k == 1:
    return m[0][0]
  if k == 2:
    return m[0][0] * m[1][1] - m[0][1] * m[1][0]
  if k > _COFACTOR_MAX_K:
    shape = jnp.broadcast_shapes(*(jnp.shape(e) for row in m for e in row))
    stacked = jnp.stack([jnp.stack([jnp.broadcast_to(e, shape) for e in row], -1) for row in m], -2)
    return jnp.linalg.det(stacked)
  total = 0.0
  for j in range(k):
    minor = [[m[r][c] for c in range(k) if c != j] for r in range(1, k)]
    term = m[0][j] * _det(minor)
    total = total + term if j % 2 == 0 else total - term
  return total


def _gram_entries(x, ys, *, pairwise: bool):
  """The ``k x k`` Gram entries of ``[x, ys...]``, as a nested list of broadcastable arrays.

  ``pairwise``: every row of ``x`` with every column of ``ys`` (entries broadcast to
  ``[rows, cols]``); otherwise sample ``i`` of ``x`` with sample ``i`` of ``ys`` (``[batch]``).
  """
  k = len(ys) + 1
  dot = lambda u, v: jnp.sum(u * v, axis=-1)
  if pairwise:
    cross = lambda u, v: jnp.dot(u, v.T, preferred_element_type=jnp.float32)
    rows, cols = (lambda v: v[:, None]), (lambda v: v[None, :])
  else:
    cross, rows, cols = dot, (lambda v: v), (lambda v: v)
  entries = [[None] * k for _ in range(k)]
  entries[0][0] = rows(dot(x, x))
  for p in range(k - 1):
    entries[0][p + 1] = entries[p + 1][0] = cross(x, ys[p])
    for q in range(p, k - 1):
      entries[p + 1][q + 1] = entries[q + 1][p + 1] = cols(dot(ys[p], ys[q]))
  return entries


@functools.cache
def _gram_tiles(label_smoothing: float) -> TileLoss:
  def tile_fn(tile: Tile):
    logits = -tile.params["scale"] * volume(_gram_entries(tile.x, tile.y, pairwise=True))
    values = {"lse_xy": logits, "lse_yx": logits}
    if label_smoothing:
      values["logit_sum"] = logits
    return values

  def finalize_fn(home: ReducedBlock):
    f32 = lambda a: a.astype(jnp.float32)
    entries = _gram_entries(f32(home.x), [f32(y) for y in home.y], pairwise=False)
    positive = -home.params["scale"] * volume(entries)
    return softmax.symmetric_infonce(home, positive, label_smoothing)

  return TileLoss(
    tile_fn=tile_fn, reductions=softmax.infonce_reductions(label_smoothing), finalize_fn=finalize_fn
  )
