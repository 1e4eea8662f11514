"""One pass of the ring engine (`contrastive.losses.ring`): every tile of the local rows against
every block of columns as it travels the ring, reduced into per-row and per-column statistics,
or, in the backward pass, into gradients; and the pytree helpers the engine shares with it.

What moves is split in two so that every transfer can run while tiles are computed (see
`run_pass`). Memory stays O(b * d + block_size^2).
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp

from contrastive.losses._topk import topk_cotangent
from contrastive.losses._topk import topk_merge
from contrastive.losses._topk import topk_update
from contrastive.losses.tile_loss import NO_ID
from contrastive.losses.tile_loss import Tile


def axis_index(axis_name) -> jax.Array:
  return jnp.int32(0) if axis_name is None else jax.lax.axis_index(axis_name)


def vary(v, axis_name):
  """Marks `v` as device-varying over `axis_name` (shard_map's typing needs it in loop carries)."""
  if axis_name is None:
    return v
  names = (axis_name,) if isinstance(axis_name, str) else tuple(axis_name)
  missing = tuple(a for a in names if a not in jax.typeof(v).manual_axis_type.varying)
  return jax.lax.pcast(v, missing, to="varying") if missing else v


def _is_float(leaf) -> bool:
  return jnp.issubdtype(jnp.result_type(leaf), jnp.floating)


def _pad(tree, rows: int):
  def pad(a):
    extra = rows - a.shape[0]
    return a if extra == 0 else jnp.pad(a, [(0, extra)] + [(0, 0)] * (a.ndim - 1))

  return jax.tree.map(pad, tree)


def _slice(tree, start, size):
  return jax.tree.map(lambda a: jax.lax.dynamic_slice_in_dim(a, start, size, 0), tree)


def _add_at(tree, update, start):
  return jax.tree.map(
    lambda a, u: jax.lax.dynamic_update_slice_in_dim(
      a, jax.lax.dynamic_slice_in_dim(a, start, u.shape[0], 0) + u, start, 0
    ),
    tree,
    update,
  )


def split_float(tree):
  """(float leaves, rebuild(float leaves) -> tree): what can be differentiated."""
  leaves, treedef = jax.tree.flatten(tree)
  is_float = [_is_float(leaf) for leaf in leaves]

  def rebuild(floats):
    it = iter(floats)
    return jax.tree.unflatten(
      treedef, [next(it) if f else leaf for leaf, f in zip(leaves, is_float)]
    )

  return [leaf for leaf, f in zip(leaves, is_float) if f], rebuild


def float_cotangent(tree, float_grads):
  """The cotangent of `tree`: `float_grads` at float leaves, None (zero) at the others."""
  leaves, treedef = jax.tree.flatten(tree)
  it = iter(float_grads)
  return jax.tree.unflatten(
    treedef, [next(it).astype(leaf.dtype) if _is_float(leaf) else None for leaf in leaves]
  )


def tree_add(a, b):
  return jax.tree.map(lambda u, v: u + v.astype(u.dtype), a, b)


# One pass around the ring.
#
# What moves is split in two so that every transfer can run while tiles are computed:
# * a y block's inputs (y, its side data, and in the backward pass its statistics and their
#   cotangents) are read-only; each hop sends them on before its own tiles use them;
# * what a y block collects from the tiles (column statistics, dy, dcol) follows its block one
#   hop behind: each hop collects into a fresh accumulator, while the running total from the
#   previous device is in flight, and adds the two once both are there.
# The block's own tiles are computed in two halves, the first while its inputs leave and the
# second while the other devices' totals for it come home. On XLA:TPU every collective-permute
# of the pass then has tile compute between its start and its done (tests/losses/
# test_ring_tpu.py); memory stays O(b * d + block_size^2): two visiting blocks (the one in use
# and the one arriving) and three collecting accumulators instead of one.


def run_pass(plan, x, y, params, row, col, *, stats=None, cts=None, want_stats):
  """Visits every (local row tile, column tile) pair of the global batch once.

  With ``want_stats``, reduces ``tile_fn``'s values into per-row and per-column statistics (a
  top-k reduction into ``[b, k]`` values and ``name + "_ids"``, their int32 ids).
  With ``cts`` (cotangents of the statistics), also accumulates the gradients of the tile part of
  the loss; a two-pass loss passes its final ``stats`` too, for the log-sum-exp weights.

  Returns:
    (stats: {name: [b] or [b, k]} or None, grads: (dx, dy, dparams, drow_f, dcol_f) or None).
  """
  precision = (
    jax.default_matmul_precision(plan.precision)
    if plan.precision is not None
    else contextlib.nullcontext()
  )
  with precision:
    return _ring_pass_at_precision(
      plan, x, y, params, row, col, stats=stats, cts=cts, want_stats=want_stats
    )


def _ring_pass_at_precision(plan, x, y, params, row, col, *, stats, cts, want_stats):
  loss, axis, n_dev, bs = plan.loss, plan.axis_name, plan.n_dev, plan.block
  want_grads = cts is not None
  b = local_batch(x)
  n_tiles = -(-b // bs)
  padded = n_tiles * bs
  me = axis_index(axis)
  row_names = [n for n, k in loss.reductions.items() if k.startswith("row")]
  col_names = [n for n, k in loss.reductions.items() if k.startswith("col")]
  is_lse = {n: k.endswith("lse") for n, k in loss.reductions.items()}
  is_topk = {n: k.endswith("topk") for n, k in loss.reductions.items()}
  top_k = loss.top_k
  zeros = lambda shape: vary(jnp.zeros(shape, jnp.float32), axis)
  zeros_like = lambda tree: jax.tree.map(lambda a: zeros(a.shape), tree)
  params_f, rebuild_params = split_float(params)

  def new_acc(names):
    # A log-sum-exp accumulates as (running max, sum of exp(value - running max)); a top-k as
    # (values, ids), empty slots at (-inf, NO_ID).
    def one(n):
      if is_lse[n]:
        return zeros((padded,)) - jnp.inf, zeros((padded,))
      if is_topk[n]:
        no_ids = vary(jnp.full((padded, top_k), NO_ID, jnp.int32), axis)
        return zeros((padded, top_k)) - jnp.inf, no_ids
      return zeros((padded,))

    return {n: one(n) for n in names}

  local = dict(x=_pad(x, padded), row=_pad(row, padded))
  own = dict(y=_pad(y, padded), col=_pad(col, padded))  # this device's y block, as it travels
  if want_stats:
    local["acc"] = new_acc(row_names)
  if want_grads:
    local["lse"] = {n: _pad(stats[n], padded) for n in row_names if is_lse[n]}
    own["lse"] = {n: _pad(stats[n], padded) for n in col_names if is_lse[n]}
    local["cts"] = {n: _pad(cts[n], padded) for n in row_names}
    own["cts"] = {n: _pad(cts[n], padded) for n in col_names}
    local["ids"] = {n: _pad(stats[n + "_ids"], padded) for n in row_names if is_topk[n]}
    own["ids"] = {n: _pad(stats[n + "_ids"], padded) for n in col_names if is_topk[n]}
    local["dx"] = zeros_like(local["x"])
    local["drow"] = zeros_like(split_float(local["row"])[0])
    local["dparams"] = [zeros(()) for _ in params_f]

  def new_collect():
    """What a y block collects from the tiles it takes part in, all zero."""
    collect = {}
    if want_stats:
      collect["acc"] = new_acc(col_names)
    if want_grads:
      collect["dy"] = zeros_like(own["y"])
      collect["dcol"] = zeros_like(split_float(own["col"])[0])
    return collect

  def merge(a, c):
    """Two partial collections of one y block, from disjoint sets of rows, as one."""
    out = {}
    if want_stats:
      out["acc"] = {}
      for n in col_names:
        if is_lse[n]:
          out["acc"][n] = _lse_merge(a["acc"][n], c["acc"][n])
        elif is_topk[n]:
          out["acc"][n] = topk_merge(a["acc"][n], c["acc"][n], top_k)
        else:
          out["acc"][n] = a["acc"][n] + c["acc"][n]
    if want_grads:
      out["dy"], out["dcol"] = tree_add(a["dy"], c["dy"]), tree_add(a["dcol"], c["dcol"])
    return out

  def tile_step(rows, n_rows, cols, src, visit, local, collect):
    x_t = jax.tree.map(lambda a: a.astype(jnp.float32), _slice(local["x"], rows, n_rows))
    y_t = jax.tree.map(lambda a: a.astype(jnp.float32), _slice(visit["y"], cols, bs))
    row_t, col_t = _slice(local["row"], rows, n_rows), _slice(visit["col"], cols, bs)
    row_ids = me * b + rows + jnp.arange(n_rows, dtype=jnp.int32)
    col_ids = src * b + cols + jnp.arange(bs, dtype=jnp.int32)
    valid = None
    if padded != b:  # padding rows and columns take no part in any reduction
      valid = (rows + jnp.arange(n_rows) < b)[:, None] & (cols + jnp.arange(bs) < b)[None, :]
    row_tf, rebuild_row = split_float(row_t)
    col_tf, rebuild_col = split_float(col_t)

    def values_fn(x_t, y_t, prm_f, row_f, col_f):
      tile = Tile(
        x=x_t,
        y=y_t,
        params=rebuild_params(prm_f),
        row=rebuild_row(row_f),
        col=rebuild_col(col_f),
        row_ids=row_ids,
        col_ids=col_ids,
      )
      values = dict(loss.tile_fn(tile))
      if valid is not None:
        values = {
          n: jnp.where(
            valid.reshape(valid.shape + (1,) * (v.ndim - 2)),
            v,
            -jnp.inf if is_lse[n] or is_topk[n] else 0.0,
          )
          for n, v in values.items()
        }
      return values

    # Per reduction: where its inputs are, where its tile starts, its size and its broadcast.
    def side(n):
      if loss.reductions[n].startswith("row"):
        return local, local, rows, n_rows, 1, lambda a: a[:, None]
      return visit, collect, cols, bs, 0, lambda a: a[None, :]

    def topk_candidates(n, v):
      """A top-k value as [anchors, candidates], and the candidates' global ids (NO_ID for
      padding): the other side's ids, times r for [rows, cols, r] values."""
      along_rows = loss.reductions[n].startswith("row")
      r = v.shape[2] if v.ndim == 3 else 1
      other_ids, other_start, other = (col_ids, cols, bs) if along_rows else (row_ids, rows, n_rows)
      if top_k > b * n_dev * r:
        raise ValueError(
          f"top_k={top_k} is larger than the {b * n_dev * r} candidates of reduction {n!r}."
        )
      ids = other_ids[:, None] * r + jnp.arange(r, dtype=jnp.int32)
      ids = jnp.where((other_start + jnp.arange(other) < b)[:, None], ids, NO_ID).reshape(-1)
      v = v if along_rows else jnp.swapaxes(v, 0, 1)
      return v.reshape(v.shape[0], -1), ids, other_ids[0] * r

    if not want_grads:
      values = values_fn(x_t, y_t, params_f, row_tf, col_tf)
    else:
      values, tile_vjp = jax.vjp(values_fn, x_t, y_t, params_f, row_tf, col_tf)
      weights = {}
      for n, v in values.items():
        inputs, _, start, size, _, expand = side(n)
        if is_topk[n]:  # each selected value's cotangent lands on the entry with its id
          ct = jax.lax.dynamic_slice_in_dim(inputs["cts"][n], start, size)
          ids = jax.lax.dynamic_slice_in_dim(inputs["ids"][n], start, size)
          along_rows = loss.reductions[n].startswith("row")
          weights[n] = topk_cotangent(v, ct, ids, topk_candidates(n, v)[2], along_rows)
          continue
        ct = expand(jax.lax.dynamic_slice_in_dim(inputs["cts"][n], start, size))
        if n in inputs["lse"]:  # d lse_i / d v_ij = softmax weight exp(v_ij - lse_i)
          lse = expand(jax.lax.dynamic_slice_in_dim(inputs["lse"][n], start, size))
          weights[n] = ct * jnp.exp(v - jnp.where(jnp.isfinite(lse), lse, 0.0))
        else:
          weights[n] = jnp.broadcast_to(ct, v.shape)
      dx_t, dy_t, dprm, drow_t, dcol_t = tile_vjp(weights)
      local["dx"] = _add_at(local["dx"], dx_t, rows)
      local["drow"] = _add_at(local["drow"], drow_t, rows)
      local["dparams"] = [a + g for a, g in zip(local["dparams"], dprm)]
      collect["dy"] = _add_at(collect["dy"], dy_t, cols)
      collect["dcol"] = _add_at(collect["dcol"], dcol_t, cols)

    if want_stats:
      for n, v in values.items():
        _, into, start, size, reduce_axis, _ = side(n)
        acc = into["acc"][n]
        if is_lse[n]:
          acc = _lse_update(acc, v, reduce_axis, start, size)
        elif is_topk[n]:
          flat, ids, _ = topk_candidates(n, v)
          acc = topk_update(acc, flat, ids, start, size, top_k)
        else:
          acc = _add_at(acc, jnp.sum(v, reduce_axis), start)
        into["acc"] = {**into["acc"], n: acc}
    return local, collect

  def sweep(src, visit, local, collect, first_row, n_rows, row_tiles):
    """Every tile of rows [first_row, first_row + n_rows * row_tiles) against block `visit`."""

    def over_cols(c, carry):
      return jax.lax.fori_loop(
        0,
        row_tiles,
        lambda r, carry: tile_step(first_row + r * n_rows, n_rows, c * bs, src, visit, *carry),
        carry,
      )

    return jax.lax.fori_loop(0, n_tiles, over_cols, (local, collect))

  if n_dev == 1:
    local, collected = sweep(me, own, local, new_collect(), 0, bs, n_tiles)
  else:
    perm = [(i, (i + 1) % n_dev) for i in range(n_dev)]
    send = lambda tree: jax.tree.map(lambda a: jax.lax.ppermute(a, axis, perm), tree)
    # The own block's rows in two halves: whole row tiles, or half a tile when there is one.
    if n_tiles > 1:
      halves = [(0, bs, n_tiles // 2), (n_tiles // 2 * bs, bs, n_tiles - n_tiles // 2)]
    else:
      halves = [(0, -(-b // 2), 1), (-(-b // 2), b // 2, 1)]

    def hop(k, carry):
      # Both sends read only the carry, not this hop's tiles: XLA starts them before the
      # sweep and waits for them after it.
      local, visit, passing = carry
      arriving_visit, arriving = send(visit), send(passing)
      local, collected = sweep((me - k) % n_dev, visit, local, new_collect(), 0, bs, n_tiles)
      return local, arriving_visit, merge(arriving, collected)

    visit = send(own)
    local, home = sweep(me, own, local, new_collect(), *halves[0])
    # At hop k the block of device me - k is here, and the total collected for block me - k + 1
    # by devices me - k + 2 ... me leaves for device me + 1.
    local, back, passing = jax.lax.fori_loop(1, n_dev, hop, (local, visit, new_collect()))
    arriving = send(passing)  # the other devices' total for the own block
    if halves[1][1]:
      # `back` is the own block home from its trip around the ring. Its tiles read it rather
      # than `own`, so XLA cannot compute them before the loop: they overlap the last transfer.
      local, home = sweep(me, back, local, home, *halves[1])
    collected = merge(home, arriving)

  unpad = lambda tree: jax.tree.map(lambda a: a[:b], tree)
  out_stats = None
  if want_stats:
    out_stats = {}
    for accs, names in ((local["acc"], row_names), (collected["acc"], col_names)):
      for n in names:
        acc = accs[n]
        if is_lse[n]:
          m, s = acc
          acc = jnp.where(s > 0, jnp.where(jnp.isfinite(m), m, 0.0) + jnp.log(s), -jnp.inf)
        elif is_topk[n]:
          acc, out_stats[n + "_ids"] = acc[0], acc[1][:b]
        out_stats[n] = acc[:b]
  grads = None
  if want_grads:
    grads = (
      unpad(local["dx"]),
      unpad(collected["dy"]),
      rebuild_params(local["dparams"]),
      unpad(local["drow"]),
      unpad(collected["dcol"]),
    )
  return out_stats, grads


def local_batch(tree) -> int:
  return jax.tree.leaves(tree)[0].shape[0]


def _lse_update(acc, v, axis, start, size):
  m, s = acc
  m_t = jax.lax.dynamic_slice_in_dim(m, start, size)
  s_t = jax.lax.dynamic_slice_in_dim(s, start, size)
  new_m = jnp.maximum(m_t, jnp.max(v, axis=axis))
  shift = jnp.where(jnp.isfinite(new_m), new_m, 0.0)
  expand = (lambda a: a[:, None]) if axis == 1 else (lambda a: a[None, :])
  new_s = s_t * jnp.exp(m_t - shift) + jnp.sum(jnp.exp(v - expand(shift)), axis=axis)
  return (
    jax.lax.dynamic_update_slice_in_dim(m, new_m, start, 0),
    jax.lax.dynamic_update_slice_in_dim(s, new_s, start, 0),
  )


def _lse_merge(a, c):
  """Two (running max, sum of exp(value - max)) accumulators of disjoint values, as one."""
  (m_a, s_a), (m_c, s_c) = a, c
  m = jnp.maximum(m_a, m_c)
  shift = jnp.where(jnp.isfinite(m), m, 0.0)
  return m, s_a * jnp.exp(m_a - shift) + s_c * jnp.exp(m_c - shift)
