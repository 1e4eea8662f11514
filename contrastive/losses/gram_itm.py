"""GRAM's data-anchor matching (ITM) term on embeddings: volume logits, hard negatives sampled
from softmax(-t Vol) by the Gumbel-max trick, one top-1 reduction per direction on the ring."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from contrastive.losses import _checks
from contrastive.losses._modalities import check_modalities
from contrastive.losses.gram import _gram_entries
from contrastive.losses.gram import volume
from contrastive.losses.ring import ReducedBlock
from contrastive.losses.ring import Tile
from contrastive.losses.ring import TileLoss
from contrastive.losses.ring import ring_loss

_ROW_SALT, _COL_SALT = 0x2545F491, 0x68E31DA4  # the two directions draw independent noise


def gram_itm_loss(
  embeddings,
  scale: jax.typing.ArrayLike,
  bias: jax.typing.ArrayLike,
  *,
  ids: jax.Array | None = None,
  seed: int = 0,
  axis_name: str | tuple[str, ...] | None = None,
  block_size: int | None = None,
) -> jax.Array:
  r"""GRAM's data-anchor matching loss with volume logits and sampled hard negatives.

  With GRAM's volume :math:`\mathrm{Vol}_{ij}` of the anchor of sample :math:`i` and the other
  modalities of sample :math:`j` (`gram_loss`), the matching logit
  :math:`z_{ij} = -t\, \mathrm{Vol}_{ij} + b` (the probability that the tuple matches is
  :math:`\sigma(z_{ij})`). Each anchor :math:`i` draws one hard negative
  :math:`j^*(i) \sim \operatorname{softmax}_{j \ne i}(-t\,\mathrm{Vol}_{ij})`, and each data
  tuple :math:`j` one anchor :math:`i^*(j) \sim \operatorname{softmax}_{i \ne j}(-t\,
  \mathrm{Vol}_{ij})`; binary cross-entropy with the positives matching:

  .. math::
    L = \frac{1}{3B} \sum_i \Big[ \log(1 + e^{-z_{ii}}) + \log(1 + e^{z_{i j^*(i)}})
        + \log(1 + e^{z_{i^*(i)\, i}}) \Big]

  the three groups of the authors' ITM batch (ispamm/GRAM ``model/gram.py``, ``forward_ret``:
  positives, (anchor, sampled data), (sampled anchor, data); weights
  ``softmax(-volume / contra_temp)`` with the diagonal zeroed). The authors score a tuple with
  a cross-attention encoder and a 2-way head; this is the embeddings-only form, the tuple scored
  by its own volume with the model's scale and bias, and without their ``+1e-4`` floor on the
  sampling weights. Samples come by the Gumbel-max trick,
  :math:`j^* = \arg\max_{j \ne i} (z_{ij} + g_{ij})`, the Gumbel noise :math:`g_{ij}` a hash of
  (the anchor's key, the candidate's batch position), the anchor's key a hash of ``seed`` and
  its id: the same on every device, tiling and in the backward pass, which recomputes tiles.
  The sampling takes no gradient; the sampled negative's logit does.

  Runs on the ring: the anchor stays, the other modalities travel; one ``row_topk`` and one
  ``col_topk`` reduction with ``k = 1`` keep each anchor's and each tuple's perturbed maximum and
  its id. Memory per device :math:`O(k\, b\, d + k^2\, \text{block\_size}^2)`.

  Args:
    embeddings: ``k >= 2`` aligned ``[batch, dim]`` arrays (local shards under ``axis_name``);
      ``embeddings[0]`` is the anchor (the text in GRAM).
    scale: scalar :math:`t = 1/\tau` (already exponentiated), GRAM's.
    bias: scalar :math:`b`, the matching logit's bias.
    ids: int ``[batch]`` example ids that key the noise (the batch's ``index``, so each step
      draws anew); None keys it by batch position (the same draw for every batch of a seed).
    seed: int, mixed into every key.
    axis_name: the ``jax.shard_map`` axis the batch is split over; None for a whole batch.
    block_size: largest tile side on a device; None picks one.

  Returns:
    float32 scalar, identical on every device of ``axis_name``. A batch of one has no negative:
    its loss is the positive's term alone (over 3B).

  Example:
    >>> u = jax.random.normal(jax.random.key(1), (3, 8, 16))  # 3 modalities, batch 8, dim 16
    >>> text, video, audio = u / jnp.linalg.norm(u, axis=-1, keepdims=True)
    >>> loss = gram_itm_loss([text, video, audio], 1 / 0.07, 10.0)
    >>> print(f"{loss:.3f}")
    1.168

  References:
    Cicchetti, Grassucci, Sigillo, Comminiello. Gramian Multimodal Representation Learning and
    Alignment. ICLR 2025. Code: ispamm/GRAM.
  """
  fn = "gram_itm_loss"
  emb = check_modalities(fn, embeddings)
  _checks.check_scalars(fn, scale=scale, bias=bias)
  _checks.check_block_size(fn, block_size)
  b = emb[0].shape[0]
  if ids is None:
    offset = 0 if axis_name is None else jax.lax.axis_index(axis_name) * b
    ids = offset + jnp.arange(b, dtype=jnp.int32)
  elif jnp.shape(ids) != (b,) or not jnp.issubdtype(jnp.result_type(ids), jnp.integer):
    raise ValueError(
      f"{fn}: ids must be int [{b}] (one per example), got {jnp.result_type(ids)} {jnp.shape(ids)}."
    )
  key = anchor_keys(ids, seed)
  return ring_loss(
    _itm_tiles(),
    emb[0],
    emb[1:],
    {"scale": scale, "bias": bias},
    {"key": key},
    {"key": key},
    axis_name=axis_name,
    block_size=block_size,
  )


def _mix(h: jax.Array) -> jax.Array:
  """A uint32 avalanche (the murmur3 finalizer): every output bit depends on every input bit."""
  h = h ^ (h >> 16)
  h = h * jnp.uint32(0x85EBCA6B)
  h = h ^ (h >> 13)
  h = h * jnp.uint32(0xC2B2AE35)
  return h ^ (h >> 16)


def anchor_keys(ids, seed) -> jax.Array:
  """uint32 ``[batch]`` keys of the anchors: a hash of ``seed`` and each id."""
  ids = jnp.asarray(ids).astype(jnp.uint32)
  return _mix(ids ^ _mix(jnp.asarray(seed).astype(jnp.uint32) + jnp.uint32(0x9E3779B9)))


def gumbel(key: jax.Array, position: jax.Array, salt: int) -> jax.Array:
  """Standard Gumbel noise from an anchor's uint32 ``key`` and a candidate's int ``position``
  (broadcast): :math:`-\\log(-\\log u)`, ``u`` the hash's top 24 bits in (0, 1)."""
  h = _mix(key ^ _mix(jnp.asarray(position).astype(jnp.uint32) + jnp.uint32(salt)))
  u = ((h >> 8).astype(jnp.float32) + 0.5) * (1.0 / (1 << 24))
  return -jnp.log(-jnp.log(u))


def matching_logits(entries, scale, bias) -> jax.Array:
  """:math:`z = -t\\,\\mathrm{Vol} + b` from the Gram entries (`gram._gram_entries`)."""
  return -scale * volume(entries) + bias


@functools.cache
def _itm_tiles() -> TileLoss:
  def tile_fn(tile: Tile):
    z = matching_logits(
      _gram_entries(tile.x, tile.y, pairwise=True), tile.params["scale"], tile.params["bias"]
    )
    row = z + gumbel(tile.row["key"][:, None], tile.col_ids[None, :], _ROW_SALT)
    col = z + gumbel(tile.col["key"][None, :], tile.row_ids[:, None], _COL_SALT)
    off = jnp.where(tile.positive, -jnp.inf, 0.0)  # the positive is never its own negative
    return {"neg_row": row + off, "neg_col": col + off}

  def finalize_fn(home: ReducedBlock):
    f32 = lambda a: a.astype(jnp.float32)
    entries = _gram_entries(f32(home.x), [f32(y) for y in home.y], pairwise=False)
    z_pos = matching_logits(entries, home.params["scale"], home.params["bias"])
    total = jnp.sum(jax.nn.softplus(-z_pos))
    for name, salt, key in (
      ("neg_row", _ROW_SALT, home.row["key"]),
      ("neg_col", _COL_SALT, home.col["key"]),
    ):
      value, picked = home.stats[name][:, 0], home.stats[name + "_ids"][:, 0]
      found = jnp.isfinite(value)
      z = jnp.where(found, value - gumbel(key, picked, salt), 0.0)
      total += jnp.sum(jnp.where(found, jax.nn.softplus(z), 0.0))
    return total / (3 * home.global_batch)

  return TileLoss(
    tile_fn=tile_fn,
    reductions={"neg_row": "row_topk", "neg_col": "col_topk"},
    finalize_fn=finalize_fn,
    top_k=1,
  )


def registry_adapter(fn):
  """Adapts ``fn(embeddings, scale, bias, *, ids, **kw)`` to the registry's convention: the
  noise keyed by the batch's example ids ``side["index"]``, so every step draws anew."""

  def adapted(embeddings, scale, bias, side, **kw):
    return fn(embeddings, scale, bias, ids=side["index"], **kw)

  return adapted
