"""Focal variants of the sigmoid and softmax contrastive losses: easy pairs weigh less."""

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


def sigmoid_focal_loss(
  x: jax.typing.ArrayLike,
  y: jax.typing.ArrayLike,
  scale: jax.typing.ArrayLike,
  bias: jax.typing.ArrayLike,
  *,
  gamma: float = 1.0,
  alpha: float = 0.5,
  axis_name: str | tuple[str, ...] | None = None,
  block_size: int | None = None,
) -> jax.Array:
  r"""Sigmoid focal loss over all pairs of the global batch (RO-ViT's focal contrastive loss).

  With :math:`l_{ij} = t\, x_i \cdot y_j + b`, :math:`z_{ij} = \pm 1` (positive on the
  diagonal) and :math:`p_{ij} = \sigma(z_{ij} l_{ij})`:

  .. math::
    L = -\frac{1}{B} \sum_i \sum_j a_{ij}\, (1 - p_{ij})^\gamma \log p_{ij}, \qquad
    a_{ij} = \begin{cases} 2\alpha & i = j \\ 2(1 - \alpha) & i \ne j \end{cases}

  With ``gamma=0`` and ``alpha=0.5`` it is :func:`sigmoid_loss`. Both factors are computed in
  log space (:math:`(1-p)^\gamma = e^{\gamma \log\sigma(-z l)}`), finite for any logit.

  Runs on the ring in one fused pass (the loss is a plain sum over pairs). Memory per device
  :math:`O(b\,d + \text{block\_size}^2)`.

  Args:
    x: [batch, dim] embeddings of one modality (the local shard under ``axis_name``).
    y: [batch, dim] embeddings of the other; ``y[i]`` is the positive of ``x[i]``.
    scale: scalar logit scale :math:`t`.
    bias: scalar logit bias :math:`b`.
    gamma: focusing exponent :math:`\gamma \ge 0` (1 in the RO-ViT code).
    alpha: positive/negative balance :math:`\alpha \in [0, 1]` (0.5, i.e. none, in RO-ViT).
    axis_name: the ``jax.shard_map`` axis the batch is split over; None for a whole batch.
    block_size: largest tile side on a device; None picks one.

  Returns:
    float32 scalar, identical on every device of ``axis_name``.

  Example:
    >>> x = y = jnp.eye(4)  # positives at similarity 1, negatives at 0
    >>> loss = sigmoid_focal_loss(x, y, 10.0, -10.0, gamma=1.0)
    >>> print(f"{loss:.3f}")  # the positives' (1/2) log 2 each, the negatives' nearly 0
    0.347

  References:
    Kim, Angelova & Kuo, Region-Aware Pretraining for Open-Vocabulary Object Detection with
    Vision Transformers (RO-ViT), CVPR 2023; the authors' ``compute_focal_contrastive_loss``
    (google-research/google-research, ``fvlm/rovit/focal_contrastive_loss.py``): the modulator
    and the ``2 alpha`` / ``2 (1 - alpha)`` weights are theirs; their sum is normalised here by
    :math:`B` as in :func:`sigmoid_loss`. Lin et al., Focal Loss for Dense Object Detection, 2017.
  """
  fn = "sigmoid_focal_loss"
  _checks.check_embeddings(fn, x=x, y=y)
  _checks.check_scalars(fn, scale=scale, bias=bias)
  _checks.check_block_size(fn, block_size)
  _check_gamma(fn, gamma)
  if not 0.0 <= alpha <= 1.0:
    raise ValueError(f"{fn}: alpha must be in [0, 1], got {alpha!r}.")
  return ring_loss(
    _sigmoid_focal_tiles(float(gamma), float(alpha)),
    x,
    y,
    {"scale": scale, "bias": bias},
    axis_name=axis_name,
    block_size=block_size,
  )


def softmax_focal_loss(
  x: jax.typing.ArrayLike,
  y: jax.typing.ArrayLike,
  scale: jax.typing.ArrayLike,
  *,
  gamma: float = 2.0,
  axis_name: str | tuple[str, ...] | None = None,
  block_size: int | None = None,
) -> jax.Array:
  r"""Softmax focal loss: CLIP's symmetric InfoNCE with each anchor weighted by
  :math:`(1 - P_i)^\gamma`.

  With :math:`P_i = \operatorname{softmax}_j(l_{ij})[i]` and :math:`P'_i` its column
  counterpart (:math:`l_{ij} = t\, x_i \cdot y_j`):

  .. math::
    L = -\frac{1}{2B} \sum_i \Big[ (1 - P_i)^\gamma \log P_i + (1 - P'_i)^\gamma \log P'_i \Big]

  With ``gamma=0`` it is :func:`softmax_loss`. Computed from the log-sum-exp of the negatives
  :math:`N_i = \log \sum_{j \ne i} e^{l_{ij}}`: with :math:`z_i = l_{ii} - N_i`,
  :math:`\log P_i = \log\sigma(z_i)` and :math:`\log(1 - P_i) = \log\sigma(-z_i)`, finite even
  when :math:`P_i` rounds to 1.

  Runs on the ring: two masked log-sum-exps, then per-anchor terms. Memory per device
  :math:`O(b\,d + \text{block\_size}^2)`.

  Args:
    x: [batch, dim] embeddings of one modality (the local shard under ``axis_name``).
    y: [batch, dim] embeddings of the other; ``y[i]`` is the positive of ``x[i]``.
    scale: scalar logit scale :math:`t`.
    gamma: focusing exponent :math:`\gamma \ge 0` (2, Lin et al.'s default).
    axis_name: the ``jax.shard_map`` axis the batch is split over; None for a whole batch.
    block_size: largest tile side on a device; None picks one.

  Returns:
    float32 scalar, identical on every device of ``axis_name``. Needs a global batch of 2 or
    more.

  Example:
    >>> x = y = jnp.eye(4)  # four orthogonal pairs
    >>> loss = softmax_focal_loss(x, y, 2.0, gamma=2.0)
    >>> print(f"{loss:.3f}")  # (1 - P)^2 (-log P), P = e^2 / (e^2 + 3)
    0.028

  References:
    Park & Han, Multi-Modal Representation Learning with Text-Driven Soft Masks, CVPR 2023 (a
    focal loss for the ITC objective). No public code was found; the form is ``LOSSES.md``'s
    reconstruction (K-L): the focal modulator on the positive's softmax probability, in both
    directions; the paper's :math:`\gamma` is not verified. Lin et al., 2017.
  """
  fn = "softmax_focal_loss"
  _checks.check_embeddings(fn, x=x, y=y)
  _checks.check_scalars(fn, scale=scale)
  _checks.check_block_size(fn, block_size)
  _check_gamma(fn, gamma)
  _pairwise.check_global_batch(fn, np.shape(x)[0], axis_name)
  return ring_loss(
    _softmax_focal_tiles(float(gamma)),
    x,
    y,
    {"scale": scale},
    axis_name=axis_name,
    block_size=block_size,
  )


def _check_gamma(fn, gamma):
  if not np.isfinite(gamma) or gamma < 0:
    raise ValueError(f"{fn}: gamma must be a finite number >= 0, got {gamma!r}.")


def _focal_nll(z: jax.Array, gamma: float) -> jax.Array:
  """:math:`-(1 - \\sigma(z))^\\gamma \\log \\sigma(z)`, in log space."""
  nll = -jax.nn.log_sigmoid(z)
  return nll if gamma == 0 else jnp.exp(gamma * jax.nn.log_sigmoid(-z)) * nll


@functools.cache
def _sigmoid_focal_tiles(gamma: float, alpha: float) -> TileLoss:
  def tile_fn(tile: Tile):
    logits = tile.params["scale"] * tile.sim + tile.params["bias"]
    positive = tile.positive
    weight = jnp.where(positive, 2 * alpha, 2 * (1 - alpha))
    return {"focal": weight * _focal_nll(jnp.where(positive, logits, -logits), gamma)}

  def finalize_fn(home: ReducedBlock):
    return jnp.sum(home.stats["focal"]) / home.global_batch

  return TileLoss(
    tile_fn=tile_fn, reductions={"focal": "row_sum"}, finalize_fn=finalize_fn, linear=True
  )


@functools.cache
def _softmax_focal_tiles(gamma: float) -> TileLoss:
  def tile_fn(tile: Tile):
    negatives = _pairwise.negative_logits(tile)
    return {"neg_x": negatives, "neg_y": negatives}

  def finalize_fn(home: ReducedBlock):
    positive = home.params["scale"] * _pairwise.rowdot(home.x, home.y)
    per_anchor = _focal_nll(positive - home.stats["neg_x"], gamma) + _focal_nll(
      positive - home.stats["neg_y"], gamma
    )
    return jnp.sum(per_anchor) / (2 * home.global_batch)

  return TileLoss(
    tile_fn=tile_fn, reductions={"neg_x": "row_lse", "neg_y": "col_lse"}, finalize_fn=finalize_fn
  )
