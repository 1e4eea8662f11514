r"""The momentum (key) encoder and the queues of its keys, for `moco`: state, layout, update.

An objective registered with `momentum_queue=True` (`moco`) contrasts the online model's queries
with keys from a momentum encoder and with a queue of earlier keys (He et al., 2020). Here the
key encoder is the whole tower model with parameters :math:`\theta_k`, an exponential moving
average of the online parameters :math:`\theta_q`. With the two modalities `a`, `b` of the model
the loss runs in both directions, each modality's keys in a queue of their own (cross-modal
MoCo, the queues of ALBEF's contrastive term, without its soft targets):

.. math::
  L = \tfrac12 \big[ L_{moco}(q^a, k^b, Q^b) + L_{moco}(q^b, k^a, Q^a) \big]

with :math:`q^m` the online embeddings of modality `m` (trained), :math:`k^m =
sg(f_{\theta_k}(x^m))` the key encoder's (no gradient, `train=False`: no dropout) and :math:`Q^m`
`[queue_size, embed_dim]` that modality's queue. After the optimizer has updated
:math:`\theta_q`, the step

1. enqueues the step's keys :math:`k^m` in :math:`Q^m`, overwriting the oldest
   (`losses.update_queue`: a ring buffer with one pointer, the same for every queue);
2. moves the key encoder, :math:`\theta_k \leftarrow m\,\theta_k + (1 - m)\,\theta_q` with the
   new :math:`\theta_q` (`losses.ema_update`). MoCo applies it before computing the next
   step's keys: the same sequence of key encoders.

`MomentumState` is the train state's `loss_state`, so it is checkpointed and restored with the
rest and a resumed run stays exact. The key encoder's parameters are laid out like the online
ones; each queue is split over the batch axes like the batch (`[queue_size / N, embed_dim]` per
device), and the loss reaches the other devices' queue rows through the ring. Memory: a second
copy of the parameters, plus `2 * queue_size * embed_dim` float32 over the mesh.

Reference: He, Fan, Wu, Xie, Girshick, Momentum Contrast for Unsupervised Visual Representation
Learning, CVPR 2020; Li et al., Align before Fuse (ALBEF), NeurIPS 2021.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding

from contrastive import losses


@flax.struct.dataclass
class MomentumState:
  """The state of a momentum-queue loss.

  Attributes:
    params: the key encoder's parameters, an EMA of the online ones (same structure).
    queues: `{modality: [queue_size, embed_dim] float32}`, past keys of that modality.
    ptr: int32 scalar, the queue row the next keys go to (the same for every queue).
  """

  params: Any
  queues: dict[str, jax.Array]
  ptr: jax.Array


def init_state(
  params: Any, modalities: Sequence[str], *, queue_size: int, embed_dim: int, key: jax.Array
) -> MomentumState:
  """The key encoder as a copy of `params`, and queues of random unit keys (as MoCo starts)."""
  queues, ptr = {}, None
  for i, m in enumerate(modalities):
    queues[m], ptr = losses.init_queue(jax.random.fold_in(key, i), queue_size, embed_dim)
  return MomentumState(params=jax.tree.map(jnp.copy, params), queues=queues, ptr=ptr)


def state_shardings(
  param_shardings: Any, modalities: Sequence[str], queue_sharding: NamedSharding
) -> MomentumState:
  """Where each array of the state lives: parameters like the online ones, queues like the
  batch (`queue_sharding`), the pointer replicated."""
  replicated = NamedSharding(queue_sharding.mesh, jax.sharding.PartitionSpec())
  return MomentumState(
    params=param_shardings, queues={m: queue_sharding for m in modalities}, ptr=replicated
  )


def keys(
  model: nn.Module, state: MomentumState, inputs: Mapping[str, jax.Array]
) -> dict[str, jax.Array]:
  """`{modality: [batch, embed_dim]}`: the key encoder's embeddings, with no gradient."""
  emb, _ = model.apply({"params": state.params}, dict(inputs), train=False)
  return {m: jax.lax.stop_gradient(emb[m]) for m in inputs}


def directions(modalities: Sequence[str]) -> tuple[tuple[str, str], ...]:
  """`(query modality, key modality)` pairs: both directions between the two modalities."""
  a, b = modalities
  return (a, b), (b, a)


def update(
  state: MomentumState, params: Any, step_keys: Mapping[str, jax.Array], momentum: float
) -> MomentumState:
  """After the optimizer step: enqueue `step_keys` (`[batch, embed_dim]` per modality, global
  arrays) and move the key encoder towards the new online `params`."""
  queues, ptr = {}, state.ptr
  for m, queue in state.queues.items():
    queues[m], ptr = losses.update_queue(queue, step_keys[m], state.ptr)
  return MomentumState(
    params=losses.ema_update(params, state.params, momentum), queues=queues, ptr=ptr
  )
