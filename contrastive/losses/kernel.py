"""Kernel InfoNCE: logits from a distance kernel instead of the dot product."""

from __future__ import annotations

import functools
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from contrastive.losses import _checks
from contrastive.losses import _pairwise
from contrastive.losses.ring import ReducedBlock
from contrastive.losses.ring import Tile
from contrastive.losses.ring import TileLoss
from contrastive.losses.ring import ring_loss

MIXTURES = ("sum", "concat")


def kernel_infonce_loss(
  x: jax.typing.ArrayLike,
  y: jax.typing.ArrayLike,
  scale: jax.typing.ArrayLike,
  *,
  gamma: float = 2.0,
  mix_weight: float = 1.0,
  mixture: Literal["sum", "concat"] = "sum",
  axis_name: str | tuple[str, ...] | None = None,
  block_size: int | None = None,
) -> jax.Array:
  r"""Symmetric InfoNCE on the kernel logits :math:`-t\,\lVert x_i - y_j \rVert^\gamma`.

  .. math::
    L_\gamma(x, y) = \frac{1}{2B} \sum_i \Big[ -l^\gamma_{ii} + \log \sum_j e^{l^\gamma_{ij}}
        - l^\gamma_{ii} + \log \sum_j e^{l^\gamma_{ji}} \Big], \qquad
    l^\gamma_{ij} = -t\, \lVert x_i - y_j \rVert^\gamma

  :math:`\gamma = 2` is the Gaussian kernel (on the unit sphere, InfoNCE at scale :math:`2t`),
  :math:`\gamma = 1` the Laplacian. Kernel mixtures, with :math:`\lambda` = ``mix_weight``:

  * ``"sum"`` (Simple-Sum): :math:`\lambda L_\gamma(x, y) + (1 - \lambda) L_2(x, y)`;
  * ``"concat"`` (Concatenation-Sum): :math:`\lambda L_\gamma(x^{(1)}, y^{(1)}) + (1 - \lambda)
    L_2(x^{(2)}, y^{(2)})` over the two halves of the embedding dimensions.

  Distances come from the tile's matmul and the norms of its rows and columns
  (:math:`\lVert a - b\rVert^2 = \lVert a\rVert^2 + \lVert b\rVert^2 - 2 a\cdot b`, clamped at
  0); :math:`\lVert\cdot\rVert^\gamma` has a zero gradient at 0.

  Runs on the ring: two log-sum-exps per kernel. Memory per device
  :math:`O(b\,d + \text{block\_size}^2)`.

  Args:
    x: [batch, dim] embeddings of one modality (the local shard under ``axis_name``).
    y: [batch, dim] embeddings of the other; ``y[i]`` is the positive of ``x[i]``.
    scale: scalar :math:`t = 1/\tau`.
    gamma: kernel exponent :math:`\gamma > 0`.
    mix_weight: :math:`\lambda \in [0, 1]`, the weight of the :math:`\gamma` kernel against the
      Gaussian (1: the :math:`\gamma` kernel alone).
    mixture: ``"sum"`` or ``"concat"`` (needs an even ``dim``).
    axis_name: the ``jax.shard_map`` axis the batch is split over; None for a whole batch.
    block_size: largest tile side on a device; None picks one.

  Returns:
    float32 scalar, identical on every device of ``axis_name``.

  Example:
    >>> x = y = jnp.eye(4)  # aligned pairs, every other pair at distance sqrt(2)
    >>> loss = kernel_infonce_loss(x, y, 2.0, gamma=1.0, mix_weight=0.5)
    >>> print(f"{loss:.3f}")
    0.108

  References:
    Tan, Zhang, Yang & Yuan, Contrastive Learning Is Spectral Clustering On Similarity Graph,
    ICLR 2024; the authors' ``gamma_loss`` and ``loss_type`` ``"sum"``/``"product"``
    (yifanzhang-pro/Kernel-InfoNCE, ``simclr_module.py``; defaults :math:`\gamma = 2`,
    :math:`\lambda = 1`). The authors' loss is SimCLR's two-view form; this is the cross-modal
    one (negatives from the other modality only).
  """
  fn = "kernel_infonce_loss"
  _checks.check_embeddings(fn, x=x, y=y)
  _checks.check_scalars(fn, scale=scale)
  _checks.check_block_size(fn, block_size)
  _pairwise.check_positive(fn, gamma=gamma)
  if not 0.0 <= mix_weight <= 1.0:
    raise ValueError(f"{fn}: mix_weight must be in [0, 1], got {mix_weight!r}.")
  if mixture not in MIXTURES:
    raise ValueError(f"{fn}: mixture must be one of {MIXTURES}, got {mixture!r}.")
  dim = np.shape(x)[1]
  if mixture == "concat" and dim % 2:
    raise ValueError(
      f"{fn}: mixture='concat' splits the embedding in two halves; dim must be even, got {dim}."
    )
  if mixture == "sum":
    kernels = ((float(mix_weight), float(gamma), None), (1.0 - mix_weight, 2.0, None))
  else:
    half = dim // 2
    kernels = ((float(mix_weight), float(gamma), (0, half)), (1.0 - mix_weight, 2.0, (half, dim)))
  kernels = tuple(k for k in kernels if k[0] > 0)
  return ring_loss(
    _kernel_tiles(kernels), x, y, {"scale": scale}, axis_name=axis_name, block_size=block_size
  )


def _part(a, dims):
  return a if dims is None else a[:, dims[0] : dims[1]]


@functools.cache
def _kernel_tiles(kernels) -> TileLoss:
  def tile_fn(tile: Tile):
    t = tile.params["scale"]
    values = {}
    for k, (_, gamma, dims) in enumerate(kernels):
      d2 = _pairwise.sq_dists(_part(tile.x, dims), _part(tile.y, dims))
      logits = -t * _pairwise.safe_pow(d2, gamma / 2)
      values.update({f"lse_x{k}": logits, f"lse_y{k}": logits})
    return values

  def finalize_fn(home: ReducedBlock):
    t, total = home.params["scale"], 0.0
    for k, (weight, gamma, dims) in enumerate(kernels):
      diff = _pairwise.f32(_part(home.x, dims)) - _pairwise.f32(_part(home.y, dims))
      positive = -t * _pairwise.safe_pow(jnp.sum(diff * diff, axis=-1), gamma / 2)
      total += weight * jnp.sum(home.stats[f"lse_x{k}"] + home.stats[f"lse_y{k}"] - 2 * positive)
    return total / (2 * home.global_batch)

  reductions = {}
  for k in range(len(kernels)):
    reductions.update({f"lse_x{k}": "row_lse", f"lse_y{k}": "col_lse"})
  return TileLoss(tile_fn=tile_fn, reductions=reductions, finalize_fn=finalize_fn)
