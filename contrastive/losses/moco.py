"""MoCo: InfoNCE against a queue of past keys from a momentum encoder, with explicit state.

The loss is a pure function; the state it needs is the caller's. A trainer using ``moco`` carries

* ``queue``: ``[queue_size, dim]`` past keys, sharded over the mesh along its first axis
  (``NamedSharding(mesh, P("data"))``: each device holds ``queue_size / n_devices`` rows, so
  ``queue_size`` is a multiple of the axis size), from :func:`init_queue`;
* ``queue_ptr``: an int32 scalar, replicated, the row where the next keys go, from
  :func:`init_queue`;
* ``target_params``: the momentum (key) encoder's parameters, a copy of the online ones at start,
  never touched by the optimizer;

all three checkpointed with the train state. At each step, in one jitted function:

1. ``k = stop_gradient(encoder(target_params, view2))`` and ``q = encoder(online_params, view1)``;
2. ``loss = moco_loss(q, k, queue, scale)`` (``parallel.shard_loss`` on a mesh, or the registry's
   ``moco`` objective with ``side={"queue": queue}``), and the gradient step on the online
   parameters only;
3. ``queue, queue_ptr = update_queue(queue, k, queue_ptr)`` with the step's global keys, after
   the loss (the current keys are not negatives of their own step);
4. ``target_params = ema_update(online_params, target_params, momentum)``.

The trainer does this for the registry's ``moco`` (``contrastive.train.momentum``): with the two
towers of a model, in both directions, each modality's keys in a queue of their own.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from contrastive.losses import _checks
from contrastive.losses._modalities import masked_logsumexp
from contrastive.losses.ring import DEFAULT_BLOCK_SIZE
from contrastive.losses.ring import ReducedBlock
from contrastive.losses.ring import Tile
from contrastive.losses.ring import TileLoss
from contrastive.losses.ring import axis_size
from contrastive.losses.ring import ring_loss
from contrastive.losses.ring_pass import vary


def moco_loss(
  q: jax.typing.ArrayLike,
  k: jax.typing.ArrayLike,
  queue: jax.typing.ArrayLike,
  scale: jax.typing.ArrayLike,
  *,
  batch_negatives: bool = False,
  axis_name: str | tuple[str, ...] | None = None,
  block_size: int | None = None,
) -> jax.Array:
  r"""InfoNCE of each query against its key and a queue of negative keys (MoCo).

  With queries :math:`q_i`, their keys :math:`k_i` (from the momentum encoder) and the queue
  :math:`\{n_1, \dots, n_K\}`:

  .. math::
    L = \frac{1}{B} \sum_i -\log \frac{e^{t\, q_i \cdot k_i}}
        {e^{t\, q_i \cdot k_i} + \sum_{r=1}^{K} e^{t\, q_i \cdot n_r}}

  MoCo's loss (He et al., eq. 1; v1: :math:`t = 1/0.07`, :math:`K = 65536`): the current batch's
  other keys are *not* negatives. With ``batch_negatives=True`` they are, as in MoCo v3 and in
  ALBEF's queues (which hold the current keys too): the positive term in the denominator becomes
  :math:`\sum_j e^{t\, q_i \cdot k_j}` over the global batch, so an empty queue gives the
  one-direction InfoNCE of ``q`` and ``k``, and the mean of ``moco_loss(q, k)`` and
  ``moco_loss(k, q)`` with empty queues is ``softmax_loss(q, k)``.

  The loss is differentiable in every argument (``q``, ``k``, ``queue``, ``scale``); MoCo trains
  only the query encoder, so pass ``jax.lax.stop_gradient(k)``, and the queue, a buffer filled by
  :func:`update_queue`, holds no gradient. The state (queue, pointer, momentum parameters) is the
  caller's: see the module docstring, :func:`init_queue`, :func:`update_queue` and
  :func:`ema_update`.

  Runs on the ring: the queue is sharded over ``axis_name`` (``[queue_size / n_devices, dim]``
  per device) and its blocks travel the ring like ``y`` (with the keys when
  ``batch_negatives``). The local queue block is folded to ``[b, r, dim]`` (``r`` =
  ``ceil(queue_local / b)``, padding masked) so that it travels beside the ``b`` keys; tiles of
  ``block x block x r`` similarities are reduced over ``r`` in the tile, with ``block`` shrunk so
  that a tile holds at most ``block_size^2`` of them. Memory per device
  :math:`O((b + K/N)\, d + \text{block\_size}^2)`.

  Args:
    q: [batch, dim] queries from the online encoder (local shard under ``axis_name``).
    k: [batch, dim] keys from the momentum encoder; ``k[i]`` is the positive of ``q[i]``.
    queue: [queue_size, dim] negative keys (the local shard under ``axis_name``); may be empty.
    scale: scalar logit scale :math:`t = 1/\tau` (already exponentiated).
    batch_negatives: also contrast against the other keys of the global batch.
    axis_name: the ``jax.shard_map`` axis the batch and the queue are split over; None for one
      device.
    block_size: at most ``block_size^2`` similarities per tile; None picks 1024.

  Returns:
    float32 scalar, identical on every device of ``axis_name``.

  Example:
    >>> queue, ptr = init_queue(jax.random.key(0), 8, 4)  # 8 random unit keys, pointer 0
    >>> q = k = jnp.eye(4)  # four queries and their keys
    >>> loss = moco_loss(q, jax.lax.stop_gradient(k), queue, 1 / 0.07)
    >>> queue, ptr = update_queue(queue, jax.lax.stop_gradient(k), ptr)
    >>> print(int(ptr), bool(jnp.all(queue[:4] == k)))  # the keys took the queue's first rows
    4 True
    >>> loss = moco_loss(q, k, -k, 2.0)  # one negative each at -1, three at 0
    >>> print(f"{loss:.3f}")  # log(1 + e^-4 + 3 e^-2)
    0.354

  References:
    He, Fan, Wu, Xie, Girshick. Momentum Contrast for Unsupervised Visual Representation
    Learning. CVPR 2020.
  """
  fn = "moco_loss"
  _checks.check_embeddings(fn, q=q, k=k)
  _checks.check_scalars(fn, scale=scale)
  _checks.check_block_size(fn, block_size)
  _check_queue(fn, queue, np.shape(q)[1])
  b, dim = np.shape(q)
  local = np.shape(queue)[0]
  fold = max(1, -(-local // b))  # queue rows per key row
  queue = jnp.pad(jnp.asarray(queue), [(0, fold * b - local), (0, 0)]).reshape(b, fold, dim)
  valid = vary(jnp.arange(fold * b).reshape(b, fold) < local, axis_name)
  # A tile is [block, block, fold]: keep it within block_size^2 similarities.
  side = DEFAULT_BLOCK_SIZE if block_size is None else block_size
  block = max(1, math.isqrt(side * side // fold))
  travel = {"queue": queue, "k": k} if batch_negatives else {"queue": queue}
  return ring_loss(
    _moco_tiles(bool(batch_negatives)),
    q,
    travel,
    {"scale": scale},
    row={"k": k},
    col={"valid": valid},
    axis_name=axis_name,
    block_size=block,
  )


def _check_queue(fn: str, queue, dim: int) -> None:
  shape, dtype = np.shape(queue), jnp.result_type(queue)
  if len(shape) != 2:
    raise ValueError(f"{fn}: `queue` must be [queue_size, dim], got shape {shape}.")
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(f"{fn}: `queue` must be a floating array, got dtype {dtype}.")
  if shape[1] != dim:
    raise ValueError(f"{fn}: `queue` rows must have the embedding dim {dim}, got shape {shape}.")


@functools.cache
def _moco_tiles(batch_negatives: bool) -> TileLoss:
  def tile_fn(tile: Tile):
    scale = tile.params["scale"]
    queue_logits = scale * jnp.einsum(
      "id,jrd->ijr", tile.x, tile.y["queue"], preferred_element_type=jnp.float32
    )
    values = {"lse_queue": masked_logsumexp(queue_logits, tile.col["valid"][None], axis=-1)}
    if batch_negatives:
      values["lse_keys"] = scale * jnp.dot(
        tile.x, tile.y["k"].T, preferred_element_type=jnp.float32
      )
    return values

  def finalize_fn(home: ReducedBlock):
    positive = home.params["scale"] * jnp.sum(
      home.x.astype(jnp.float32) * home.row["k"].astype(jnp.float32), axis=-1
    )
    keys = home.stats["lse_keys"] if batch_negatives else positive
    return jnp.sum(jnp.logaddexp(keys, home.stats["lse_queue"]) - positive) / home.global_batch

  reductions = {"lse_queue": "row_lse"}
  if batch_negatives:
    reductions["lse_keys"] = "row_lse"
  return TileLoss(tile_fn=tile_fn, reductions=reductions, finalize_fn=finalize_fn)


# ----------------------------------------------------------------------------------------------
# The state: queue and momentum encoder.


def init_queue(
  key: jax.Array,
  queue_size: int,
  dim: int,
  *,
  dtype=jnp.float32,
  sharding: jax.sharding.Sharding | None = None,
) -> tuple[jax.Array, jax.Array]:
  """A queue of random unit keys, as MoCo starts it, and its pointer.

  Args:
    key: a PRNG key.
    queue_size: the number of keys :math:`K` (a multiple of the mesh axis size, to shard it).
    dim: the embedding dim.
    dtype: the queue's dtype.
    sharding: where to put the queue, e.g. ``NamedSharding(mesh, P("data"))``; None leaves it
      on the default device.

  Returns:
    ``(queue [queue_size, dim], ptr)``, ``ptr`` an int32 scalar 0.
  """
  is_int = lambda v: isinstance(v, (int, np.integer)) and not isinstance(v, bool)
  if not is_int(queue_size) or queue_size < 0:
    raise ValueError(f"init_queue: queue_size must be a non-negative int, got {queue_size!r}.")
  if not is_int(dim) or dim < 1:
    raise ValueError(f"init_queue: dim must be a positive int, got {dim!r}.")
  queue = jax.random.normal(key, (queue_size, dim), jnp.float32)
  queue = (queue / jnp.linalg.norm(queue, axis=-1, keepdims=True)).astype(dtype)
  if sharding is not None:
    queue = jax.device_put(queue, sharding)
  return queue, jnp.zeros((), jnp.int32)


def update_queue(
  queue: jax.Array,
  keys: jax.typing.ArrayLike,
  ptr: jax.typing.ArrayLike,
  *,
  axis_name: str | tuple[str, ...] | None = None,
) -> tuple[jax.Array, jax.Array]:
  """Enqueues ``keys`` at ``ptr``, overwriting the oldest, wrapping around the end (a ring buffer).

  Row ``r`` of ``keys`` goes to row ``(ptr + r) mod queue_size``; if there are more keys than
  rows, only the last ``queue_size`` are kept. The keys carry no gradient into the queue.

  Args:
    queue: [queue_size, dim]: the whole queue (``axis_name=None``, also for a global array
      sharded over a mesh under ``jax.jit``), or the local shard inside ``jax.shard_map``.
    keys: [batch, dim] the step's keys: the whole batch, or the local shard with ``axis_name``
      (then all-gathered, in device order, as MoCo's ``concat_all_gather``).
    ptr: int scalar, the queue row where the oldest keys are.
    axis_name: the ``jax.shard_map`` axis queue and keys are split over, or None.

  Returns:
    ``(queue, ptr)``: the new queue (same shape, sharding and dtype) and ``(ptr + batch) mod
    queue_size``.
  """
  fn = "update_queue"
  if np.ndim(keys) != 2:
    raise ValueError(f"{fn}: `keys` must be [batch, dim], got shape {np.shape(keys)}.")
  _check_queue(fn, queue, np.shape(keys)[1])
  if np.ndim(ptr) != 0:
    raise ValueError(f"{fn}: `ptr` must be a scalar, got shape {np.shape(ptr)}.")
  keys = jax.lax.stop_gradient(jnp.asarray(keys))
  if axis_name is not None:
    keys = jax.lax.all_gather(keys, axis_name, tiled=True)
  n_dev = axis_size(axis_name)
  local = queue.shape[0]
  size = local * n_dev
  ptr = jnp.asarray(ptr, jnp.int32)
  if size == 0:
    return queue, ptr
  n = keys.shape[0]
  kept = min(n, size)
  rows = (ptr + (n - kept) + jnp.arange(kept, dtype=jnp.int32)) % size
  if axis_name is not None:  # this device's rows; the others' fall out of range and are dropped
    rows = rows - jax.lax.axis_index(axis_name) * local
    rows = jnp.where((rows >= 0) & (rows < local), rows, local)
  queue = queue.at[rows].set(keys[n - kept :].astype(queue.dtype), mode="drop")
  return queue, (ptr + n) % size


def ema_update(online_params, target_params, momentum: jax.typing.ArrayLike):
  r"""The momentum encoder's update :math:`\theta_k \leftarrow m\, \theta_k + (1 - m)\, \theta_q`.

  Args:
    online_params: the query encoder's parameters :math:`\theta_q` (a pytree).
    target_params: the key encoder's parameters :math:`\theta_k`, the same structure.
    momentum: :math:`m` in [0, 1] (MoCo: 0.999; ALBEF: 0.995), a scalar.

  Returns:
    the new target parameters, in the target's dtypes; no gradient flows through them.
  """
  if np.ndim(momentum) != 0:
    raise ValueError(f"ema_update: momentum must be a scalar, got shape {np.shape(momentum)}.")
  if isinstance(momentum, (int, float)) and not 0.0 <= momentum <= 1.0:
    raise ValueError(f"ema_update: momentum must be in [0, 1], got {momentum!r}.")
  online_def, target_def = jax.tree.structure(online_params), jax.tree.structure(target_params)
  if online_def != target_def:
    raise ValueError(
      f"ema_update: online and target parameters differ in structure: {online_def} vs {target_def}."
    )

  def update(online, target):
    online = jax.lax.stop_gradient(online)
    mixed = momentum * target.astype(jnp.float32) + (1 - momentum) * online.astype(jnp.float32)
    return mixed.astype(target.dtype)

  return jax.tree.map(update, online_params, jax.lax.stop_gradient(target_params))
