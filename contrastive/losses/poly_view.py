"""Poly-view contrastive learning: each view of a sample against the rest of its M views."""

from __future__ import annotations

import functools
import math
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from contrastive.losses import _checks
from contrastive.losses import _pairwise
from contrastive.losses._modalities import check_modalities
from contrastive.losses._modalities import masked_logsumexp
from contrastive.losses.ring import ReducedBlock
from contrastive.losses.ring import Tile
from contrastive.losses.ring import TileLoss
from contrastive.losses.ring import ring_loss

AGGREGATES = ("geometric", "arithmetic")


def poly_view_loss(
  embeddings,
  scale: jax.typing.ArrayLike,
  *,
  aggregate: Literal["geometric", "arithmetic"] = "geometric",
  axis_name: str | tuple[str, ...] | None = None,
  block_size: int | None = None,
) -> jax.Array:
  r"""Poly-view contrastive loss (PVC): one-vs-rest, geometric or arithmetic over the rest.

  With :math:`M` views :math:`u^1, \dots, u^M` (``embeddings``), :math:`s^{\alpha\gamma}_{ij} =
  t\, u^\alpha_i \cdot u^\gamma_j`, and the probability that anchor :math:`u^\alpha_i` picks its
  view :math:`\beta \ne \alpha` among that view and every view of every other sample,

  .. math::
    \log p_{i\alpha\beta} = s^{\alpha\beta}_{ii} - \log\Big(e^{s^{\alpha\beta}_{ii}}
        + \sum_{j \ne i} \sum_{\gamma=1}^{M} e^{s^{\alpha\gamma}_{ij}}\Big)

  the geometric (G-PVC) and arithmetic (A-PVC) objectives aggregate the :math:`M-1` other views:

  .. math::
    L_G = -\frac{1}{BM} \sum_{i,\alpha} \frac{1}{M-1} \sum_{\beta \ne \alpha}
        \log p_{i\alpha\beta}, \qquad
    L_A = -\frac{1}{BM} \sum_{i,\alpha} \log \frac{1}{M-1} \sum_{\beta \ne \alpha}
        p_{i\alpha\beta}

  With :math:`M = 2` both are SimCLR's NT-Xent over the :math:`2B` views. The per-pair
  probabilities and the masking (an anchor's own other views leave its denominator) follow the
  paper's pseudocode as reimplemented by Koromilas et al. (``PVCLoss``); A-PVC is the log of the
  arithmetic mean of the probabilities (that reimplementation's arithmetic branch differs).

  Runs on the ring in one pass: the ``M`` views stay as ``x`` and travel as ``y``; each tile
  folds the ``M`` views of a column sample into one log-sum-exp per anchor view, so the
  denominators are ``M`` row log-sum-exps and the positives are local. Memory per device
  :math:`O(M\, b\, d + M^2\, \text{block\_size}^2)`.

  Args:
    embeddings: ``M >= 2`` aligned ``[batch, dim]`` views (local shards under ``axis_name``).
    scale: scalar logit scale :math:`t = 1/\tau` (already exponentiated).
    aggregate: ``"geometric"`` (G-PVC) or ``"arithmetic"`` (A-PVC).
    axis_name: the ``jax.shard_map`` axis the batch is split over; None for a whole batch.
    block_size: largest tile side on a device; None picks one.

  Returns:
    float32 scalar, identical on every device of ``axis_name``. Needs a global batch of 2 or
    more.

  Example:
    >>> u = jnp.eye(4)  # three identical views of four orthogonal samples
    >>> loss = poly_view_loss([u, u, u], 2.0)
    >>> print(f"{loss:.3f}")  # -log(e^t / (e^t + 9))
    0.797

  References:
    Shidani et al., Poly-View Contrastive Learning, ICLR 2024 (arXiv:2403.05490); the
    per-pair form as in pakoromilas/Multi-View-CL ``models/losses.py`` (``PVCLoss``).
  """
  fn = "poly_view_loss"
  views = check_modalities(fn, embeddings)
  _checks.check_scalars(fn, scale=scale)
  _checks.check_block_size(fn, block_size)
  if aggregate not in AGGREGATES:
    raise ValueError(f"{fn}: aggregate must be one of {AGGREGATES}, got {aggregate!r}.")
  _pairwise.check_global_batch(fn, np.shape(views[0])[0], axis_name)
  return ring_loss(
    _poly_view_tiles(len(views), aggregate),
    views,
    views,
    {"scale": scale},
    axis_name=axis_name,
    block_size=block_size,
  )


@functools.cache
def _poly_view_tiles(m: int, aggregate: str) -> TileLoss:
  def tile_fn(tile: Tile):
    t = tile.params["scale"]
    other_sample = ~tile.positive[None]  # [1, rows, cols]: a sample's own views are no negatives
    values = {}
    for a in range(m):
      logits = jnp.stack([t * _pairwise.dot(tile.x[a], tile.y[g]) for g in range(m)])
      values[f"neg_{a}"] = masked_logsumexp(logits, other_sample, axis=0)
    return values

  def finalize_fn(home: ReducedBlock):
    t = home.params["scale"]
    total = 0.0
    for a in range(m):
      log_p = []
      for b in range(m):
        if b != a:
          positive = t * _pairwise.rowdot(home.x[a], home.x[b])
          log_p.append(positive - jnp.logaddexp(positive, home.stats[f"neg_{a}"]))
      log_p = jnp.stack(log_p)  # [m - 1, b]
      if aggregate == "geometric":
        total += jnp.sum(jnp.mean(log_p, axis=0))
      else:
        total += jnp.sum(jax.nn.logsumexp(log_p, axis=0) - math.log(m - 1))
    return -total / (m * home.global_batch)

  reductions = {f"neg_{a}": "row_lse" for a in range(m)}
  return TileLoss(tile_fn=tile_fn, reductions=reductions, finalize_fn=finalize_fn)
