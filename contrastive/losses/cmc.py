"""Contrastive Multiview Coding: pairwise InfoNCE over the full graph of views or a core view."""

from __future__ import annotations

import itertools
from typing import Literal

import jax

from contrastive.losses import _checks
from contrastive.losses._modalities import check_modalities
from contrastive.losses.softmax import softmax_loss

MODES = ("all_pairs", "core")


def cmc_loss(
  embeddings,
  scale: jax.typing.ArrayLike,
  *,
  mode: Literal["all_pairs", "core"] = "all_pairs",
  label_smoothing: float = 0.0,
  axis_name: str | tuple[str, ...] | None = None,
  block_size: int | None = None,
) -> jax.Array:
  r"""CMC: the symmetric InfoNCE summed over pairs of views.

  With :math:`L_{\mathrm{CLIP}}(V_p, V_q)` the symmetric softmax loss of :func:`softmax_loss`
  (the mean of its two directions):

  .. math::
    L_{\text{all\_pairs}} = \sum_{1 \le p < q \le k} L_{\mathrm{CLIP}}(V_p, V_q), \qquad
    L_{\text{core}} = \sum_{q=2}^{k} L_{\mathrm{CLIP}}(V_1, V_q)

  the paper's full graph and core view (``embeddings[0]`` is the core). The paper writes the
  two-view term as the *sum* of the two directions, :math:`L(V_1, V_2) = L^{V_1, V_2} + L^{V_2,
  V_1}`, twice the term here. The paper approximated the softmax with NCE against a memory bank
  of past embeddings; here the negatives are the other samples of the global batch under the
  exact softmax. With ``k = 2`` both modes equal ``softmax_loss(V1, V2, t)``.

  Runs on the ring: one :func:`softmax_loss` ring per pair (``k(k-1)/2`` or ``k-1`` of them).
  Memory per device :math:`O(k\, b\, d + \text{block\_size}^2)`.

  Args:
    embeddings: ``k >= 2`` aligned ``[batch, dim]`` views (local shards under ``axis_name``);
      ``embeddings[0]`` is the core view of ``mode="core"``.
    scale: scalar logit scale :math:`t` (already exponentiated).
    mode: ``"all_pairs"`` (full graph) or ``"core"`` (core view).
    label_smoothing: passed to every pair's :func:`softmax_loss`.
    axis_name: the ``jax.shard_map`` axis the batch is split over; None for a whole batch.
    block_size: largest tile side on a device; None picks one.

  Returns:
    float32 scalar, identical on every device of ``axis_name``.

  Example:
    >>> luminance = chrominance = depth = jnp.eye(4)  # three views of four samples
    >>> loss = cmc_loss([luminance, chrominance, depth], 1.0, mode="core")
    >>> print(f"{loss:.3f}")  # two pairs (core, other), each CLIP's log(1 + 3 / e)
    1.487

  References:
    Tian, Krishnan, Isola. Contrastive Multiview Coding. ECCV 2020.
  """
  fn = "cmc_loss"
  emb = check_modalities(fn, embeddings)
  _checks.check_scalars(fn, scale=scale)
  _checks.check_block_size(fn, block_size)
  _checks.check_label_smoothing(fn, label_smoothing)
  if mode not in MODES:
    raise ValueError(f"{fn}: mode must be one of {MODES}, got {mode!r}.")
  pairs = (
    itertools.combinations(range(len(emb)), 2)
    if mode == "all_pairs"
    else ((0, q) for q in range(1, len(emb)))
  )
  return sum(
    softmax_loss(
      emb[p],
      emb[q],
      scale,
      label_smoothing=label_smoothing,
      axis_name=axis_name,
      block_size=block_size,
    )
    for p, q in pairs
  )
