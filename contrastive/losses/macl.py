"""Model-aware contrastive learning: a temperature that follows the batch's alignment."""

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


def macl_loss(
  x: jax.typing.ArrayLike,
  y: jax.typing.ArrayLike,
  scale: jax.typing.ArrayLike,
  *,
  alpha: float = 0.5,
  a0: float = 0.0,
  axis_name: str | tuple[str, ...] | None = None,
  block_size: int | None = None,
) -> jax.Array:
  r"""MACL: InfoNCE at a temperature set by the batch's mean positive similarity, with each
  anchor reweighted by :math:`1 / (1 - P_i)`.

  With :math:`\tau_0 = 1/t` (``scale`` :math:`= t`):

  .. math::
    A = \operatorname{sg}\Big[\frac{1}{B}\sum_k x_k \cdot y_k\Big], \quad
    \tau = \tau_0\,\big(1 + \alpha (A - A_0)\big), \quad
    P_i = \operatorname{softmax}_j\!\big(x_i \cdot y_j / \tau\big)[i]

  .. math::
    L = \frac{1}{2B} \sum_i \Big[ -\operatorname{sg}\Big[\frac{1}{1 - P_i}\Big] \log P_i
        - \operatorname{sg}\Big[\frac{1}{1 - P'_i}\Big] \log P'_i \Big]

  (:math:`P'_i` the column softmax). :math:`A` is a global scalar: a ``psum`` over the mesh
  before the ring, stop-gradient as in the authors' code, so the gradient reaches the embeddings
  only through the logits and reaches ``scale`` through :math:`\tau`. The weight and the log are
  combined in log space from the negatives' log-sum-exp :math:`N_i` (with
  :math:`z_i = l_{ii} - N_i`: :math:`1/(1 - P_i) = 1/\sigma(-z_i)`,
  :math:`-\log P_i = \operatorname{softplus}(-z_i)`), so the product stays finite (about 1) when
  :math:`P_i \to 1`. Requires :math:`1 + \alpha (A - A_0) > 0` (always, for unit embeddings and
  :math:`\alpha \le 1`, :math:`A_0 = 0`).

  Runs on the ring: one scalar ``psum``, then two masked log-sum-exps. Memory per device
  :math:`O(b\,d + \text{block\_size}^2)`.

  Args:
    x: [batch, dim] embeddings of one modality (the local shard under ``axis_name``).
    y: [batch, dim] embeddings of the other; ``y[i]`` is the positive of ``x[i]``.
    scale: scalar base logit scale :math:`t = 1/\tau_0` (10 for the paper's :math:`\tau_0=0.1`).
    alpha: sensitivity :math:`\alpha \ge 0` of the temperature to the alignment.
    a0: alignment threshold :math:`A_0`.
    axis_name: the ``jax.shard_map`` axis the batch is split over; None for a whole batch.
    block_size: largest tile side on a device; None picks one.

  Returns:
    float32 scalar, identical on every device of ``axis_name``. Needs a global batch of 2 or
    more.

  Example:
    >>> x = y = jnp.eye(4)  # four orthogonal pairs: A = 1
    >>> loss = macl_loss(x, y, 5.0, alpha=0.5)
    >>> print(f"{loss:.3f}")
    1.052

  References:
    Huang et al., Model-Aware Contrastive Learning: Towards Escaping the Dilemmas, ICML 2023;
    the authors' ``MACLb`` (chenhaoxing/MACL, ``macl.py``: detached :math:`A`,
    :math:`\tau = \tau_0 (1 + \beta A)`, detached weight :math:`1/\sum_{j \ne i} P_{ij}`) and
    lightly's ``MACLLoss`` (:math:`A_0`, default :math:`\alpha = 0.5`). The authors contrast one
    direction (``fx @ gx.T``); this is its symmetric, CLIP-style form.
  """
  fn = "macl_loss"
  _checks.check_embeddings(fn, x=x, y=y)
  _checks.check_scalars(fn, scale=scale)
  _checks.check_block_size(fn, block_size)
  if not np.isfinite(alpha) or alpha < 0:
    raise ValueError(f"{fn}: alpha must be a finite number >= 0, got {alpha!r}.")
  n = _pairwise.check_global_batch(fn, np.shape(x)[0], axis_name)
  alignment = jax.lax.stop_gradient(_pairwise.global_sum(_pairwise.rowdot(x, y), axis_name) / n)
  scale = jnp.asarray(scale, jnp.float32) / (1.0 + alpha * (alignment - a0))
  return ring_loss(_MACL_TILES, x, y, {"scale": scale}, axis_name=axis_name, block_size=block_size)


def _tile_fn(tile: Tile):
  negatives = _pairwise.negative_logits(tile)
  return {"neg_x": negatives, "neg_y": negatives}


def _weighted_nll(z):
  """sg[1 / (1 - sigma(z))] * -log sigma(z), in log space."""
  return jnp.exp(jax.lax.stop_gradient(jax.nn.softplus(z)) + _pairwise.log_softplus(-z))


def _finalize_fn(home: ReducedBlock):
  positive = home.params["scale"] * _pairwise.rowdot(home.x, home.y)
  per_anchor = _weighted_nll(positive - home.stats["neg_x"]) + _weighted_nll(
    positive - home.stats["neg_y"]
  )
  return jnp.sum(per_anchor) / (2 * home.global_batch)


_MACL_TILES = TileLoss(
  tile_fn=_tile_fn, reductions={"neg_x": "row_lse", "neg_y": "col_lse"}, finalize_fn=_finalize_fn
)
