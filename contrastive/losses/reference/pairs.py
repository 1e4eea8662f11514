"""Dense references of the pairwise zoo losses: each paper's equation over the full matrix.

For tests and small batches only: every function here materializes ``[B, B]`` (or more). Same
names and signatures as in `contrastive.losses`, without ``axis_name``; ``block_size`` is
accepted and ignored.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from contrastive.losses.reference.clip import softmax_loss

__all__ = [
    "align_uniform_loss", "contrastive_gap_loss", "dcl_loss", "dclw_loss", "multi_positive_loss",
    "supcon_loss",
]

_HI = jax.lax.Precision.HIGHEST


def _sim(a, b):
  return jnp.dot(a, b.T, precision=_HI, preferred_element_type=jnp.float32)


def _off_diagonal(n):
  return ~jnp.eye(n, dtype=bool)


def _masked_logsumexp(logits, keep, axis):
  return jax.nn.logsumexp(jnp.where(keep, logits, -jnp.inf), axis=axis)


# ----------------------------------------------------------------------------------------------
# DCL / DCLW (Yeh et al., 2022).


def dcl_loss(x, y, scale, *, intra_modal=False, block_size=None):
  """-(1/2B) sum_i [l_ii - log sum_{j!=i} e^{l_ij}] + the same with x and y swapped."""
  return _dcl(x, y, scale, None, intra_modal)


def dclw_loss(x, y, scale, *, sigma=0.5, intra_modal=False, block_size=None):
  """DCL with positive weights w_i = 2 - B softmax_i(x_i.y_i / sigma) (not stop-gradient)."""
  return _dcl(x, y, scale, sigma, intra_modal)


def _dcl(x, y, scale, sigma, intra_modal):
  n = x.shape[0]
  off = _off_diagonal(n)
  sim = _sim(x, y)
  positive = scale * jnp.diag(sim)
  weight = 1.0 if sigma is None else 2.0 - n * jax.nn.softmax(jnp.diag(sim) / sigma)
  neg_x = [scale * sim, scale * _sim(x, x)] if intra_modal else [scale * sim]
  neg_y = [scale * sim.T, scale * _sim(y, y)] if intra_modal else [scale * sim.T]
  keep = jnp.concatenate([off] * len(neg_x), axis=1)
  lse_x = _masked_logsumexp(jnp.concatenate(neg_x, axis=1), keep, axis=1)
  lse_y = _masked_logsumexp(jnp.concatenate(neg_y, axis=1), keep, axis=1)
  return jnp.mean((-weight * positive + lse_x) + (-weight * positive + lse_y)) / 2


# ----------------------------------------------------------------------------------------------
# Alignment and uniformity (Wang & Isola, 2020); the contrastive gap's CUA / CUAXU (Fahim et al.).


def _sq_dists(a, b):
  return jnp.sum((a[:, None, :] - b[None, :, :]) ** 2, axis=-1)


def _alignment(x, y, alpha):
  """E_i ||x_i - y_i||^alpha."""
  return jnp.mean(jnp.sum((x - y) ** 2, axis=1) ** (alpha / 2))


def _uniformity(a, b, t):
  """log mean_{i != j} exp(-t ||a_i - b_j||^2)."""
  n = a.shape[0]
  return (_masked_logsumexp(-t * _sq_dists(a, b), _off_diagonal(n), axis=None)
          - jnp.log(n * (n - 1.0)))


def align_uniform_loss(x, y, *, alpha=2.0, t=2.0, lam=1.0, block_size=None):
  """align(x, y) + lam * (unif(x) + unif(y)) / 2."""
  return _alignment(x, y, alpha) + lam * (_uniformity(x, x, t) + _uniformity(y, y, t)) / 2


def contrastive_gap_loss(x, y, scale, *, variant="cuaxu", alpha=2.0, t=2.0, block_size=None):
  """CUA = CLIP + align + (unif(x) + unif(y)) / 2; CUAXU adds the cross-modal uniformity."""
  loss = (softmax_loss(x, y, scale) + _alignment(x, y, alpha)
          + (_uniformity(x, x, t) + _uniformity(y, y, t)) / 2)
  return loss + _uniformity(x, y, t) if variant == "cuaxu" else loss


# ----------------------------------------------------------------------------------------------
# SupCon (Khosla et al., 2020) and multi-positive InfoNCE (MIL-NCE, Miech et al., 2020).


def supcon_loss(x, y, scale, labels, *, intra_modal=False, block_size=None):
  """L_out: -mean_i (1/|P(i)|) sum_{p in P(i)} log softmax over the anchor's candidates."""
  same = labels[:, None] == labels[None, :]
  if intra_modal:  # SupConLoss(contrast_mode="all") over the 2B views [x; y]
    z = jnp.concatenate([x, y])
    n = z.shape[0]
    same2 = jnp.tile(same, (2, 2))
    others = _off_diagonal(n)
    logits = scale * _sim(z, z)
    log_prob = logits - _masked_logsumexp(logits, others, axis=1)[:, None]
    positives = same2 & others
    return jnp.mean(-jnp.sum(jnp.where(positives, log_prob, 0.0), axis=1)
                    / jnp.sum(positives, axis=1))
  logits = scale * _sim(x, y)

  def one_way(logits):
    log_prob = jax.nn.log_softmax(logits, axis=1)
    return -jnp.sum(jnp.where(same, log_prob, 0.0), axis=1) / jnp.sum(same, axis=1)

  return jnp.mean(one_way(logits) + one_way(logits.T)) / 2


def multi_positive_loss(x, y, scale, labels, *, block_size=None):
  """-mean_i log sum_{p in P(i)} softmax_j(l_ij)[p], both directions."""
  same = labels[:, None] == labels[None, :]
  logits = scale * _sim(x, y)

  def one_way(logits):
    return jax.nn.logsumexp(logits, axis=1) - _masked_logsumexp(logits, same, axis=1)

  return jnp.mean(one_way(logits) + one_way(logits.T)) / 2
