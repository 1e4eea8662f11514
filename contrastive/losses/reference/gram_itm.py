"""Dense reference of GRAM's matching (ITM) term: the whole ``[B, B]`` volume matrix."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from contrastive.losses.reference.multimodal import gram_determinants

__all__ = ["gram_itm_loss"]

# The noise as `contrastive.losses.gram_itm` defines it, restated: murmur3's finalizer of
# (anchor key, candidate position, direction salt), its top 24 bits as u in (0, 1).
_ROW_SALT, _COL_SALT, _GOLDEN = 0x2545F491, 0x68E31DA4, 0x9E3779B9


def _fmix32(h):
  for shift, mult in ((16, 0x85EBCA6B), (13, 0xC2B2AE35)):
    h = (h ^ (h >> shift)) * jnp.uint32(mult)
  return h ^ (h >> 16)


def _gumbel(key, position, salt):
  h = _fmix32(key ^ _fmix32(position.astype(jnp.uint32) + jnp.uint32(salt)))
  u = ((h >> 8).astype(jnp.float32) + 0.5) / 2**24
  return -jnp.log(-jnp.log(u))


def gram_itm_loss(embeddings, scale, bias, *, ids=None, seed=0, block_size=None):
  """(1/3B) sum_i [softplus(-z_ii) + softplus(z_{i j*(i)}) + softplus(z_{i*(i) i})],
  z = -t Vol + b, j*(i) = argmax_{j != i} z_ij + g_ij, i*(j) = argmax_{i != j} z_ij + g'_ij."""
  del block_size
  n = embeddings[0].shape[0]
  z = -scale * jnp.sqrt(jnp.maximum(gram_determinants(embeddings), 1e-12)) + bias
  ids = jnp.arange(n) if ids is None else jnp.asarray(ids)
  key = _fmix32(ids.astype(jnp.uint32) ^ _fmix32(jnp.uint32(seed) + jnp.uint32(_GOLDEN)))
  pos = jnp.arange(n)
  off = jnp.where(jnp.eye(n, dtype=bool), -jnp.inf, 0.0)
  # The samples take no gradient: argmax of the perturbed logits, by row and by column.
  j_star = jnp.argmax(z + _gumbel(key[:, None], pos[None, :], _ROW_SALT) + off, axis=1)
  i_star = jnp.argmax(z + _gumbel(key[None, :], pos[:, None], _COL_SALT) + off, axis=0)
  negatives = jax.nn.softplus(z[pos, j_star]) + jax.nn.softplus(z[i_star, pos])
  if n == 1:
    negatives = jnp.zeros_like(negatives)
  return jnp.sum(jax.nn.softplus(-jnp.diag(z)) + negatives) / (3 * n)
