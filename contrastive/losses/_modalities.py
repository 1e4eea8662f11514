"""Validation and plumbing shared by the n-modal (and queue) losses."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from contrastive.losses import _checks
from contrastive.losses.ring import axis_size


def check_modalities(fn: str, embeddings) -> tuple[jax.Array, ...]:
  """``embeddings`` is a sequence of at least two floating ``[batch, dim]`` arrays of one shape.

  Returns:
    the arrays as a tuple, in order.
  """
  if isinstance(embeddings, (jax.Array, np.ndarray)) or not isinstance(embeddings, Sequence):
    raise TypeError(
      f"{fn}: `embeddings` must be a sequence (list or tuple) of [batch, dim] arrays, one per "
      f"modality, got {type(embeddings).__name__}"
      + (f" of shape {np.shape(embeddings)}" if hasattr(embeddings, "shape") else "")
      + "."
    )
  embeddings = tuple(embeddings)
  if len(embeddings) < 2:
    raise ValueError(f"{fn}: needs at least 2 modalities, got {len(embeddings)}.")
  _checks.check_embeddings(fn, **{f"embeddings[{i}]": e for i, e in enumerate(embeddings)})
  return embeddings


def roll_batch(a: jax.Array, shift: int, axis_name) -> jax.Array:
  """``out[j] = a[(j + shift) mod B]`` over the global batch ``B`` split along ``axis_name``.

  On a mesh, device ``d`` holds global rows ``[d b, (d+1) b)``; its rolled block is the tail of
  the block ``shift // b`` devices ahead followed by the head of the next one: two
  :func:`jax.lax.ppermute` that move ``b`` rows in all. Differentiable (the transpose of a
  ``ppermute`` is the inverse ``ppermute``).
  """
  if shift == 0:
    return a
  if axis_name is None:
    return jnp.roll(a, -shift, axis=0)
  n, b = axis_size(axis_name), a.shape[0]
  q, r = divmod(shift % (n * b), b)

  def from_ahead(rows, steps):  # `rows` of the device `steps` ahead on the ring
    steps %= n
    if steps == 0:
      return rows
    return jax.lax.ppermute(rows, axis_name, [(src, (src - steps) % n) for src in range(n)])

  if r == 0:
    return from_ahead(a, q)
  return jnp.concatenate([from_ahead(a[r:], q), from_ahead(a[:r], q + 1)], axis=0)


def masked_logsumexp(values: jax.Array, keep: jax.Array, axis: int) -> jax.Array:
  """log sum exp over ``axis`` of the kept ``values``: -inf where none is kept, and finite
  gradients everywhere (no ``exp(-inf - -inf)``), unlike ``jax.nn.logsumexp`` of masked values."""
  top = jnp.max(jnp.where(keep, values, -jnp.inf), axis=axis, keepdims=True)
  top = jax.lax.stop_gradient(jnp.where(jnp.isfinite(top), top, 0.0))
  total = jnp.sum(jnp.exp(jnp.where(keep, values - top, -jnp.inf)), axis=axis)
  some = total > 0
  return jnp.where(some, jnp.log(jnp.where(some, total, 1.0)) + jnp.squeeze(top, axis), -jnp.inf)
