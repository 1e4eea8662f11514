"""The pairwise sigmoid loss of SigLIP, exact over the whole mesh in one fused pass."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from contrastive.losses import _checks
from contrastive.losses.ring import Precision
from contrastive.losses.ring import ReducedBlock
from contrastive.losses.ring import Tile
from contrastive.losses.ring import TileLoss
from contrastive.losses.ring import ring_loss


def sigmoid_loss(
  x: jax.typing.ArrayLike,
  y: jax.typing.ArrayLike,
  scale: jax.typing.ArrayLike,
  bias: jax.typing.ArrayLike,
  *,
  axis_name: str | tuple[str, ...] | None = None,
  block_size: int | None = None,
  precision: Precision = None,
) -> jax.Array:
  r"""Pairwise binary cross-entropy over all pairs of the global batch (SigLIP).

  .. math::
    L = -\frac{1}{B} \sum_i \sum_j \log \sigma\big(z_{ij}\,(t\, x_i \cdot y_j + b)\big),
    \qquad z_{ij} = \begin{cases} +1 & i = j \\ -1 & i \ne j \end{cases}

  The loss is a plain sum over pairs, so its gradient needs no global statistic: one pass of the
  ring produces the value and every gradient, and the backward pass only scales them.

  Args:
    x: [batch, dim] embeddings of one modality (the local shard under ``axis_name``).
    y: [batch, dim] embeddings of the other; ``y[i]`` is the positive of ``x[i]``.
    scale: scalar logit scale :math:`t` (already exponentiated).
    bias: scalar logit bias :math:`b`.
    axis_name: the ``jax.shard_map`` axis the batch is split over; None for a whole batch.
    block_size: largest tile side on a device; None picks one.
    precision: of the similarity products (``jax.lax.Precision`` or its name); None keeps the
      backend's default, which on TPU rounds the embeddings to bfloat16 for the product (see
      ``ring_loss``); ``"highest"`` computes them in float32.

  Returns:
    float32 scalar, identical on every device of ``axis_name``.

  Example:
    >>> x = y = jnp.eye(4)  # four orthogonal pairs: logits t + b on the diagonal, b elsewhere
    >>> loss = sigmoid_loss(x, y, 10.0, -10.0)
    >>> print(f"{loss:.3f}")  # log 2 + 3 log(1 + e^-10)
    0.693

  References:
    Zhai et al., Sigmoid Loss for Language Image Pre-Training, 2023.
  """
  fn = "sigmoid_loss"
  _checks.check_embeddings(fn, x=x, y=y)
  _checks.check_scalars(fn, scale=scale, bias=bias)
  _checks.check_block_size(fn, block_size)
  return ring_loss(
    SIGMOID_TILES,
    x,
    y,
    {"scale": scale, "bias": bias},
    axis_name=axis_name,
    block_size=block_size,
    precision=precision,
  )


@jax.custom_jvp
def neg_log_sigmoid(z: jax.Array) -> jax.Array:
  """-log sigmoid(z), stable for any z; value and derivative share one exp per element."""
  return jnp.maximum(-z, 0.0) + jnp.log1p(jnp.exp(-jnp.abs(z)))


@neg_log_sigmoid.defjvp
def _neg_log_sigmoid_jvp(primals, tangents):
  (z,), (dz,) = primals, tangents
  e = jnp.exp(-jnp.abs(z))
  sigmoid_of_minus_z = jnp.where(z >= 0, e, 1.0) / (1.0 + e)
  return jnp.maximum(-z, 0.0) + jnp.log1p(e), -sigmoid_of_minus_z * dz


def _tile_fn(tile: Tile):
  logits = tile.params["scale"] * tile.sim + tile.params["bias"]
  sign = jnp.where(tile.positive, 1.0, -1.0)
  return {"nll": neg_log_sigmoid(sign * logits)}


def _finalize_fn(home: ReducedBlock):
  return jnp.sum(home.stats["nll"]) / home.global_batch


SIGMOID_TILES = TileLoss(
  tile_fn=_tile_fn, reductions={"nll": "row_sum"}, finalize_fn=_finalize_fn, linear=True
)
