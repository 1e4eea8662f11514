"""Dense reference of MCL's cluster-restricted InfoNCE (Zhang et al., ECCV 2024).

For tests and small batches only: materializes ``[B, B]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["mcl_loss"]


def mcl_loss(x, y, scale, clusters, *, block_size=None):
  """(1/2B) sum_i [(-l_ii + LSE_{j: c_j = c_i} l_ij) + (-l_ii + LSE_{j: c_j = c_i} l_ji)]."""
  del block_size
  logits = scale * jnp.dot(x, y.T, precision="highest", preferred_element_type=jnp.float32)
  same_cluster = clusters[:, None] == clusters[None, :]
  masked = jnp.where(same_cluster, logits, -jnp.inf)
  positive = jnp.diag(logits)
  x_to_y = -positive + jax.nn.logsumexp(masked, axis=1)
  y_to_x = -positive + jax.nn.logsumexp(masked, axis=0)
  return jnp.mean(x_to_y + y_to_x) / 2
