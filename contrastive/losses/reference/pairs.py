"""Dense references of the pairwise zoo losses: each paper's equation over the full matrix.

For tests and small batches only: every function here materializes ``[B, B]`` (or more). Same
names and signatures as in `contrastive.losses`, without ``axis_name``; ``block_size`` is
accepted and ignored.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = [
    "dcl_loss", "dclw_loss",
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
