"""Dense references of iSogCLR (Qiu et al., ICML 2023): its surrogate loss and the batch
statistics of its state update, over the full ``[B, B]`` matrix.

For tests and small batches only. Same names and signatures as in `contrastive.losses`, without
``axis_name``; ``block_size`` is accepted and ignored.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["isogclr_estimates", "isogclr_loss", "isogclr_weighted_z"]

_HI = jax.lax.Precision.HIGHEST


def _differences(x, y):
  """d[i, j] = s_ij - s_ii (image anchor i) and d'[i, j] = s_ij - s_jj (text anchor j)."""
  sim = jnp.dot(x, y.T, precision=_HI, preferred_element_type=jnp.float32)
  pos = jnp.diagonal(sim)
  return sim - pos[:, None], sim - pos[None, :], ~jnp.eye(sim.shape[0], dtype=bool)


def _weights(d_x, d_y, off, tau_x, tau_y, log_u_x, log_u_y):
  """w[i, j] = exp(d_ij / tau_i) / ((B - 1) u_i), and for text anchors; 0 on the positives;
  constants (no gradient)."""
  count = d_x.shape[0] - 1
  d_x, d_y, tau_x, tau_y, log_u_x, log_u_y = jax.lax.stop_gradient(
    (d_x, d_y, tau_x, tau_y, log_u_x, log_u_y)
  )
  w_x = jnp.exp(d_x / tau_x[:, None] - log_u_x[:, None]) / count
  w_y = jnp.exp(d_y / tau_y[None, :] - log_u_y[None, :]) / count
  return jnp.where(off, w_x, 0.0), jnp.where(off, w_y, 0.0)


def isogclr_loss(x, y, tau_x, tau_y, log_u_x, log_u_y, *, block_size=None):
  """(1/B) sum_i sum_{j != i} sg(w_ij) d_ij + (1/B) sum_j sum_{i != j} sg(w'_ij) d'_ij."""
  d_x, d_y, off = _differences(x, y)
  w_x, w_y = _weights(d_x, d_y, off, tau_x, tau_y, log_u_x, log_u_y)
  return (jnp.sum(w_x * d_x) + jnp.sum(w_y * d_y)) / d_x.shape[0]


def isogclr_estimates(x, y, tau_x, tau_y, *, block_size=None):
  """log g_i = log (1/(B-1)) sum_{j != i} exp(d_ij / tau_i), for image and text anchors."""
  d_x, d_y, off = _differences(x, y)
  # log-sum-exp, not log(sum(exp)): d/tau reaches 400 at tau = 0.005.
  log_mean_exp = lambda z, axis: (
    jax.nn.logsumexp(jnp.where(off, z, -jnp.inf), axis) - jnp.log(len(z) - 1.0)
  )
  return log_mean_exp(d_x / tau_x[:, None], 1), log_mean_exp(d_y / tau_y[None, :], 0)


def isogclr_weighted_z(x, y, tau_x, tau_y, log_u_x, log_u_y, *, block_size=None):
  """sum_j w_ij d_ij / tau_i, for image and text anchors."""
  d_x, d_y, off = _differences(x, y)
  w_x, w_y = _weights(d_x, d_y, off, tau_x, tau_y, log_u_x, log_u_y)
  return jnp.sum(w_x * d_x, 1) / tau_x, jnp.sum(w_y * d_y, 0) / tau_y
