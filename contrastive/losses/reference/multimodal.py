"""Dense references of the n-modal and queue losses: each paper's equation over full matrices.

For tests and small batches only; same names and signatures as `contrastive.losses` without
``axis_name`` (``block_size`` is accepted and ignored).
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp

from contrastive.losses.reference.clip import softmax_loss

__all__ = ["cmc_loss", "gram_loss", "moco_loss", "mv_dhel_loss", "mv_infonce_loss", "symile_loss"]


def _f32(arrays):
  return [jnp.asarray(a, jnp.float32) for a in arrays]


def _cross_entropy_diag(logits, label_smoothing=0.0):
  """mean_i -sum_j q_ij log softmax_j(logits_ij), q = (1 - eps) I + eps / n."""
  n = logits.shape[0]
  targets = (1 - label_smoothing) * jnp.eye(n) + label_smoothing / n
  return -jnp.sum(targets * jax.nn.log_softmax(logits, axis=1)) / n


def symile_loss(embeddings, scale, *, negatives="shifted", block_size=None):
  """Symile, O(N): mean over anchors m of CE(t [a^m_i . c^m_j], diag), positive MIP on the diagonal.

  c^m_j = prod_r a^{o_r}_{(j + r) mod B} ("shifted") or prod_r a^{o_r}_j ("aligned"), o_r the
  modalities other than m in order. "n_squared" (k = 3): every (j, l) pair of the other two
  modalities is a candidate, mean over anchors of LSE_{j,l} t [a_i, b_j, c_l] - t [a_i, b_i, c_i].
  """
  del block_size
  emb = _f32(embeddings)
  k, n = len(emb), emb[0].shape[0]
  positive_mip = jnp.sum(math.prod(emb), axis=-1)  # [a^1_i, ..., a^k_i]
  if negatives == "n_squared":  # all B^2 pairs of the other two: t [a_i, b_j, c_l] over (j, l)
    cube = scale * jnp.einsum("id,jd,ld->ijl", *emb)
    anchored = [cube, cube.transpose(1, 0, 2), cube.transpose(2, 0, 1)]  # anchor axis first
    lse = [jax.nn.logsumexp(t.reshape(n, n * n), axis=1) for t in anchored]
    return sum(jnp.mean(v - scale * positive_mip) for v in lse) / 3
  losses = []
  for m in range(k):
    others = [a for i, a in enumerate(emb) if i != m]
    if negatives == "shifted":
      others = [jnp.roll(a, -r, axis=0) for r, a in enumerate(others)]
    candidates = math.prod(others)
    logits = scale * jnp.where(jnp.eye(n, dtype=bool), positive_mip[:, None], emb[m] @ candidates.T)
    losses.append(_cross_entropy_diag(logits))
  return sum(losses) / k


def gram_determinants(embeddings):
  """[B, B] |det G_ij|, G_ij the Gram matrix of (a_i, m^1_j, ..., m^{k-1}_j): the squared volume
  of the anchor of sample i with the other modalities of sample j."""
  emb = _f32(embeddings)
  anchor, others = emb[0], jnp.stack(emb[1:], axis=1)  # [B, d], [B, k-1, d]
  n = anchor.shape[0]
  vectors = jnp.concatenate(
    [
      jnp.broadcast_to(anchor[:, None, None], (n, n, 1, anchor.shape[1])),
      jnp.broadcast_to(others[None], (n,) + others.shape),
    ],
    axis=2,
  )
  gram = jnp.einsum("ijpd,ijqd->ijpq", vectors, vectors)  # [B, B, k, k]
  return jnp.abs(jnp.linalg.det(gram))


def gram_loss(embeddings, scale, *, label_smoothing=0.0, block_size=None):
  """GRAM: symmetric CE over -t Vol_ij, Vol_ij = sqrt|det G(a_i, m^1_j, ..., m^{k-1}_j)|."""
  del block_size
  logits = -scale * jnp.sqrt(gram_determinants(embeddings))
  return (
    _cross_entropy_diag(logits, label_smoothing) + _cross_entropy_diag(logits.T, label_smoothing)
  ) / 2


def mv_infonce_loss(embeddings, scale, *, block_size=None):
  """MV-InfoNCE: mean_i -log(2 sum_{l<m} e^{t u^l_i.u^m_i})
  + log sum_l sum_{(j,m) != (i,l)} e^{t u^l_i.u^m_j}."""
  del block_size
  views = jnp.stack(_f32(embeddings))  # [k, B, d]
  k, n = views.shape[:2]
  sims = scale * jnp.einsum("lid,mjd->limj", views, views)  # [k, B, k, B]
  itself = jnp.eye(k, dtype=bool)[:, None, :, None] & jnp.eye(n, dtype=bool)[None, :, None, :]
  pairs = jnp.stack(
    [sims[l, :, m][jnp.arange(n), jnp.arange(n)] for l, m in itertools.combinations(range(k), 2)]
  )  # [P, B]
  positive = jnp.log(2.0) + jax.nn.logsumexp(pairs, axis=0)
  negative = jax.nn.logsumexp(jnp.where(itself, -jnp.inf, sims), axis=(0, 2, 3))
  return jnp.mean(negative - positive)


def mv_dhel_loss(embeddings, scale, *, block_size=None):
  """MV-DHEL: mean_i -log sum_{l<m} e^{t u^l_i.u^m_i} + sum_l log sum_{j!=i} e^{t u^l_i.u^l_j}."""
  del block_size
  views = _f32(embeddings)
  n = views[0].shape[0]
  pairs = jnp.stack(
    [
      scale * jnp.sum(views[l] * views[m], axis=-1)
      for l, m in itertools.combinations(range(len(views)), 2)
    ]
  )
  positive = jax.nn.logsumexp(pairs, axis=0)
  energy = sum(
    jax.nn.logsumexp(jnp.where(jnp.eye(n, dtype=bool), -jnp.inf, scale * v @ v.T), axis=1)
    for v in views
  )
  return jnp.mean(energy - positive)


def cmc_loss(embeddings, scale, *, mode="all_pairs", label_smoothing=0.0, block_size=None):
  """CMC: sum of the CLIP loss over all pairs of views, or over (core view, other view) pairs."""
  del block_size
  k = len(embeddings)
  pairs = (
    itertools.combinations(range(k), 2) if mode == "all_pairs" else [(0, q) for q in range(1, k)]
  )
  return sum(
    softmax_loss(embeddings[p], embeddings[q], scale, label_smoothing=label_smoothing)
    for p, q in pairs
  )


def moco_loss(q, k, queue, scale, *, batch_negatives=False, block_size=None):
  """MoCo: mean_i -log e^{t q_i.k_i} / (e^{t q_i.k_i} + sum_r e^{t q_i.n_r}).

  With ``batch_negatives`` the denominator has every key of the batch, sum_j e^{t q_i.k_j}.
  """
  del block_size
  q, k, queue = _f32([q, k, queue])
  positive = scale * jnp.sum(q * k, axis=-1)
  keys = scale * q @ k.T if batch_negatives else positive[:, None]
  logits = jnp.concatenate([keys, scale * q @ queue.T], axis=1)
  return jnp.mean(jax.nn.logsumexp(logits, axis=1) - positive)
