"""Alignment and uniformity on the hypersphere, alone and added to CLIP (the contrastive gap)."""

from __future__ import annotations

import functools
import math
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from contrastive.losses import _checks
from contrastive.losses import _pairwise
from contrastive.losses.ring import ReducedBlock
from contrastive.losses.ring import Tile
from contrastive.losses.ring import TileLoss
from contrastive.losses.ring import axis_size
from contrastive.losses.ring import ring_loss

VARIANTS = ("cua", "cuaxu")


def align_uniform_loss(
  x: jax.typing.ArrayLike,
  y: jax.typing.ArrayLike,
  *,
  alpha: float = 2.0,
  t: float = 2.0,
  lam: float = 1.0,
  axis_name: str | tuple[str, ...] | None = None,
  block_size: int | None = None,
) -> jax.Array:
  r"""Alignment plus uniformity (Wang & Isola), optimised directly.

  .. math::
    L = \frac{1}{B}\sum_i \lVert x_i - y_i \rVert^\alpha
        + \frac{\lambda}{2}\big[U(x) + U(y)\big], \qquad
    U(z) = \log \frac{1}{B(B-1)} \sum_{i \ne j} e^{-t \lVert z_i - z_j \rVert^2}

  (the mean over ordered pairs :math:`i \ne j` equals the paper's mean over ``pdist``'s
  :math:`i < j`). There is no logit scale.

  Runs on the ring: both ``x`` and ``y`` travel, each tile gives two masked log-sum-exps of
  squared distances (from one matmul each), and the global log-mean-exp combines the devices'
  partial log-sum-exps after the ring. Memory per device :math:`O(b\,d + \text{block\_size}^2)`.

  Args:
    x: [batch, dim] embeddings of one modality (the local shard under ``axis_name``).
    y: [batch, dim] embeddings of the other; ``y[i]`` is the positive of ``x[i]``.
    alpha: alignment exponent :math:`\alpha > 0` (2 in the paper).
    t: uniformity temperature :math:`t > 0` (2 in the paper).
    lam: uniformity weight :math:`\lambda` (1 in the paper's recipe).
    axis_name: the ``jax.shard_map`` axis the batch is split over; None for a whole batch.
    block_size: largest tile side on a device; None picks one.

  Returns:
    float32 scalar, identical on every device of ``axis_name``. Needs a global batch of 2 or
    more.

  Example:
    >>> x = y = jnp.eye(4)  # aligned pairs, every two samples at squared distance 2
    >>> loss = align_uniform_loss(x, y, alpha=2.0, t=2.0)
    >>> print(f"{loss:.3f}")  # 0 + (U(x) + U(y)) / 2 with U = -2 t
    -4.000

  References:
    Wang & Isola, Understanding Contrastive Representation Learning through Alignment and
    Uniformity on the Hypersphere, ICML 2020; the authors' ``align_loss``/``uniform_loss``
    (ssnl/align_uniform) and their two-view recipe ``align + lam * (unif(x) + unif(y)) / 2``.
  """
  fn = "align_uniform_loss"
  _check(fn, x, y, None, alpha, t, axis_name, block_size)
  parts = _run(
    x,
    y,
    {},
    clip=False,
    cross=False,
    alpha=float(alpha),
    t=float(t),
    axis_name=axis_name,
    block_size=block_size,
  )
  return parts["align"] + lam * (parts["unif_x"] + parts["unif_y"]) / 2


def contrastive_gap_loss(
  x: jax.typing.ArrayLike,
  y: jax.typing.ArrayLike,
  scale: jax.typing.ArrayLike,
  *,
  variant: Literal["cua", "cuaxu"] = "cuaxu",
  alpha: float = 2.0,
  t: float = 2.0,
  axis_name: str | tuple[str, ...] | None = None,
  block_size: int | None = None,
) -> jax.Array:
  r"""CLIP plus alignment and uniformity, per modality (CUA) and across modalities (CUAXU).

  .. math::
    L_{CUA} = L_{CLIP} + \frac{1}{B}\sum_i \lVert x_i - y_i \rVert^\alpha
        + \tfrac12 \big[U(x) + U(y)\big], \qquad
    L_{CUAXU} = L_{CUA} + \log \frac{1}{B(B-1)} \sum_{i \ne j} e^{-t \lVert x_i - y_j \rVert^2}

  with :math:`L_{CLIP}` the symmetric InfoNCE of :func:`softmax_loss` at scale :math:`t_{CLIP}`
  and :math:`U` the uniformity of :func:`align_uniform_loss`.

  Runs on the ring, in one pass: both ``x`` and ``y`` travel, and each tile gives the two CLIP
  log-sum-exps and the two (three) uniformity log-sum-exps. Memory per device
  :math:`O(b\,d + \text{block\_size}^2)`.

  Args:
    x: [batch, dim] image embeddings (the local shard under ``axis_name``).
    y: [batch, dim] text embeddings; ``y[i]`` is the positive of ``x[i]``.
    scale: scalar CLIP logit scale (already exponentiated).
    variant: ``"cua"`` or ``"cuaxu"`` (adds the cross-modal uniformity).
    alpha: alignment exponent (2 in the paper).
    t: uniformity temperature (2 in the paper).
    axis_name: the ``jax.shard_map`` axis the batch is split over; None for a whole batch.
    block_size: largest tile side on a device; None picks one.

  Returns:
    float32 scalar, identical on every device of ``axis_name``.

  Example:
    >>> x = y = jnp.eye(4)
    >>> loss = contrastive_gap_loss(x, y, 2.0, variant="cua")
    >>> print(f"{loss:.3f}")  # CLIP's log(1 + 3 e^-2), alignment 0, uniformity -2 t = -4
    -3.659

  References:
    Fahim, Murphy & Fyshe, It's Not a Modality Gap: Characterizing and Addressing the
    Contrastive Gap, 2024; terms and weights as in the authors' ``compute_CUA_loss`` and
    ``compute_CUAXU_loss`` (which normalise inside; this function, like every loss here, takes
    embeddings as given).
  """
  fn = "contrastive_gap_loss"
  if variant not in VARIANTS:
    raise ValueError(f"{fn}: variant must be one of {VARIANTS}, got {variant!r}.")
  _check(fn, x, y, scale, alpha, t, axis_name, block_size)
  cross = variant == "cuaxu"
  parts = _run(
    x,
    y,
    {"scale": scale},
    clip=True,
    cross=cross,
    alpha=float(alpha),
    t=float(t),
    axis_name=axis_name,
    block_size=block_size,
  )
  loss = parts["clip"] + parts["align"] + (parts["unif_x"] + parts["unif_y"]) / 2
  return loss + parts["unif_xy"] if cross else loss


def _check(fn, x, y, scale, alpha, t, axis_name, block_size):
  _checks.check_embeddings(fn, x=x, y=y)
  if scale is not None:
    _checks.check_scalars(fn, scale=scale)
  _checks.check_block_size(fn, block_size)
  _pairwise.check_positive(fn, alpha=alpha, t=t)
  _pairwise.check_global_batch(fn, np.shape(x)[0], axis_name)


def _run(x, y, params, *, clip, cross, alpha, t, axis_name, block_size):
  n_dev = axis_size(axis_name)
  tiles = _geometry_tiles(clip, cross, alpha, t, n_dev)
  both = {"x": x, "y": y}
  out = ring_loss(tiles, both, both, params, axis_name=axis_name, block_size=block_size)
  n = np.shape(x)[0] * n_dev
  log_pairs = math.log(n * (n - 1))
  parts = {"clip": out[0], "align": out[1]}
  names = ["unif_x", "unif_y"] + (["unif_xy"] if cross else [])
  for k, name in enumerate(names):  # each device's partial log-sum-exp sits in its own slot
    parts[name] = jax.nn.logsumexp(out[2 + k * n_dev : 2 + (k + 1) * n_dev]) - log_pairs
  return parts


@functools.cache
def _geometry_tiles(clip: bool, cross: bool, alpha: float, t: float, n_dev: int) -> TileLoss:
  unif = ["unif_x", "unif_y"] + (["unif_xy"] if cross else [])

  def tile_fn(tile: Tile):
    off_diagonal = ~tile.positive
    pairs = {
      "unif_x": (tile.x["x"], tile.y["x"]),
      "unif_y": (tile.x["y"], tile.y["y"]),
      "unif_xy": (tile.x["x"], tile.y["y"]),
    }
    values = {
      name: jnp.where(off_diagonal, -t * _pairwise.sq_dists(*pairs[name]), _pairwise.NEG_INF)
      for name in unif
    }
    if clip:
      logits = tile.params["scale"] * _pairwise.dot(tile.x["x"], tile.y["y"])
      values.update(lse_xy=logits, lse_yx=logits)
    return values

  def finalize_fn(home: ReducedBlock):
    x, y = home.x["x"], home.y["y"]
    n = home.global_batch
    diff = _pairwise.f32(x) - _pairwise.f32(y)
    align = jnp.sum(_pairwise.safe_pow(jnp.sum(diff * diff, axis=-1), alpha / 2)) / n
    clip_share = jnp.zeros((), jnp.float32)
    if clip:
      positive = home.params["scale"] * _pairwise.rowdot(x, y)
      clip_share = jnp.sum(home.stats["lse_xy"] + home.stats["lse_yx"] - 2 * positive) / (2 * n)
    slots = [
      _pairwise.device_slot(jax.nn.logsumexp(home.stats[name]), home, n_dev) for name in unif
    ]
    return jnp.concatenate([jnp.stack([clip_share, align])] + slots)

  reductions = {name: "row_lse" for name in unif}
  if clip:
    reductions.update(lse_xy="row_lse", lse_yx="col_lse")
  return TileLoss(tile_fn=tile_fn, reductions=reductions, finalize_fn=finalize_fn)
