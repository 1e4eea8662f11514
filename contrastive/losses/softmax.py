"""The symmetric InfoNCE loss of CLIP, exact over the whole mesh."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from contrastive.losses import _checks
from contrastive.losses.ring import Precision
from contrastive.losses.ring import ReducedBlock
from contrastive.losses.ring import Tile
from contrastive.losses.ring import TileLoss
from contrastive.losses.ring import ring_loss


def softmax_loss(
  x: jax.typing.ArrayLike,
  y: jax.typing.ArrayLike,
  scale: jax.typing.ArrayLike,
  *,
  axis_name: str | tuple[str, ...] | None = None,
  label_smoothing: float = 0.0,
  block_size: int | None = None,
  precision: Precision = None,
) -> jax.Array:
  r"""Symmetric softmax cross-entropy over all pairs of the global batch (CLIP).

  With logits :math:`l_{ij} = t\, x_i \cdot y_j` and targets
  :math:`q_{ij} = (1-\varepsilon)\,\delta_{ij} + \varepsilon / B`:

  .. math::
    L = \frac{1}{2B} \sum_i \Big[ \sum_j -q_{ij} \log \operatorname{softmax}_j(l_{ij})
        + \sum_j -q_{ij} \log \operatorname{softmax}_j(l_{ji}) \Big]

  which the ring computes as :math:`\frac{1}{2B}\sum_i [\mathrm{LSE}_j l_{ij} + \mathrm{LSE}_j
  l_{ji} - 2(1-\varepsilon) l_{ii}] - \frac{\varepsilon}{B^2} \sum_{ij} l_{ij}`, with both
  log-sum-exps accumulated tile by tile and never a ``[B, B]`` or ``[b, B]`` array.

  Args:
    x: [batch, dim] embeddings of one modality (the local shard under ``axis_name``).
    y: [batch, dim] embeddings of the other; ``y[i]`` is the positive of ``x[i]``.
    scale: scalar logit scale :math:`t` (already exponentiated).
    axis_name: the ``jax.shard_map`` axis the batch is split over; None for a whole batch.
    label_smoothing: :math:`\varepsilon` in [0, 1).
    block_size: largest tile side on a device; None picks one.
    precision: of the similarity products (``jax.lax.Precision`` or its name); None keeps the
      backend's default, which on TPU rounds the embeddings to bfloat16 for the product (see
      ``ring_loss``); ``"highest"`` computes them in float32.

  Returns:
    float32 scalar, identical on every device of ``axis_name``.

  Example:
    >>> x = y = jnp.eye(4)  # four orthogonal pairs: logits t on the diagonal, 0 elsewhere
    >>> loss = softmax_loss(x, y, 2.0)
    >>> print(f"{loss:.3f}")  # log(1 + 3 e^-2)
    0.341

  References:
    Radford et al., Learning Transferable Visual Models From Natural Language Supervision, 2021.
    Wang et al., Breaking the Memory Barrier: Near Infinite Batch Size Scaling for Contrastive
    Loss (Inf-CL), 2024, for the tiled computation.
  """
  fn = "softmax_loss"
  _checks.check_embeddings(fn, x=x, y=y)
  _checks.check_scalars(fn, scale=scale)
  _checks.check_block_size(fn, block_size)
  _checks.check_label_smoothing(fn, label_smoothing)
  return ring_loss(
    _softmax_tiles(float(label_smoothing)),
    x,
    y,
    {"scale": scale},
    axis_name=axis_name,
    block_size=block_size,
    precision=precision,
  )


@functools.cache
def _softmax_tiles(label_smoothing: float) -> TileLoss:
  def tile_fn(tile: Tile):
    logits = tile.params["scale"] * tile.sim
    values = {"lse_xy": logits, "lse_yx": logits}
    if label_smoothing:
      values["logit_sum"] = logits
    return values

  def finalize_fn(home: ReducedBlock):
    positive = home.params["scale"] * jnp.sum(
      home.x.astype(jnp.float32) * home.y.astype(jnp.float32), axis=-1
    )
    return symmetric_infonce(home, positive, label_smoothing)

  return TileLoss(
    tile_fn=tile_fn, reductions=infonce_reductions(label_smoothing), finalize_fn=finalize_fn
  )


def infonce_reductions(label_smoothing: float) -> dict[str, str]:
  """The statistics of a symmetric InfoNCE: both log-sum-exps (and the logit sum to smooth)."""
  reductions = {"lse_xy": "row_lse", "lse_yx": "col_lse"}
  if label_smoothing:
    reductions["logit_sum"] = "row_sum"
  return reductions


def symmetric_infonce(home: ReducedBlock, positive: jax.Array, label_smoothing: float) -> jax.Array:
  """A device's share of the symmetric InfoNCE, from `infonce_reductions`' statistics.

  Args:
    home: the statistics `lse_xy`, `lse_yx` (and `logit_sum`) of the device's samples.
    positive: [batch] the logits of the positive pairs, :math:`l_{ii}`.
    label_smoothing: :math:`\\varepsilon`.
  """
  n = home.global_batch
  loss = (
    jnp.sum(home.stats["lse_xy"] + home.stats["lse_yx"])
    - 2 * (1 - label_smoothing) * jnp.sum(positive)
  ) / (2 * n)
  if label_smoothing:
    loss -= label_smoothing / n**2 * jnp.sum(home.stats["logit_sum"])
  return loss
