"""Dense CLIP and SigLIP losses."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _logits(x, y, scale):
  return scale * jnp.dot(x, y.T, preferred_element_type=jnp.float32)


def softmax_loss(x, y, scale, *, label_smoothing=0.0, block_size=None):
  """CLIP: -(1/2B) sum_i [q_i . log softmax(l_i,:) + q_i . log softmax(l_:,i)]."""
  del block_size
  logits = _logits(x, y, scale)
  n = logits.shape[0]
  targets = (1 - label_smoothing) * jnp.eye(n) + label_smoothing / n
  x_to_y = -jnp.sum(targets * jax.nn.log_softmax(logits, axis=1)) / n
  y_to_x = -jnp.sum(targets * jax.nn.log_softmax(logits, axis=0)) / n
  return (x_to_y + y_to_x) / 2


def sigmoid_loss(x, y, scale, bias, *, block_size=None):
  """SigLIP: -(1/B) sum_ij log sigmoid(z_ij (t x_i.y_j + b)), z = +1 on the diagonal, else -1."""
  del block_size
  logits = _logits(x, y, scale) + bias
  z = 2 * jnp.eye(logits.shape[0]) - 1
  return -jnp.sum(jax.nn.log_sigmoid(z * logits)) / logits.shape[0]
