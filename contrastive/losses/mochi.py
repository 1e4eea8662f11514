"""MoCHi: MoCo's queue loss with synthetic hard negatives mixed from each query's hardest ones.

The state (queue, pointer, momentum encoder) is MoCo's: see `contrastive.losses.moco`. The
trainer (`contrastive.train.momentum`) runs ``mochi`` as it runs ``moco`` and also hands the loss
a PRNG key (``side["rng"]``), for the mixing.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from contrastive.losses import _checks
from contrastive.losses._modalities import masked_logsumexp
from contrastive.losses.moco import _check_queue
from contrastive.losses.ring import DEFAULT_BLOCK_SIZE
from contrastive.losses.ring import ReducedBlock
from contrastive.losses.ring import Tile
from contrastive.losses.ring import TileLoss
from contrastive.losses.ring import axis_size
from contrastive.losses.ring import ring_loss
from contrastive.losses.ring_pass import axis_index
from contrastive.losses.ring_pass import vary


def mochi_loss(
  q: jax.typing.ArrayLike,
  k: jax.typing.ArrayLike,
  queue: jax.typing.ArrayLike,
  scale: jax.typing.ArrayLike,
  rng: jax.Array,
  *,
  num_hard: int = 16,
  num_mix: int = 16,
  num_query_mix: int = 8,
  axis_name: str | tuple[str, ...] | None = None,
  block_size: int | None = None,
) -> jax.Array:
  r"""MoCo's InfoNCE with extra synthetic negatives mixed from each query's hardest (MoCHi).

  For query :math:`q_i`, its key :math:`k_i` and the queue :math:`\{n_1, \dots, n_K\}`, let
  :math:`\tilde n_1, \dots, \tilde n_N` be the :math:`N` queue entries of the largest
  :math:`q_i \cdot n`. MoCHi adds :math:`s` mixes of two of them and :math:`s'` mixes of one of
  them with the query (pairs drawn uniformly, :math:`\alpha \sim U(0, 1)`,
  :math:`\beta \sim U(0, 1/2)`):

  .. math::
    h_m = \frac{\alpha_m \tilde n_a + (1 - \alpha_m) \tilde n_b}{\|\cdot\|}, \qquad
    h'_m = \frac{\beta_m q_i + (1 - \beta_m) \tilde n_c}{\|\cdot\|},

    L = \frac{1}{B} \sum_i -\log \frac{e^{t\, q_i \cdot k_i}}{e^{t\, q_i \cdot k_i}
        + \sum_r e^{t\, q_i \cdot n_r} + \sum_{m=1}^{s} e^{t\, q_i \cdot h_m}
        + \sum_{m=1}^{s'} e^{t\, q_i \cdot h'_m}}

  As MoCo v1, the batch's other keys are not negatives; the hardest are taken from the queue only.
  The synthetic points carry no gradient (the paper's code detaches them, the query inside
  :math:`h'` too): the gradient reaches ``q`` through :math:`q_i \cdot h`, ``k`` through the
  positive, ``queue`` through its logits. Paper defaults (ImageNet, :math:`K = 65536`):
  :math:`N = 1024`, :math:`s = 1024`, :math:`s' = 512` at most; ``configs/loss_zoo.py:loss=mochi``
  scales them to its queue of 4096 (64, 64, 32); the defaults here suit a queue of a few hundred.

  Runs on the ring as :func:`contrastive.losses.moco_loss`, with one more reduction on the same
  queue logits: a ``row_topk`` keeping the :math:`N` hardest ids per query. The N negatives are
  then fetched from the devices holding them (a ring of the local queue blocks), and the
  :math:`s + s'` synthetic logits are per query. Memory per device
  :math:`O((b + K/N_{dev})\, d + b N d + \text{block\_size}^2)`. The draws (pairs,
  :math:`\alpha`, :math:`\beta`) are made for the global batch from ``rng`` on every device, so
  a given ``rng`` gives the same loss on any mesh.

  Args:
    q: [batch, dim] queries from the online encoder (local shard under ``axis_name``).
    k: [batch, dim] keys from the momentum encoder; ``k[i]`` is the positive of ``q[i]``.
    queue: [queue_size, dim] negative keys (the local shard under ``axis_name``).
    scale: scalar logit scale :math:`t = 1/\tau`.
    rng: a PRNG key for the mixing, the same on every device.
    num_hard: :math:`N`, the hardest negatives mixed, at most the queue size.
    num_mix: :math:`s`, the negative-negative mixes per query.
    num_query_mix: :math:`s'`, the query-negative mixes per query.
    axis_name: the ``jax.shard_map`` axis the batch and the queue are split over; None for one
      device.
    block_size: at most ``block_size^2`` similarities per tile; None picks 1024.

  Returns:
    float32 scalar, identical on every device of ``axis_name``.

  Example:
    >>> q, k = jnp.eye(4), jnp.eye(4)
    >>> queue = -jnp.eye(4)  # one negative at -1 for each query, three at 0
    >>> key = jax.random.key(0)
    >>> moco = mochi_loss(q, k, queue, 2.0, key, num_hard=1, num_mix=0, num_query_mix=0)
    >>> print(f"{moco:.3f}")  # no mixes: MoCo's log(1 + e^-4 + 3 e^-2)
    0.354
    >>> print(bool(mochi_loss(q, k, queue, 2.0, key, num_hard=2, num_mix=4) > moco))
    True

  References:
    Kalantidis, Sariyildiz, Pion, Weinzaepfel, Larlus. Hard Negative Mixing for Contrastive
    Learning. NeurIPS 2020.
  """
  fn = "mochi_loss"
  _checks.check_embeddings(fn, q=q, k=k)
  _checks.check_scalars(fn, scale=scale)
  _checks.check_block_size(fn, block_size)
  _check_queue(fn, queue, np.shape(q)[1])
  b, dim = np.shape(q)
  n_dev = axis_size(axis_name)
  local = np.shape(queue)[0]
  for name, v in (("num_mix", num_mix), ("num_query_mix", num_query_mix)):
    if not isinstance(v, (int, np.integer)) or v < 0:
      raise ValueError(f"{fn}: {name} must be a non-negative int, got {v!r}.")
  if not isinstance(num_hard, (int, np.integer)) or not 1 <= num_hard <= local * n_dev:
    raise ValueError(
      f"{fn}: num_hard={num_hard!r} must be in [1, {local * n_dev}], the negatives in the queue."
    )
  if not (isinstance(rng, jax.Array) and jnp.issubdtype(rng.dtype, jax.dtypes.prng_key)):
    raise TypeError(f"{fn}: `rng` must be a PRNG key (jax.random.key), got {type(rng)}.")
  fold = max(1, -(-local // b))  # queue rows per key row, as moco_loss
  queue = jnp.pad(jnp.asarray(queue), [(0, fold * b - local), (0, 0)]).reshape(b, fold, dim)
  valid = vary(jnp.arange(fold * b).reshape(b, fold) < local, axis_name)
  side = DEFAULT_BLOCK_SIZE if block_size is None else block_size
  block = max(1, math.isqrt(side * side // fold))
  draws = _draws(rng, b * n_dev, int(num_hard), int(num_mix), int(num_query_mix))
  start = axis_index(axis_name) * b
  draws = {n: jax.lax.dynamic_slice_in_dim(v, start, b) for n, v in draws.items()}
  return ring_loss(
    _mochi_tiles(int(num_hard), axis_name, n_dev),
    q,
    {"queue": queue},
    {"scale": scale},
    row={"k": k, **draws},
    col={"valid": valid},
    axis_name=axis_name,
    block_size=block,
  )


def _draws(rng, batch: int, num_hard: int, num_mix: int, num_query_mix: int) -> dict:
  """The mixing's random numbers for the global batch (the loss and its reference draw the
  same): ``pairs`` [batch, s, 2] and ``partner`` [batch, s'] index the N hardest (hardest
  first), ``alpha`` [batch, s] ~ U(0, 1), ``beta`` [batch, s'] ~ U(0, 1/2)."""
  keys = jax.random.split(rng, 4)
  return {
    "pairs": jax.random.randint(keys[0], (batch, num_mix, 2), 0, num_hard, jnp.int32),
    "alpha": jax.random.uniform(keys[1], (batch, num_mix)),
    "partner": jax.random.randint(keys[2], (batch, num_query_mix), 0, num_hard, jnp.int32),
    "beta": 0.5 * jax.random.uniform(keys[3], (batch, num_query_mix)),
  }


def _mixes(q, hard, draws):
  """[b, s + s', d] the synthetic negatives of each query from its [b, N, d] hardest ones."""
  normalize = lambda h: h / jnp.linalg.norm(h, axis=-1, keepdims=True)
  pick = lambda idx: jnp.take_along_axis(hard, idx[..., None], axis=1)
  alpha, beta = draws["alpha"][..., None], draws["beta"][..., None]
  h = alpha * pick(draws["pairs"][..., 0]) + (1 - alpha) * pick(draws["pairs"][..., 1])
  h_q = beta * q[:, None, :] + (1 - beta) * pick(draws["partner"])
  return jax.lax.stop_gradient(normalize(jnp.concatenate([h, h_q], axis=1)))


def _fetch(blocks, ids, axis_name, n_dev):
  """[..., d] the rows ``ids`` (global, in the layout of the concatenated local blocks) of the
  [L, d] blocks sharded over ``axis_name``: each block visits every device once."""
  blocks = jax.lax.stop_gradient(blocks)
  size = blocks.shape[0]
  if axis_name is None:
    return blocks[ids]
  me = axis_index(axis_name)
  perm = [(i, (i + 1) % n_dev) for i in range(n_dev)]

  def hop(h, carry):
    out, block = carry
    rows = ids - ((me - h) % n_dev) * size
    mine = (rows >= 0) & (rows < size)
    out = out + jnp.where(mine[..., None], block[jnp.clip(rows, 0, size - 1)], 0.0)
    return out, jax.lax.ppermute(block, axis_name, perm)

  out = vary(jnp.zeros(ids.shape + blocks.shape[1:], blocks.dtype), axis_name)
  return jax.lax.fori_loop(0, n_dev, hop, (out, blocks))[0]


@functools.cache
def _mochi_tiles(num_hard: int, axis_name, n_dev: int) -> TileLoss:
  def tile_fn(tile: Tile):
    logits = tile.params["scale"] * jnp.einsum(
      "id,jrd->ijr", tile.x, tile.y["queue"], preferred_element_type=jnp.float32
    )
    keep = tile.col["valid"][None]
    return {
      "lse_queue": masked_logsumexp(logits, keep, axis=-1),
      "hard": jnp.where(keep, logits, -jnp.inf),
    }

  def finalize_fn(home: ReducedBlock):
    q = home.x.astype(jnp.float32)
    queue = home.y["queue"].astype(jnp.float32)
    # A "hard" id is (global key row) * fold + t: row l of this layout's blocks of b * fold.
    hard = _fetch(queue.reshape(-1, queue.shape[-1]), home.stats["hard_ids"], axis_name, n_dev)
    draws = {n: home.row[n] for n in ("pairs", "alpha", "partner", "beta")}
    scale = home.params["scale"]
    positive = scale * jnp.sum(q * home.row["k"].astype(jnp.float32), axis=-1)
    synthetic = scale * jnp.einsum("bd,bsd->bs", q, _mixes(q, hard, draws))
    negatives = jnp.logaddexp(home.stats["lse_queue"], jax.nn.logsumexp(synthetic, axis=1))
    return jnp.sum(jnp.logaddexp(positive, negatives) - positive) / home.global_batch

  return TileLoss(
    tile_fn=tile_fn,
    reductions={"lse_queue": "row_lse", "hard": "row_topk"},
    finalize_fn=finalize_fn,
    top_k=num_hard,
  )
