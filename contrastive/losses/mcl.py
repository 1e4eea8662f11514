r"""Multistage contrastive learning (MCL): negatives restricted to the anchor's cluster of the
previous stage, and the k-means that makes the clusters.

A run of MCL chains stages (docs/losses.md, "MCL: stages"): stage 1 trains with plain InfoNCE
(`softmax_loss`); its embeddings of the training set are clustered (:func:`kmeans_clusters`,
:func:`assign_clusters`); stage 2 trains with :func:`mcl_loss` reading each pair's cluster id,
so an anchor is told apart only from the samples stage 1 could not tell apart, and learns the
features stage 1 suppressed. The paper concatenates the stages' features at evaluation.

Not to be confused with CustomContrast's "Multilevel Contrastive Learning", also called MCL.
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


def mcl_loss(
  x: jax.typing.ArrayLike,
  y: jax.typing.ArrayLike,
  scale: jax.typing.ArrayLike,
  clusters: jax.typing.ArrayLike,
  *,
  axis_name: str | tuple[str, ...] | None = None,
  block_size: int | None = None,
) -> jax.Array:
  r"""Cluster-restricted InfoNCE: each anchor's negatives are the pairs of its own cluster.

  With logits :math:`l_{ij} = t\, x_i \cdot y_j` and :math:`c_i` the cluster of pair :math:`i`
  at the previous stage:

  .. math::
    L = \frac{1}{2B} \sum_i \Big[ \big(-l_{ii} + \log \sum_{j: c_j = c_i} e^{l_{ij}}\big)
        + \big(-l_{ii} + \log \sum_{j: c_j = c_i} e^{l_{ji}}\big) \Big]

  The positive is in its own cluster, so the denominator always holds it; an anchor alone in its
  cluster contributes 0. With one cluster it is :func:`softmax_loss`.

  Runs on the ring: two masked log-sum-exps per anchor; the cluster ids travel with the ``y``
  block. Memory per device :math:`O(b\,d + \text{block\_size}^2)`.

  Args:
    x: [batch, dim] embeddings of one modality (the local shard under ``axis_name``).
    y: [batch, dim] embeddings of the other; ``y[i]`` is the positive of ``x[i]``.
    scale: scalar logit scale :math:`t = 1/\tau`.
    clusters: [batch] integer cluster id of each pair (from :func:`kmeans_clusters` over the
      previous stage's embeddings).
    axis_name: the ``jax.shard_map`` axis the batch is split over; None for a whole batch.
    block_size: largest tile side on a device; None picks one.

  Returns:
    float32 scalar, identical on every device of ``axis_name``.

  Example:
    >>> x = y = jnp.eye(4)  # four orthogonal pairs in two clusters
    >>> clusters = jnp.array([0, 0, 1, 1])
    >>> loss = mcl_loss(x, y, 2.0, clusters)
    >>> print(f"{loss:.3f}")  # log(1 + e^-2): one negative each
    0.127

  References:
    Zhang et al., Learning the Unlearned: Mitigating Feature Suppression in Contrastive Learning,
    ECCV 2024 (arXiv:2402.11816), multistage contrastive learning.
  """
  fn = "mcl_loss"
  _checks.check_embeddings(fn, x=x, y=y)
  _checks.check_scalars(fn, scale=scale)
  _checks.check_block_size(fn, block_size)
  _checks.check_ids(fn, np.shape(x)[0], clusters=clusters)
  return ring_loss(
    _MCL_TILES,
    x,
    y,
    {"scale": scale},
    row=clusters,
    col=clusters,
    axis_name=axis_name,
    block_size=block_size,
  )


def kmeans_clusters(
  embeddings: jax.typing.ArrayLike,
  num_clusters: int,
  *,
  seed: int = 0,
  iterations: int = 10,
) -> tuple[jax.Array, jax.Array]:
  r"""k-means (Lloyd's iterations) of a previous stage's embeddings: MCL's cluster ids.

  Starts from ``num_clusters`` distinct embeddings drawn with ``seed``, then alternates
  :math:`c_n = \arg\min_k \lVert e_n - \mu_k \rVert^2` and :math:`\mu_k = \text{mean}_{c_n = k}
  e_n` (a cluster left empty keeps its centre). Deterministic given ``seed``. Memory
  :math:`O(N (d + k))`: for a large set, fit on a sample and :func:`assign_clusters` the rest.

  Args:
    embeddings: [N, dim] floating embeddings (one modality's, or the pairs' concatenated).
    num_clusters: k, with 1 <= k <= N.
    seed: of the initial centres.
    iterations: Lloyd's iterations (a few suffice for MCL's coarse clusters).

  Returns:
    ``(ids, centres)``: [N] int32 cluster of each embedding and [k, dim] float32 centres.

  Example:
    >>> e = jnp.array([[0.0, 1.0], [0.1, 1.0], [1.0, 0.0], [1.0, 0.1]])
    >>> ids, _ = kmeans_clusters(e, 2)
    >>> bool(ids[0] == ids[1]) and bool(ids[2] == ids[3]) and bool(ids[0] != ids[2])
    True
  """
  fn = "kmeans_clusters"
  _checks.check_embeddings(fn, embeddings=embeddings)
  n = np.shape(embeddings)[0]
  if isinstance(num_clusters, bool) or not 1 <= int(num_clusters) <= n:
    raise ValueError(
      f"{fn}: num_clusters must be in [1, {n}] (the embeddings), got {num_clusters}."
    )
  if int(iterations) < 0:
    raise ValueError(f"{fn}: iterations must be >= 0, got {iterations}.")
  return _kmeans(
    jnp.asarray(embeddings, jnp.float32), int(num_clusters), int(seed), int(iterations)
  )


def assign_clusters(embeddings: jax.typing.ArrayLike, centres: jax.typing.ArrayLike) -> jax.Array:
  """[N] int32 index of the nearest of ``centres`` ([k, dim]) for each of ``embeddings`` ([N, dim]).

  Example:
    >>> assign_clusters(jnp.array([[1.0, 0.1], [0.0, 1.0]]), jnp.eye(2)).tolist()
    [0, 1]
  """
  fn = "assign_clusters"
  _checks.check_embeddings(fn, embeddings=embeddings)
  _checks.check_embeddings(fn, centres=centres)
  if np.shape(centres)[1] != np.shape(embeddings)[1]:
    raise ValueError(
      f"{fn}: centres are [k, {np.shape(centres)[1]}] but the embeddings have dim "
      f"{np.shape(embeddings)[1]}."
    )
  return _nearest(jnp.asarray(embeddings, jnp.float32), jnp.asarray(centres, jnp.float32))


@jax.jit
def _nearest(e, centres):
  # argmin ||e - mu||^2 = argmax (2 e.mu - ||mu||^2): one matmul, no [N, k, d] difference.
  score = 2.0 * jnp.dot(e, centres.T, precision="highest") - jnp.sum(centres**2, axis=-1)
  return jnp.argmax(score, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _kmeans(e, k, seed, iterations):
  start = jax.random.choice(jax.random.key(seed), e.shape[0], (k,), replace=False)

  def lloyd(_, centres):
    ids = _nearest(e, centres)
    sums = jax.ops.segment_sum(e, ids, num_segments=k)
    counts = jax.ops.segment_sum(jnp.ones_like(ids, jnp.float32), ids, num_segments=k)
    return jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1.0)[:, None], centres)

  centres = jax.lax.fori_loop(0, iterations, lloyd, e[start])
  return _nearest(e, centres), centres


def _mcl_tile_fn(tile: Tile):
  same = tile.row[:, None] == tile.col[None, :]
  logits = jnp.where(same, tile.params["scale"] * tile.sim, _pairwise.NEG_INF)
  return {"lse_x": logits, "lse_y": logits}


def _mcl_finalize_fn(home: ReducedBlock):
  positive = home.params["scale"] * _pairwise.rowdot(home.x, home.y)
  s = home.stats
  return jnp.sum(s["lse_x"] + s["lse_y"] - 2.0 * positive) / (2 * home.global_batch)


_MCL_TILES = TileLoss(
  tile_fn=_mcl_tile_fn,
  finalize_fn=_mcl_finalize_fn,
  reductions={"lse_x": "row_lse", "lse_y": "col_lse"},
)
