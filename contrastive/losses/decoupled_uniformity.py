"""Decoupled uniformity: the uniformity of each sample's centroid over its views, alone (on the
ring) or smoothed by a prior kernel (dense: a global linear solve)."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from contrastive.losses import _checks
from contrastive.losses import _pairwise
from contrastive.losses._modalities import check_modalities
from contrastive.losses.ring import ReducedBlock
from contrastive.losses.ring import Tile
from contrastive.losses.ring import TileLoss
from contrastive.losses.ring import axis_size
from contrastive.losses.ring import ring_loss


def decoupled_uniformity_loss(
  embeddings,
  *,
  t: float = 2.0,
  axis_name: str | tuple[str, ...] | None = None,
  block_size: int | None = None,
) -> jax.Array:
  r"""Decoupled uniformity: the log-mean Gaussian potential between the views' centroids.

  With :math:`V` views :math:`u^1, \dots, u^V` (``embeddings``; the two modalities of a pair,
  or :math:`V` augmentations) and centroids :math:`\mu_i = \frac1V \sum_v u^v_i`:

  .. math::
    L = \log \frac{1}{B(B-1)} \sum_{i \ne j} e^{-t \lVert \mu_i - \mu_j \rVert^2}

  Used on its own: alignment is implicit, since views that disagree shorten their centroid
  (for unit-norm views, :math:`\lVert \mu_i \rVert^2 = 1 - \frac{1}{2V^2}\sum_{v,w}
  \lVert u^v_i - u^w_i \rVert^2`) and short centroids cannot spread. The paper normalises each
  view and not :math:`\mu`; this function takes the views as given.

  Runs on the ring: the centroids stay and travel (computed locally, one block per device),
  one masked log-sum-exp per row, combined across devices after the ring. Memory per device
  :math:`O(V\,b\,d + \text{block\_size}^2)`.

  Args:
    embeddings: ``V >= 2`` aligned ``[batch, dim]`` views (local shards under ``axis_name``).
    t: the potential's temperature :math:`t > 0` (2 in the paper).
    axis_name: the ``jax.shard_map`` axis the batch is split over; None for a whole batch.
    block_size: largest tile side on a device; None picks one.

  Returns:
    float32 scalar, identical on every device of ``axis_name``. Needs a global batch of 2 or
    more. There is no logit scale.

  Example:
    >>> u = v = jnp.eye(4)  # identical views: centroids one-hot, pairwise squared distance 2
    >>> loss = decoupled_uniformity_loss([u, v])
    >>> print(f"{loss:.3f}")  # -2 t
    -4.000

  References:
    Dufumier et al., Integrating Prior Knowledge in Contrastive Learning with Kernel, ICML 2023
    (arXiv:2206.01646), decoupled uniformity :math:`\mathcal{L}_{\mathrm{DU}}`.
  """
  fn = "decoupled_uniformity_loss"
  mu = _centroids(fn, embeddings, t, block_size)
  _pairwise.check_global_batch(fn, np.shape(mu)[0], axis_name)
  n_dev = axis_size(axis_name)
  slots = ring_loss(
    _uniformity_tiles(float(t), n_dev), mu, mu, {}, axis_name=axis_name, block_size=block_size
  )
  n = np.shape(mu)[0] * n_dev
  return jax.nn.logsumexp(slots) - math.log(n * (n - 1))


def kernel_decoupled_uniformity_loss(
  embeddings,
  prior: jax.typing.ArrayLike,
  *,
  t: float = 2.0,
  lam: float = 0.01,
  sigma: float = 1.0,
  axis_name: str | tuple[str, ...] | None = None,
) -> jax.Array:
  r"""Decoupled uniformity of centroids smoothed by a prior kernel (dense; not a ring loss).

  With the RBF kernel :math:`K_{ij} = e^{-\lVert p_i - p_j \rVert^2 / (2\sigma^2)}` of the prior
  representations :math:`p` (``prior``: a frozen model's features, or weak attributes), the
  centroids of :func:`decoupled_uniformity_loss` are replaced by their kernel-ridge smoothing

  .. math::
    \hat\mu = (K + \lambda I)^{-1} K \mu, \qquad
    L = \log \frac{1}{B(B-1)} \sum_{i \ne j} e^{-t \lVert \hat\mu_i - \hat\mu_j \rVert^2}

  so that samples the prior deems close share their centroid estimate.

  The exception to the ring: :math:`\hat\mu` is a global linear solve, every :math:`\hat\mu_i`
  depends on every sample of the batch, and no per-tile reduction gives it. It runs on one
  device over the whole batch, :math:`O(B^2 (d + p) + B^3)`; on a mesh, gather the batch first
  (restricting the solve to each shard would be another estimator). Gradients reach the views
  through the solve; the prior gets gradients too (stop them if it is a frozen model's).

  Args:
    embeddings: ``V >= 2`` aligned ``[batch, dim]`` views of the whole batch.
    prior: ``[batch, p]`` prior representations.
    t: the potential's temperature :math:`t > 0` (2 in the paper).
    lam: the ridge :math:`\lambda > 0` (the paper: 0.01, or :math:`1/\sqrt{B}`).
    sigma: the RBF kernel's bandwidth :math:`\sigma > 0`.
    axis_name: must be None (the solve needs the whole batch).

  Returns:
    float32 scalar. Needs a batch of 2 or more.

  Example:
    >>> u = v = jnp.eye(4)
    >>> far = 100.0 * jnp.eye(4)  # a prior that sees four unrelated samples: K = I
    >>> loss = kernel_decoupled_uniformity_loss([u, v], far, lam=1.0)
    >>> print(f"{loss:.3f}")  # mu_hat = mu / 2: -2 t / 4
    -1.000

  References:
    Dufumier et al., Integrating Prior Knowledge in Contrastive Learning with Kernel, ICML 2023
    (arXiv:2206.01646), the kernel decoupled uniformity.
  """
  fn = "kernel_decoupled_uniformity_loss"
  if axis_name is not None:
    raise ValueError(
      f"{fn}: the kernel prior is a global B x B solve over the whole batch and does not run "
      f"sharded (axis_name={axis_name!r}); gather the batch and call it with axis_name=None."
    )
  mu = _centroids(fn, embeddings, t, None)
  prior = jnp.asarray(prior)
  if prior.ndim != 2 or prior.shape[0] != mu.shape[0]:
    raise ValueError(f"{fn}: `prior` must be [{mu.shape[0]}, p], got shape {prior.shape}.")
  _pairwise.check_positive(fn, lam=lam, sigma=sigma)
  _pairwise.check_global_batch(fn, mu.shape[0], None)
  n = mu.shape[0]
  kernel = jnp.exp(-_pairwise.sq_dists(prior, prior) / (2.0 * sigma**2))
  mu_hat = jnp.linalg.solve(kernel + lam * jnp.eye(n), kernel @ mu)
  d2 = _pairwise.sq_dists(mu_hat, mu_hat)
  off_diagonal = ~jnp.eye(n, dtype=bool)
  return jax.nn.logsumexp(jnp.where(off_diagonal, -t * d2, -jnp.inf)) - math.log(n * (n - 1))


def _centroids(fn, embeddings, t, block_size) -> jax.Array:
  views = check_modalities(fn, embeddings)
  _checks.check_block_size(fn, block_size)
  _pairwise.check_positive(fn, t=t)
  return sum(_pairwise.f32(v) for v in views) / len(views)


@functools.cache
def _uniformity_tiles(t: float, n_dev: int) -> TileLoss:
  def tile_fn(tile: Tile):
    potential = -t * _pairwise.sq_dists(tile.x, tile.y)
    return {"potential": jnp.where(tile.positive, _pairwise.NEG_INF, potential)}

  def finalize_fn(home: ReducedBlock):
    # Each device's partial log-sum-exp in its own slot: the log of a global sum follows the ring.
    return _pairwise.device_slot(jax.nn.logsumexp(home.stats["potential"]), home, n_dev)

  return TileLoss(tile_fn=tile_fn, reductions={"potential": "row_lse"}, finalize_fn=finalize_fn)
