"""Dense references of CACR, decoupled uniformity (with and without the kernel prior), Poly-View
and MedCLIP's targets: each paper's equation over full matrices.

For tests and small batches only; same names and signatures as `contrastive.losses` without
``axis_name`` (``block_size`` is accepted and ignored).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

__all__ = [
  "cacr_loss",
  "decoupled_uniformity_loss",
  "kernel_decoupled_uniformity_loss",
  "medclip_targets",
  "poly_view_loss",
]

_HI = jax.lax.Precision.HIGHEST


def _sq_dists(a, b):
  return jnp.sum((a[:, None, :] - b[None, :, :]) ** 2, axis=-1)


def _off_diagonal_softmax_mean(cost, temperature):
  """sum_{j != i} softmax_{j != i}(-temperature cost_ij) cost_ij, per row i."""
  n = cost.shape[0]
  off = ~jnp.eye(n, dtype=bool)
  weights = jax.nn.softmax(jnp.where(off, -temperature * cost, -jnp.inf), axis=1)
  return jnp.sum(jnp.where(off, weights * cost, 0.0), axis=1)


def cacr_loss(x, y, *, alpha=1.0, beta=1.0, tau_neg=1.0, block_size=None):
  """alpha mean_i ||x_i - y_i||^2 - beta/2 mean_i [sum_{j!=i} pi_ij d_ij (x anchors) + the same
  with y anchors], pi = softmax_{j!=i}(-tau_neg d): one positive per anchor, so pi+ = 1."""
  del block_size
  x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
  attraction = alpha * jnp.mean(jnp.sum((x - y) ** 2, axis=-1))
  d = _sq_dists(x, y)
  repulsion = -beta * jnp.mean(_off_diagonal_softmax_mean(d, tau_neg))
  repulsion_t = -beta * jnp.mean(_off_diagonal_softmax_mean(d.T, tau_neg))
  return attraction + (repulsion + repulsion_t) / 2


def _log_mean_potential(mu, t):
  n = mu.shape[0]
  off = ~jnp.eye(n, dtype=bool)
  return jax.nn.logsumexp(jnp.where(off, -t * _sq_dists(mu, mu), -jnp.inf)) - math.log(n * (n - 1))


def decoupled_uniformity_loss(embeddings, *, t=2.0, block_size=None):
  """log mean_{i != j} exp(-t ||mu_i - mu_j||^2), mu_i = mean over views of u^v_i."""
  del block_size
  mu = jnp.mean(jnp.stack([jnp.asarray(e, jnp.float32) for e in embeddings]), axis=0)
  return _log_mean_potential(mu, t)


def kernel_decoupled_uniformity_loss(embeddings, prior, *, t=2.0, lam=0.01, sigma=1.0):
  """The same of mu_hat = (K + lam I)^{-1} K mu, K_ij = exp(-||p_i - p_j||^2 / (2 sigma^2))."""
  mu = jnp.mean(jnp.stack([jnp.asarray(e, jnp.float32) for e in embeddings]), axis=0)
  kernel = jnp.exp(-_sq_dists(prior, prior) / (2 * sigma**2))
  mu_hat = jnp.linalg.inv(kernel + lam * jnp.eye(mu.shape[0])) @ kernel @ mu
  return _log_mean_potential(mu_hat, t)


def poly_view_loss(embeddings, scale, *, aggregate="geometric", block_size=None):
  """-(1/BM) sum_{i, alpha} agg_{beta != alpha} log p_{i alpha beta}, p the softmax of
  s_{i alpha, i beta} against s_{i alpha, j gamma} for every j != i and every view gamma;
  agg = the mean (geometric) or the log of the mean of the probabilities (arithmetic)."""
  del block_size
  u = jnp.stack([jnp.asarray(e, jnp.float32) for e in embeddings])  # [M, B, d]
  m, n = u.shape[0], u.shape[1]
  s = scale * jnp.einsum("aid,gjd->aigj", u, u, precision=_HI)  # [M, B, M, B]
  other = ~jnp.eye(n, dtype=bool)[None, :, None, :]
  negatives = jax.nn.logsumexp(jnp.where(other, s, -jnp.inf), axis=(2, 3))  # [M, B]
  per_anchor = []
  for a in range(m):
    log_p = []
    for b in range(m):
      if b != a:
        positive = jnp.diagonal(s[a, :, b, :])
        log_p.append(positive - jnp.log(jnp.exp(positive) + jnp.exp(negatives[a])))
    log_p = jnp.stack(log_p)
    if aggregate == "geometric":
      per_anchor.append(-jnp.mean(log_p, axis=0))
    else:
      per_anchor.append(-jnp.log(jnp.mean(jnp.exp(log_p), axis=0)))
  return jnp.mean(jnp.stack(per_anchor))


def medclip_targets(temperature=None, key="findings"):
  """MedCLIP: target logits cos(l_i, l_j) / tau' of the multi-hot labels side[key]."""
  tau = 1.0 if temperature is None else temperature

  def targets(pairs):
    labels = jnp.asarray(pairs.row[key], jnp.float32)
    norm = jnp.linalg.norm(labels, axis=-1, keepdims=True)
    unit = labels / jnp.where(norm > 0, norm, 1.0)
    return jnp.dot(unit, unit.T, precision=_HI) / tau

  return targets
