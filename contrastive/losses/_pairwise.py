"""Plumbing shared by the pairwise zoo losses: mesh reductions before the ring, distances in a
tile, and global log-sum-exps of per-device statistics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from contrastive.losses.ring import ReducedBlock
from contrastive.losses.ring import Tile
from contrastive.losses.ring import axis_size

# What a masked-out logit contributes to a log-sum-exp.
NEG_INF = -jnp.inf


def check_global_batch(fn: str, batch: int, axis_name, minimum: int = 2) -> int:
  """The global batch ``B``; raises when it is below ``minimum`` (a loss needing negatives)."""
  n = batch * axis_size(axis_name)
  if n < minimum:
    raise ValueError(
      f"{fn}: needs a global batch of at least {minimum} (it contrasts each pair "
      f"with the others), got {n}."
    )
  return n


def check_positive(fn: str, **values) -> None:
  for name, v in values.items():
    if not np.isfinite(v) or v <= 0:
      raise ValueError(f"{fn}: `{name}` must be a positive number, got {v!r}.")


def global_sum(v: jax.Array, axis_name) -> jax.Array:
  """Sum of ``v`` over every element on every device; differentiable."""
  s = jnp.sum(v)
  return s if axis_name is None else jax.lax.psum(s, axis_name)


def global_logsumexp(v: jax.Array, axis_name) -> jax.Array:
  """``log sum exp`` of ``v`` over every element on every device, max-shifted; differentiable.

  The shift is a stop-gradient ``pmax``, so the value and gradient are those of the plain
  log-sum-exp.
  """
  m = jax.lax.stop_gradient(jnp.max(v))
  if axis_name is not None:
    m = jax.lax.pmax(m, axis_name)
  m = jnp.where(jnp.isfinite(m), m, 0.0)
  return m + jnp.log(global_sum(jnp.exp(v - m), axis_name))


def f32(a) -> jax.Array:
  return jnp.asarray(a).astype(jnp.float32)


def rowdot(a, b) -> jax.Array:
  """``[b]`` float32 ``a_i . b_i``."""
  return jnp.sum(f32(a) * f32(b), axis=-1)


def dot(a: jax.Array, b: jax.Array) -> jax.Array:
  """``[rows, cols]`` float32 ``a_i . b_j``."""
  return jnp.dot(a, b.T, preferred_element_type=jnp.float32)


def negative_logits(tile: Tile) -> jax.Array:
  """``[rows, cols]`` logits ``t x_i . y_j`` with the batch's pairs (``i == j``) at ``-inf``: the
  terms of a log-sum-exp over negatives only."""
  return jnp.where(tile.positive, NEG_INF, tile.params["scale"] * tile.sim)


def sq_dists(a: jax.Array, b: jax.Array) -> jax.Array:
  """``[rows, cols]`` squared distances ``||a_i - b_j||^2`` from one matmul (clamped at 0)."""
  a, b = f32(a), f32(b)
  d2 = jnp.sum(a * a, axis=-1)[:, None] + jnp.sum(b * b, axis=-1)[None, :] - 2.0 * dot(a, b)
  return jnp.maximum(d2, 0.0)


def safe_pow(d2: jax.Array, p: float) -> jax.Array:
  """``d2 ** p`` for ``d2 >= 0``, with value and gradient 0 at ``d2 == 0`` (``||0||^gamma``)."""
  if p == 1.0:
    return d2
  positive = d2 > 0
  return jnp.where(positive, jnp.where(positive, d2, 1.0) ** p, 0.0)


def device_slot(value: jax.Array, home: ReducedBlock, n_dev: int) -> jax.Array:
  """``[n_dev]`` zeros holding ``value`` at this device's index.

  The engine sums every device's ``finalize_fn`` output, which suits a loss that is a sum over
  samples. A loss that takes a log of a global sum (uniformity) needs each device's statistic
  separately: returning it in its own slot makes the engine's sum a gather, and the nonlinear
  combination happens after the ring, under ordinary autodiff.
  """
  me = home.ids[0] // home.ids.shape[0]
  return jnp.zeros((n_dev,), jnp.float32).at[me].set(value)


def log_softplus(z: jax.Array) -> jax.Array:
  """``log softplus(z)``, finite for every finite ``z`` (``~ z`` far below 0)."""
  sp = jax.nn.softplus(jnp.where(z < -15.0, 0.0, z))
  return jnp.where(z < -15.0, z, jnp.log(sp))
