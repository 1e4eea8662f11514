r"""Adaptive multi-head contrastive learning (AMCL): several heads, a temperature per pair, and
the hardest negatives.

The model-free form: the embedding is split into ``num_heads`` chunks, each L2-normalized (the
heads), and the pair temperatures come from per-sample features :math:`\phi` given beside the
embeddings. In the paper :math:`\phi` is a small MLP shared by the heads; here it is whatever
the caller passes: another chunk of the tower's output (the registry's ``phi_dim``: the tower's
projection is then :math:`\phi`'s last layer), or nothing, and each head's own unit embedding
stands in (:math:`\phi(z) = z`: similar pairs get low temperatures, as the paper intends).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from contrastive.losses import _checks
from contrastive.losses import _pairwise
from contrastive.losses.ring import ReducedBlock
from contrastive.losses.ring import Tile
from contrastive.losses.ring import TileLoss
from contrastive.losses.ring import ring_loss


def amcl_loss(
  x: jax.typing.ArrayLike,
  y: jax.typing.ArrayLike,
  phi_x: jax.typing.ArrayLike | None = None,
  phi_y: jax.typing.ArrayLike | None = None,
  *,
  num_heads: int = 1,
  top_k: int | None = None,
  beta: float = 0.01,
  tau_min: float = 1e-5,
  tau_max: float = 2.0,
  axis_name: str | tuple[str, ...] | None = None,
  block_size: int | None = None,
) -> jax.Array:
  r"""AMCL: per head, positives and the hardest negatives at pair-adaptive temperatures.

  Head :math:`h` of a sample is its :math:`h`-th chunk of ``dim / num_heads`` channels,
  L2-normalized; :math:`s^h_{ij} = x^h_i \cdot y^h_j`. Pair temperatures
  :math:`\tau_{ij} = \tau_{min} + (\tau_{max} - \tau_{min})\, \sigma(-\phi(x_i) \cdot \phi(y_j))`,
  and :math:`\Omega(\tau) = \frac{d}{2} \log \tau + \frac{1}{\tau}` with :math:`d` the head
  dimension. For the anchor :math:`x_i`, with :math:`N_k(i)` its :math:`K` negatives
  :math:`j \ne i` of largest :math:`s^h_{ij}`:

  .. math::
    \ell^h_i = -\frac{s^h_{ii}}{\tau_{ii}} + \frac{1}{K} \sum_{j \in N_k(i)}
      \frac{s^h_{ij}}{\tau_{ij}} + \beta\, \Omega(\tau_{ii})
      - \beta \sum_{j \in N_k(i)} \big(\log \tau_{ij} + \tfrac{1}{\tau_{ij}}\big), \qquad
    L = \sum_h \frac{1}{2B} \sum_i \big(\ell^{h, x \to y}_i + \ell^{h, y \to x}_i\big)

  the :math:`y \to x` term the same with the anchor :math:`y_i` against :math:`x_j`. The
  selection is piecewise constant; the gradient flows through the selected pairs.

  Runs on the ring: with ``top_k`` a first pass finds each anchor's :math:`k`-th largest
  negative similarity per head (the engine's ``row_topk``/``col_topk``, no gradient), and one
  fused pass sums the terms of the negatives at or above it; without, one fused pass over all
  negatives. The thresholds are gathered (``[B, heads]`` floats); memory per device
  :math:`O(b\,(d + p) + B H + H\,\text{block\_size}^2)`. A negative tied with the :math:`k`-th
  to the last bit is told apart by its id, as in ``jax.lax.top_k``.

  Args:
    x: [batch, dim] embeddings of one modality (the local shard under ``axis_name``).
    y: [batch, dim] embeddings of the other; ``y[i]`` is the positive of ``x[i]``.
    phi_x, phi_y: [batch, p] temperature features of each sample, shared by the heads, or
      [batch, num_heads, p], one per head; None (both): :math:`\phi` is each head's embedding.
    num_heads: H, which must divide ``dim``.
    top_k: k, the hardest negatives per anchor and head; None, or ``k >= B - 1``: all ``B - 1``
      (the authors' ``min(k, negatives)``, so one config fits every batch).
    beta: weight of the temperature regularizers.
    tau_min, tau_max: the temperatures' range, ``0 < tau_min < tau_max``.
    axis_name: the ``jax.shard_map`` axis the batch is split over; None for a whole batch.
    block_size: largest tile side on a device; None picks one.

  Returns:
    float32 scalar, identical on every device of ``axis_name``.

  Example:
    >>> x = y = jnp.eye(4)  # orthogonal pairs: the negatives' similarities are 0
    >>> loss = amcl_loss(x, y, beta=0.0, tau_min=0.5, tau_max=1.5)
    >>> print(f"{loss:.3f}")  # -1 / (0.5 + sigmoid(-1))
    -1.300

  References:
    Wang et al., Adaptive Multi-head Contrastive Learning, ECCV 2024 (arXiv:2310.05615); the
    top-k form, defaults and regularizers as in the authors' code (LeiWangR/cl,
    ``amcl/losses.py``, ``AMCLNTXentLoss``).
  """
  fn = "amcl_loss"
  _checks.check_embeddings(fn, x=x, y=y)
  _checks.check_block_size(fn, block_size)
  batch, dim = np.shape(x)
  n = _pairwise.check_global_batch(fn, batch, axis_name)
  if isinstance(num_heads, bool) or not isinstance(num_heads, (int, np.integer)) or num_heads < 1:
    raise ValueError(f"{fn}: num_heads must be a positive int, got {num_heads!r}.")
  if dim % num_heads:
    raise ValueError(f"{fn}: num_heads={num_heads} does not divide the embedding dim {dim}.")
  if top_k is not None:
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
      raise ValueError(f"{fn}: top_k must be a positive int or None, got {top_k!r}.")
    top_k = int(top_k) if top_k < n - 1 else None  # as the authors: min(k, the negatives)
  if not 0.0 < tau_min < tau_max:
    raise ValueError(f"{fn}: needs 0 < tau_min < tau_max, got {tau_min!r} and {tau_max!r}.")
  if not beta >= 0.0:
    raise ValueError(f"{fn}: beta must be >= 0, got {beta!r}.")
  rows, cols = _heads(x, num_heads), _heads(y, num_heads)
  if (phi_x is None) != (phi_y is None):
    raise ValueError(f"{fn}: give both phi_x and phi_y, or neither.")
  if phi_x is not None:
    rows["phi"], cols["phi"] = _phi(fn, phi_x, batch, num_heads), _phi(fn, phi_y, batch, num_heads)
    if rows["phi"].shape != cols["phi"].shape:
      raise ValueError(
        f"{fn}: phi_x and phi_y differ in shape: {np.shape(phi_x)}, {np.shape(phi_y)}."
      )
  config = (
    num_heads,
    float(beta),
    float(tau_min),
    float(tau_max),
    top_k or n - 1,
    dim // num_heads,
  )
  kw = {"axis_name": axis_name, "block_size": block_size}
  row = col = None
  if top_k is not None:
    row, col = _thresholds(rows, cols, num_heads, top_k, axis_name, block_size)
  return ring_loss(_amcl_tiles(config, top_k is not None), rows, cols, {}, row, col, **kw)


def _heads(e, num_heads):
  z = _pairwise.f32(e)
  z = z.reshape(z.shape[0], num_heads, -1)
  return {"z": z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), 1e-12)}


def _phi(fn, phi, batch, num_heads):
  shape = np.shape(phi)
  if len(shape) == 2 and shape[0] == batch:
    return _pairwise.f32(phi)[:, None, :]
  if len(shape) == 3 and shape[:2] == (batch, num_heads):
    return _pairwise.f32(phi)
  raise ValueError(
    f"{fn}: phi_x/phi_y must be [batch, p] or [batch, num_heads, p] = ({batch}, {num_heads}, p), "
    f"got shape {shape}."
  )


def _head_sims(a, b):
  """[heads, rows, cols] float32 a^h_i . b^h_j (the same expression in both passes)."""
  return jnp.einsum("rhd,chd->hrc", a, b, preferred_element_type=jnp.float32)


# ----------------------------------------------------------------------------------------------
# Pass 1: each anchor's k-th largest negative similarity per head, and its id.


def _thresholds(rows, cols, num_heads, top_k, axis_name, block_size):
  rows, cols = jax.lax.stop_gradient(({"z": rows["z"]}, {"z": cols["z"]}))
  tiles = _select_tiles(num_heads, top_k)
  slots = ring_loss(tiles, rows, cols, {}, axis_name=axis_name, block_size=block_size)
  me = 0 if axis_name is None else jax.lax.axis_index(axis_name)
  # [b, heads, 4]: the k-th (value, id) of the x anchors, then of the y anchors.
  me = jax.lax.dynamic_index_in_dim(slots, me, keepdims=False)
  ids = me[..., 1::2].astype(jnp.int32)
  row = {"thr": me[..., 0], "id": ids[..., 0]}
  col = {"thr": me[..., 2], "id": ids[..., 1]}
  return row, col


@functools.cache
def _select_tiles(num_heads, top_k):
  def tile_fn(tile: Tile):
    s = jnp.where(tile.positive[None], _pairwise.NEG_INF, _head_sims(tile.x["z"], tile.y["z"]))
    return {
      **{f"x{h}": s[h] for h in range(num_heads)},
      **{f"y{h}": s[h] for h in range(num_heads)},
    }

  def finalize_fn(home: ReducedBlock):
    kth = lambda n: (home.stats[n][:, -1], home.stats[n + "_ids"][:, -1].astype(jnp.float32))
    per_head = [jnp.stack([*kth(f"x{h}"), *kth(f"y{h}")], -1) for h in range(num_heads)]
    # In this device's slot of [devices, b, heads, 4]: the engine's sum over devices gathers.
    b = home.ids.shape[0]
    slots = jnp.zeros((home.global_batch // b, b, num_heads, 4), jnp.float32)
    return slots.at[home.ids[0] // b].set(jnp.stack(per_head, 1))

  reductions = {f"x{h}": "row_topk" for h in range(num_heads)}
  reductions.update({f"y{h}": "col_topk" for h in range(num_heads)})
  return TileLoss(tile_fn=tile_fn, reductions=reductions, finalize_fn=finalize_fn, top_k=top_k)


# ----------------------------------------------------------------------------------------------
# Pass 2: the loss, linear in per-anchor sums over the selected negatives.


@functools.cache
def _amcl_tiles(config, selected: bool) -> TileLoss:
  num_heads, beta, tau_min, tau_max, k, d = config

  def temperature(u):
    return tau_min + (tau_max - tau_min) * jax.nn.sigmoid(-u)

  def tile_fn(tile: Tile):
    s = _head_sims(tile.x["z"], tile.y["z"])
    u = _head_sims(tile.x["phi"], tile.y["phi"]) if "phi" in tile.x else s
    tau = temperature(u)
    neg = s / (k * tau) - beta * (jnp.log(tau) + 1.0 / tau)  # [heads, rows, cols]
    other = ~tile.positive[None]
    if not selected:
      total = jnp.sum(jnp.where(other, neg, 0.0), axis=0)
      return {"neg_x": total, "neg_y": total}

    def chosen(thr, thr_id, ids):  # (s, -id) >= (thr, -thr_id): the top k, ties by smaller id
      return (s > thr) | ((s == thr) & (ids <= thr_id))

    row_thr, row_id = tile.row["thr"].T[:, :, None], tile.row["id"].T[:, :, None]
    col_thr, col_id = tile.col["thr"].T[:, None, :], tile.col["id"].T[:, None, :]
    by_x = other & chosen(row_thr, row_id, tile.col_ids[None, None, :])
    by_y = other & chosen(col_thr, col_id, tile.row_ids[None, :, None])
    return {
      "neg_x": jnp.sum(jnp.where(by_x, neg, 0.0), axis=0),
      "neg_y": jnp.sum(jnp.where(by_y, neg, 0.0), axis=0),
    }

  def finalize_fn(home: ReducedBlock):
    s = jnp.sum(home.x["z"] * home.y["z"], axis=-1)  # [b, heads]
    u = jnp.sum(home.x["phi"] * home.y["phi"], axis=-1) if "phi" in home.x else s
    tau = temperature(u)
    positive = -s / tau + beta * (0.5 * d * jnp.log(tau) + 1.0 / tau)
    positive = jnp.sum(jnp.broadcast_to(positive, s.shape))
    stats = home.stats
    return (2.0 * positive + jnp.sum(stats["neg_x"] + stats["neg_y"])) / (2 * home.global_batch)

  return TileLoss(
    tile_fn=tile_fn,
    finalize_fn=finalize_fn,
    reductions={"neg_x": "row_sum", "neg_y": "col_sum"},
    linear=True,
  )


def registry_adapter(fn):
  """Adapts ``fn(x, y, phi_x, phi_y, **kw)`` (`amcl_loss` or its reference) to the registry's
  convention, model-free: each embedding's last ``phi_dim`` channels, times ``phi_scale``, are
  the temperature features :math:`\\phi` (0: none, each head is its own :math:`\\phi`), the rest
  are the ``num_heads`` heads. The logit scale and bias are unused."""

  def adapted(embeddings, scale, bias, side, *, phi_dim=0, phi_scale=1.0, **kw):
    del scale, bias, side
    x, y = embeddings
    dim, heads = np.shape(x)[-1], kw.get("num_heads", 1)
    if not 0 <= phi_dim < dim or (dim - phi_dim) % heads:
      raise ValueError(
        f"amcl: num_heads={heads} must divide dim - phi_dim = {dim} - {phi_dim}, with "
        f"0 <= phi_dim < {dim}."
      )
    if not phi_dim:
      return fn(x, y, **kw)
    split = lambda e: (e[:, :-phi_dim], phi_scale * e[:, -phi_dim:])
    (x, phi_x), (y, phi_y) = split(x), split(y)
    return fn(x, y, phi_x, phi_y, **kw)

  return adapted
