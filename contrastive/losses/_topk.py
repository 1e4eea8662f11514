"""The ring engine's top-k reductions (`row_topk`, `col_topk` of a `TileLoss`): per anchor, a
(values, ids) list of the k best candidates seen so far, merged tile by tile and hop by hop.

Lists are kept in (value descending, id ascending) order, a total order on distinct ids, so a
merge is associative and commutative and the result does not depend on the tiling or the ring.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def topk_merge(a, c, k):
  """Two [n, *] (values, ids) candidate lists of disjoint ids, as the k best of both."""
  values = jnp.concatenate([a[0], c[0]], axis=1)
  ids = jnp.concatenate([a[1], c[1]], axis=1)
  neg, ids = jax.lax.sort((-values, ids), dimension=1, num_keys=2)
  return -neg[:, :k], ids[:, :k]


def topk_update(acc, flat, ids, start, size, k):
  """Merges a tile's [size, candidates] values (ids [candidates], ascending) into rows
  [start, start + size) of the (values, ids) accumulator."""
  if k < flat.shape[1]:  # lax.top_k breaks ties by lower index, here the lower id
    flat, index = jax.lax.top_k(flat, k)
    ids = ids[index]
  else:
    ids = jnp.broadcast_to(ids, flat.shape)
  old = tuple(jax.lax.dynamic_slice_in_dim(a, start, size) for a in acc)
  new = topk_merge(old, (flat, ids), k)
  return tuple(jax.lax.dynamic_update_slice_in_dim(a, u, start, 0) for a, u in zip(acc, new))


def topk_cotangent(v, ct, ids, first_id, along_rows):
  """dL/dv for a tile value v: ct[i, m] (of the m-th kept value of anchor i) at the candidate of
  id ids[i, m], if it is in this tile (its candidates' ids start at first_id, contiguously)."""
  t = v if along_rows else jnp.swapaxes(v, 0, 1)
  n, count = t.shape[0], t[0].size
  pos = ids - first_id
  pos = jnp.where((pos >= 0) & (pos < count), pos, count)  # elsewhere: dropped
  w = jnp.zeros((n, count), jnp.float32).at[jnp.arange(n)[:, None], pos].add(ct, mode="drop")
  w = w.reshape(t.shape).astype(v.dtype)
  return w if along_rows else jnp.swapaxes(w, 0, 1)
