"""InfoNCE against soft targets computed tile by tile from side data that travels with the blocks.

One kernel covers the continuous-target family: CWCL's weights from a frozen modality,
distillation from teacher embeddings, M3CoL's mixup targets, label smoothing (and one-hot, which
is :func:`softmax_loss`). A target function sees one tile of pairs and the side data of its rows
and columns; no ``[B, B]`` target matrix is ever formed.
"""

from __future__ import annotations

from collections.abc import Callable
import functools
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from contrastive.losses import _checks
from contrastive.losses import _pairwise
from contrastive.losses.ring import ReducedBlock
from contrastive.losses.ring import Tile
from contrastive.losses.ring import TileLoss
from contrastive.losses.ring import axis_size
from contrastive.losses.ring import ring_loss

SPACES = ("weights", "logits")
# |logit| below this counts as 0 in the signed split of the logits-space targets (its share of
# the loss is below 1e-30 of a target's mass).
_TINY = 1e-30


class TargetTile(NamedTuple):
  """What a target function sees: one tile of (row, column) pairs."""

  row: Any  # the side pytree of the tile's rows, leaves [rows, ...]
  col: Any  # the side pytree of the tile's columns, leaves [cols, ...]
  row_ids: jax.Array  # [rows] int32 global positions
  col_ids: jax.Array  # [cols] int32 global positions
  global_batch: int  # B
  scale: jax.Array  # the student's logit scale (float32 scalar)

  @property
  def diagonal(self) -> jax.Array:
    """[rows, cols] bool, true for the pairs of the batch (i == j)."""
    return self.row_ids[:, None] == self.col_ids[None, :]


TargetFn = Callable[[TargetTile], jax.Array]


def soft_target_loss(
  x: jax.typing.ArrayLike,
  y: jax.typing.ArrayLike,
  scale: jax.typing.ArrayLike,
  side: Any = None,
  *,
  targets: TargetFn,
  space: Literal["weights", "logits"] = "weights",
  normalize: bool = True,
  axis_name: str | tuple[str, ...] | None = None,
  block_size: int | None = None,
) -> jax.Array:
  r"""Symmetric cross-entropy between soft targets and the softmax over the batch.

  With logits :math:`l_{ij} = t\, x_i \cdot y_j` and target scores :math:`w_{ij}` from
  ``targets``, each anchor's target distribution is its row (for :math:`x_i`) or its column
  (for :math:`y_j`) of :math:`w`, normalised:

  .. math::
    L = \frac{1}{2B} \Big[ \sum_i -\sum_j q^{x}_{ij} \log \operatorname{softmax}_j(l_{ij})
        + \sum_j -\sum_i q^{y}_{ij} \log \operatorname{softmax}_i(l_{ij}) \Big]

  * ``space="weights"``: :math:`w_{ij} \ge 0` and :math:`q^x_{ij} = w_{ij} / \sum_k w_{ik}`,
    :math:`q^y_{ij} = w_{ij} / \sum_k w_{kj}`; with ``normalize=False`` the weights are used as
    they are (:math:`q = w`), as M3CoL does for the reverse direction of its mixup targets.
    One pass: per anchor :math:`\mathrm{LSE}_j l_{ij}`, :math:`\sum_j w_{ij}` and
    :math:`\sum_j w_{ij} l_{ij}`.
  * ``space="logits"``: :math:`w_{ij}` are target logits, :math:`q^x = \operatorname{softmax}_j
    w`, :math:`q^y = \operatorname{softmax}_i w` (a teacher's distribution). Still one pass:
    :math:`\sum_j q_{ij} l_{ij} = e^{P_i - G_i} - e^{N_i - G_i}` with :math:`G_i =
    \mathrm{LSE}_j w_{ij}` and :math:`P_i, N_i = \mathrm{LSE}_j (w_{ij} + \log l^{\pm}_{ij})` over
    the positive and negative logits, all online log-sum-exps. Masked targets must be exactly
    ``-inf`` through ``jnp.where``, not ``log(0)``.

  Special cases: :func:`one_hot_targets` gives :func:`softmax_loss`;
  :func:`label_smoothing_targets` gives ``softmax_loss(label_smoothing=eps)``.

  Runs on the ring; ``side`` travels with the ``y`` block and stays at home with ``x`` (it is
  both the rows' and the columns' side data). Gradients reach ``x``, ``y``, ``scale`` and the
  floating leaves of ``side`` (teacher embeddings, mixing weights). Memory per device
  :math:`O(b\,(d + d_{side}) + \text{block\_size}^2)`.

  Args:
    x: [batch, dim] embeddings of one modality (the local shard under ``axis_name``).
    y: [batch, dim] embeddings of the other.
    scale: scalar logit scale :math:`t`.
    side: pytree of per-sample arrays with leading dimension ``batch`` (or None).
    targets: ``targets(TargetTile) -> [rows, cols]`` target scores of one tile; see
      :func:`one_hot_targets`, :func:`label_smoothing_targets`, :func:`cwcl_targets`,
      :func:`mixup_targets`, :func:`teacher_logits`, :func:`medclip_targets`. Hashable (a
      module-level function or the cached result of one of those factories), so the compiled
      loss is reused.
    space: ``"weights"`` (non-negative scores) or ``"logits"`` (target logits).
    normalize: normalise the weights per anchor (``space="weights"`` only).
    axis_name: the ``jax.shard_map`` axis the batch is split over; None for a whole batch.
    block_size: largest tile side on a device; None picks one.

  Returns:
    float32 scalar, identical on every device of ``axis_name``. With ``normalize``, every row
    and column of :math:`w` must have a positive sum (else the loss is NaN).

  Example:
    >>> x = y = jnp.eye(4)  # four orthogonal pairs
    >>> side = {"frozen": jnp.eye(4)}  # CWCL's weights: 1 on the diagonal, 1/2 elsewhere
    >>> loss = soft_target_loss(x, y, 2.0, side, targets=cwcl_targets())
    >>> print(f"{loss:.3f}")  # log(1 + 3 e^-2) + (3/5) t
    1.541

  References:
    Srinivasa et al., CWCL: Cross-Modal Transfer with Continuously Weighted Contrastive Loss,
    NeurIPS 2023; Li et al., Align before Fuse (ALBEF), NeurIPS 2021 (distillation from momentum
    similarities); Kumar et al., Harnessing Shared Relations via Multimodal Mixup Contrastive
    Learning (M3CoL), 2024, after the authors' ``mixco_nce`` (RaghavSinghal10/M3CoL,
    ``model/utils.py``); Szegedy et al., 2016 (label smoothing); Wang et al., MedCLIP:
    Contrastive Learning from Unpaired Medical Images and Text, EMNLP 2022 (semantic matching).
  """
  fn = "soft_target_loss"
  _checks.check_embeddings(fn, x=x, y=y)
  _checks.check_scalars(fn, scale=scale)
  _checks.check_block_size(fn, block_size)
  batch = np.shape(x)[0]
  _checks.check_side(fn, batch, side=side)
  if space not in SPACES:
    raise ValueError(f"{fn}: space must be one of {SPACES}, got {space!r}.")
  if space == "logits" and not normalize:
    raise ValueError(
      f"{fn}: normalize=False applies to space='weights' only (logits-space "
      "targets are a softmax, normalised by construction)."
    )
  if not callable(targets):
    raise TypeError(f"{fn}: `targets` must be a function of a TargetTile, got {targets!r}.")
  n = batch * axis_size(axis_name)
  tiles = _soft_tiles(targets, space, bool(normalize), n)
  return ring_loss(
    tiles, x, y, {"scale": scale}, row=side, col=side, axis_name=axis_name, block_size=block_size
  )


# ----------------------------------------------------------------------------------------------
# Target functions.


def one_hot_targets(tile: TargetTile) -> jax.Array:
  """The pairs of the batch: :math:`w_{ij} = \\delta_{ij}` (plain InfoNCE)."""
  return tile.diagonal.astype(jnp.float32)


@functools.cache
def label_smoothing_targets(eps: float) -> TargetFn:
  """:math:`w_{ij} = (1 - \\varepsilon)\\,\\delta_{ij} + \\varepsilon / B`."""
  eps = float(eps)
  if not 0.0 <= eps < 1.0:
    raise ValueError(f"label_smoothing_targets: eps must be in [0, 1), got {eps!r}.")

  def targets(tile: TargetTile) -> jax.Array:
    return (1 - eps) * tile.diagonal.astype(jnp.float32) + eps / tile.global_batch

  return targets


@functools.cache
def cwcl_targets(key: str = "frozen") -> TargetFn:
  """CWCL: :math:`w_{ij} = (1 + p_i \\cdot p_j) / 2` from the frozen modality's embeddings
  ``side[key]`` (``[batch, dim']``, unit norm), normalised per anchor."""

  def targets(tile: TargetTile) -> jax.Array:
    return (1.0 + _pairwise.dot(_pairwise.f32(tile.row[key]), _pairwise.f32(tile.col[key]))) / 2

  return targets


@functools.cache
def medclip_targets(temperature: float | None = None, key: str = "findings") -> TargetFn:
  """MedCLIP's semantic matching: target logits :math:`\\cos(l_i, l_j) / \\tau'` from the
  ``[batch, num_labels]`` multi-hot label vectors ``side[key]``, for ``space="logits"`` (their
  softmax over the batch is the target of each image and of each text).

  ``temperature=None`` is :math:`\\tau' = 1`, the authors' plain softmax of label similarities.
  An all-zero label vector has cosine 0 with every other. The labels are data: no gradient.
  """
  tau = 1.0 if temperature is None else float(temperature)
  if not np.isfinite(tau) or tau <= 0:
    raise ValueError(f"medclip_targets: temperature must be positive, got {temperature!r}.")

  def unit(labels):
    labels = jax.lax.stop_gradient(_pairwise.f32(labels))
    if labels.ndim != 2:
      raise ValueError(
        f"medclip_targets: side[{key!r}] must be [batch, num_labels] multi-hot vectors, got "
        f"shape {labels.shape}."
      )
    norm = jnp.linalg.norm(labels, axis=-1, keepdims=True)
    return labels / jnp.where(norm > 0, norm, 1.0)

  def targets(tile: TargetTile) -> jax.Array:
    return _pairwise.dot(unit(tile.row[key]), unit(tile.col[key])) / tau

  return targets


@functools.cache
def mixup_targets(lam_key: str = "mix_lambda", partner_key: str = "mix_partner") -> TargetFn:
  """M3CoL mixup: :math:`w_{ij} = \\lambda_i \\delta_{ij} + (1 - \\lambda_i)\\,[j = \\pi(i)]`,
  where ``x[i]`` embeds the mix :math:`\\lambda_i u_i + (1 - \\lambda_i) u_{\\pi(i)}`.

  ``side[lam_key]`` is ``[batch]`` float (1 for an unmixed sample), ``side[partner_key]`` the
  ``[batch]`` int *global* index :math:`\\pi(i)`. Use with ``normalize=False`` to match the
  authors' reverse direction (their ``probs.T``); where :math:`\\pi(i) = i` the two terms add
  to 1 (the authors' code overwrites the first).
  """

  def targets(tile: TargetTile) -> jax.Array:
    lam = _pairwise.f32(tile.row[lam_key])[:, None]
    partner = tile.row[partner_key][:, None] == tile.col_ids[None, :]
    return lam * tile.diagonal + (1 - lam) * partner

  return targets


@functools.cache
def teacher_logits(
  scale: float | None = None, x_key: str = "teacher_x", y_key: str = "teacher_y"
) -> TargetFn:
  """Distillation: target logits :math:`t' u_i \\cdot v_j` from teacher embeddings
  ``side[x_key]`` (rows) and ``side[y_key]`` (columns), for ``space="logits"``.

  ``scale=None`` uses the student's scale, stop-gradient (ALBEF's momentum distillation shares
  the temperature).
  """

  def targets(tile: TargetTile) -> jax.Array:
    t = jax.lax.stop_gradient(tile.scale) if scale is None else scale
    return t * _pairwise.dot(_pairwise.f32(tile.row[x_key]), _pairwise.f32(tile.col[y_key]))

  return targets


# ----------------------------------------------------------------------------------------------
# The tiles.


@functools.lru_cache(maxsize=256)  # keyed by the target function: bounded for ad-hoc lambdas
def _soft_tiles(targets: TargetFn, space: str, normalize: bool, global_batch: int) -> TileLoss:
  def tile_fn(tile: Tile):
    t = tile.params["scale"]
    logits = t * tile.sim
    w = targets(
      TargetTile(
        row=tile.row,
        col=tile.col,
        row_ids=tile.row_ids,
        col_ids=tile.col_ids,
        global_batch=global_batch,
        scale=t,
      )
    )
    w = jnp.broadcast_to(jnp.asarray(w, jnp.float32), logits.shape)
    values = {"lse_x": logits, "lse_y": logits}
    if space == "weights":
      values.update(w_x=w, w_y=w, wl_x=w * logits, wl_y=w * logits)
    else:
      up, down = logits > _TINY, logits < -_TINY
      log_abs = jnp.log(jnp.where(up | down, jnp.abs(logits), 1.0))
      plus = jnp.where(up, w + log_abs, _pairwise.NEG_INF)
      minus = jnp.where(down, w + log_abs, _pairwise.NEG_INF)
      values.update(g_x=w, g_y=w, plus_x=plus, plus_y=plus, minus_x=minus, minus_y=minus)
    return values

  def expected_logit(s, d):  # sum_j q_ij l_ij (or sum_j w_ij l_ij unnormalised)
    if space == "logits":
      return jnp.exp(s[f"plus_{d}"] - s[f"g_{d}"]) - jnp.exp(s[f"minus_{d}"] - s[f"g_{d}"])
    return s[f"wl_{d}"] / s[f"w_{d}"] if normalize else s[f"wl_{d}"]

  def finalize_fn(home: ReducedBlock):
    s = home.stats
    total = 0.0
    for d in ("x", "y"):
      mass = s[f"w_{d}"] if space == "weights" and not normalize else 1.0
      total += jnp.sum(mass * s[f"lse_{d}"] - expected_logit(s, d))
    return total / (2 * home.global_batch)

  names = (("w", "wl") if space == "weights" else ("g", "plus", "minus")) + ("lse",)
  kind = "sum" if space == "weights" else "lse"
  reductions = {}
  for name in names:
    k = "lse" if name == "lse" else kind
    reductions.update({f"{name}_x": f"row_{k}", f"{name}_y": f"col_{k}"})
  return TileLoss(tile_fn=tile_fn, reductions=reductions, finalize_fn=finalize_fn)
