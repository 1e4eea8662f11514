"""Symile: contrastive learning over any number of modalities with the multilinear inner product."""

from __future__ import annotations

import functools
import math
from typing import Literal

import jax
import jax.numpy as jnp

from contrastive.losses import _checks
from contrastive.losses import _symile_cube
from contrastive.losses._modalities import check_modalities
from contrastive.losses._modalities import roll_batch
from contrastive.losses.ring import ReducedBlock
from contrastive.losses.ring import Tile
from contrastive.losses.ring import TileLoss
from contrastive.losses.ring import axis_size
from contrastive.losses.ring import ring_loss

NEGATIVES = ("shifted", "aligned", "n_squared")


def symile_loss(
  embeddings,
  scale: jax.typing.ArrayLike,
  *,
  negatives: Literal["shifted", "aligned", "n_squared"] = "shifted",
  axis_name: str | tuple[str, ...] | None = None,
  block_size: int | None = None,
) -> jax.Array:
  r"""Symile's loss, each modality the anchor in turn, :math:`O(B)` or :math:`O(B^2)` negatives.

  With the multilinear inner product (MIP) of ``k`` vectors
  :math:`[a^1, \dots, a^k] = \sum_d \prod_m a^m_d`, anchor modality :math:`m` and the candidate
  for column :math:`j` the elementwise product of the other modalities,
  :math:`c^m_j = \bigodot_{r} a^{o_r}_{\pi_r(j)}` (:math:`o_0 < o_1 < \dots` the modalities other
  than :math:`m`):

  .. math::
    l^m_{ij} = \begin{cases} t\,[a^1_i, \dots, a^k_i] & i = j \\
                             t\, a^m_i \cdot c^m_j & i \ne j \end{cases}, \qquad
    L = \frac{1}{k} \sum_{m=1}^{k} \frac{1}{B} \sum_i \Big[ \mathrm{LSE}_j\, l^m_{ij}
        - t\,[a^1_i, \dots, a^k_i] \Big]

  ``negatives`` picks the permutations :math:`\pi_r`:

  * ``"shifted"`` (default): :math:`\pi_r(j) = (j + r) \bmod B`, so the other modalities of a
    negative come from different samples. This is a deterministic, mesh-exact stand-in for the
    authors' O(N) sampling, which shuffles every non-anchor modality with its own random
    permutation (``torch.randperm``) and then writes the positive MIP on the diagonal
    (rajesh-lab/symile ``src/losses_n_modes.py``, ``compute_logits_neg_sampling_n``): the
    negatives there are *not* the product of the other modalities at the same index ``j``, but
    draws from the product of their marginals. As there, a negative may share one index with the
    anchor (one column per row and modality): a chance false negative, systematic here.
  * ``"aligned"``: :math:`\pi_r(j) = j`, the other modalities' own tuple at index ``j``
    (negatives drawn from their joint distribution).
  * ``"n_squared"`` (``k = 3`` only): the authors' :math:`O(B^2)` negatives (rajesh-lab/symile
    ``src/losses.py``, ``compute_logits``): for anchor :math:`a^m_i`, every combination
    :math:`(a^{o_0}_j, a^{o_1}_l)` of the other two modalities is a candidate, the positive
    :math:`(i, i)` among them: :math:`L = \frac{1}{3} \sum_m \frac{1}{B} \sum_i
    [\mathrm{LSE}_{j,l}\, t\,[a^m_i, a^{o_0}_j, a^{o_1}_l] - t\,[a^1_i, a^2_i, a^3_i]]`.

  The first other modality is never shifted, so for ``k = 2`` "shifted" and "aligned" give
  exactly the CLIP loss ``softmax_loss(a1, a2, t)`` (the mean of the two anchors'
  cross-entropies is CLIP's normalisation).

  Runs on the ring: the ``k`` anchors stay as ``x`` and the ``k`` candidate products travel as a
  pytree ``y``; before the ring, the shifted copies (at most ``2(k-1)``) each move one
  ``[b, dim]`` block between neighbours with :func:`jax.lax.ppermute`. Memory per device
  :math:`O(k\, b\, d + k\, \text{block\_size}^2)`. ``"n_squared"`` is the documented
  exception: its :math:`[B, B, B]` logit cube is not a pair tile, so it runs on its own nested
  ring (`contrastive.losses._symile_cube`: the second modality's blocks travel an outer ring,
  the third's an inner ring inside each hop): compute :math:`O(B^3 d)` in all, memory
  :math:`O(b\, d + b^3)` per device (``block_size`` is not used).

  Args:
    embeddings: ``k >= 2`` aligned ``[batch, dim]`` arrays, one per modality (local shards under
      ``axis_name``); row ``i`` of each is one sample.
    scale: scalar logit scale :math:`t` (already exponentiated).
    negatives: ``"shifted"``, ``"aligned"`` or ``"n_squared"``, as above.
    axis_name: the ``jax.shard_map`` axis the batch is split over; None for a whole batch.
    block_size: largest tile side on a device; None picks one.

  Returns:
    float32 scalar, identical on every device of ``axis_name``.

  Example:
    >>> image = text = audio = jnp.eye(4)  # four orthogonal triples
    >>> loss = symile_loss([image, text, audio], 2.0)
    >>> print(f"{loss:.3f}")  # MIPs 1 for the triples, 0 for the shifted products: log(1 + 3 e^-2)
    0.341

  References:
    Saporta, Puli, Goldstein, Ranganath. Contrasting with Symile: Simple Model-Agnostic
    Representation Learning for Unlimited Modalities. NeurIPS 2024. Code: rajesh-lab/symile.
  """
  fn = "symile_loss"
  emb = check_modalities(fn, embeddings)
  _checks.check_scalars(fn, scale=scale)
  _checks.check_block_size(fn, block_size)
  if negatives not in NEGATIVES:
    raise ValueError(f"{fn}: negatives must be one of {NEGATIVES}, got {negatives!r}.")
  if negatives == "n_squared":
    return _n_squared(fn, emb, scale, axis_name)
  shifted = negatives == "shifted"
  k = len(emb)
  f32 = tuple(jnp.asarray(e, jnp.float32) for e in emb)
  rolled = {}

  def rolled_copy(m, shift):
    if (m, shift) not in rolled:
      rolled[m, shift] = roll_batch(f32[m], shift, axis_name)
    return rolled[m, shift]

  candidates = tuple(
    math.prod(
      rolled_copy(o, r if shifted else 0) for r, o in enumerate(i for i in range(k) if i != m)
    )
    for m in range(k)
  )
  return ring_loss(
    _symile_tiles(k, shifted),
    emb,
    candidates,
    {"scale": scale},
    axis_name=axis_name,
    block_size=block_size,
  )


def _n_squared(fn, emb, scale, axis_name) -> jax.Array:
  if len(emb) != 3:
    raise ValueError(f"{fn}: negatives='n_squared' needs exactly 3 modalities, got {len(emb)}.")
  n_dev = axis_size(axis_name)
  lse = _symile_cube.cube_lse(*emb, scale, axis_name, n_dev)
  positive = jnp.asarray(scale, jnp.float32) * _mip([jnp.asarray(e, jnp.float32) for e in emb])
  local = sum(jnp.sum(s - positive) for s in lse) / (3 * n_dev * emb[0].shape[0])
  return local if axis_name is None else jax.lax.psum(local, axis_name)


def _mip(vectors) -> jax.Array:
  return jnp.sum(math.prod(vectors), axis=-1)


@functools.cache
def _symile_tiles(k: int, shifted: bool) -> TileLoss:
  def tile_fn(tile: Tile):
    scale = tile.params["scale"]
    values = {}
    if shifted:
      positive = scale * _mip(tile.x)
    for m in range(k):
      logits = scale * jnp.dot(tile.x[m], tile.y[m].T, preferred_element_type=jnp.float32)
      if shifted:  # the diagonal holds the positive tuple, not the shifted candidate
        logits = jnp.where(tile.positive, positive[:, None], logits)
      values[f"lse_{m}"] = logits
    return values

  def finalize_fn(home: ReducedBlock):
    positive = home.params["scale"] * _mip([a.astype(jnp.float32) for a in home.x])
    total = sum(jnp.sum(home.stats[f"lse_{m}"] - positive) for m in range(k))
    return total / (k * home.global_batch)

  return TileLoss(
    tile_fn=tile_fn, reductions={f"lse_{m}": "row_lse" for m in range(k)}, finalize_fn=finalize_fn
  )
