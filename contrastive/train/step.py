"""The jitted train step: embed, ring loss over the mesh's batch axes, update.

One function serves every recipe. The loss is an `Objective` from the registry
(`contrastive.losses.get`), called inside `jax.shard_map` over the batch axes (`data` and
`fsdp`), so negatives span the whole global batch while no device ever holds the `[B, B]`
similarity matrix.

Contrastive gradient accumulation (GradCache, Gao et al. 2021). With `accum_steps = k > 1` the
global batch is cut into `k` micro-batches and the step

1. embeds every micro-batch without keeping activations (a `lax.scan` of forward passes);
2. computes the loss over the *whole* batch from those embeddings with the ring, and its
   gradients with respect to the embeddings, the scale and the bias;
3. backpropagates each micro-batch's embedding gradient through the encoders (a second
   `lax.scan` of `jax.vjp`s, recomputing that micro-batch's forward pass) and sums.

Every example sees the negatives of the full batch, so the loss and gradients equal those of one
big batch (plain accumulation would not: each micro-batch would see fewer negatives); memory
holds one micro-batch's activations plus `[B, d]` embeddings, at the price of a second forward.

Micro-batch `m` is the `m`-th slice of every device's local rows, so splitting and re-joining
move no data between devices, and the re-joined embeddings are in the original batch order.

Reference: Gao et al., "Scaling Deep Contrastive Learning Batch Size under Memory Limited
Setup", 2021, https://arxiv.org/abs/2101.06983.

A momentum-queue objective (`moco`) takes its keys from a momentum encoder and its negatives
from queues, both carried in `TrainState.loss_state` (see `contrastive.train.momentum`): the same
step with another gradient function (`make_momentum_grad_fn`) and, after the optimizer's update,
`momentum.update`. It does not combine with GradCache.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import optax

from contrastive import losses
from contrastive import parallel
from contrastive.train import momentum as momentum_lib
from contrastive.train import optimizer as optimizer_lib
from contrastive.train.state import TrainState


@dataclasses.dataclass(frozen=True)
class SideInput:
  """Side data of the loss taken from the batch: as it is, or embedded by one of the towers.

  With `modality=None`, `batch[batch_key]` is passed to the objective as `side[side_key]` as it
  is (e.g. `meaning_id` `[batch]` as the `labels` of `supcon`). Otherwise `batch[batch_key]`,
  `[batch, k, ...]` inputs of modality `modality` (e.g. the tokenized hard-negative captions
  `[batch, 3, seq_len]`), is embedded by that tower into `[batch, k, embed_dim]` first; its
  gradient flows back into the tower like the main embeddings'.
  """

  side_key: str
  modality: str | None
  batch_key: str


@dataclasses.dataclass(frozen=True)
class StepConfig:
  """What the step needs besides the model, the optimizer and the mesh.

  Attributes:
    modalities: the model inputs, in the order the objective takes their embeddings.
    side_keys: batch keys passed to the objective as side data, as they are, under their names.
    side_inputs: side data from other batch keys, as it is or embedded first (e.g. hard-negative
      captions), see `SideInput`.
    loss_options: keyword options of the objective (e.g. `label_smoothing`).
    block_size: the ring's tile size (None: the loss picks one).
    accum_steps: GradCache micro-batches per step (1: a plain step).
    max_scale: clamp the `log_scale` parameter at `log(max_scale)` after each update.
    on_nonfinite: `"stop"` or `"skip"`; either way a step whose loss or gradient norm is not
      finite leaves params and optimizer state unchanged (`skipped` counts it); the loop stops
      on it in `"stop"` mode.
    seed: the run's seed; step `s` uses `fold_in(key(seed), s)` for dropout.
    momentum: for a momentum-queue objective (`moco`), the key encoder's EMA momentum `m`; the
      train state then carries a `momentum.MomentumState`. None: no momentum encoder. It does
      not combine with `accum_steps > 1` (the queues take one batch of keys per update): such a
      config is refused when it is made.
  """

  modalities: tuple[str, ...]
  side_keys: tuple[str, ...] = ()
  side_inputs: tuple[SideInput, ...] = ()
  loss_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  block_size: int | None = None
  accum_steps: int = 1
  max_scale: float | None = None
  on_nonfinite: Literal["stop", "skip"] = "stop"
  seed: int = 0
  momentum: float | None = None

  def __post_init__(self):
    if self.momentum is not None and self.accum_steps != 1:
      raise ValueError(
        f"A momentum-queue loss (loss.momentum={self.momentum}: a momentum encoder with queues) "
        "does not combine with GradCache accumulation: set optim.accum_steps=1, got "
        f"{self.accum_steps}."
      )


def make_loss_fn(objective: losses.Objective, mesh: Mesh, config: StepConfig):
  """`(embeddings list, scale, bias, side) -> scalar` on global batch-sharded arrays (the ring)."""
  sharded = parallel.shard_loss(objective, mesh, parallel.batch_axes(mesh))

  def loss_fn(embeddings: Sequence[jax.Array], scale, bias, side) -> jax.Array:
    return sharded(
      list(embeddings),
      scale,
      bias,
      dict(side),
      block_size=config.block_size,
      **dict(config.loss_options),
    )

  return loss_fn


def _micro_split(x: jax.Array, k: int, n: int, mesh: Mesh) -> jax.Array:
  """`[B, ...] -> [k, B/k, ...]`; micro-batch `m` is the `m`-th slice of each device's rows."""
  b = x.shape[0] // n
  rest = x.shape[1:]
  y = x.reshape(n, k, b // k, *rest).swapaxes(0, 1).reshape(k, x.shape[0] // k, *rest)
  spec = P(None, parallel.batch_axes(mesh))
  return jax.lax.with_sharding_constraint(y, NamedSharding(mesh, spec))


def _micro_join(y: jax.Array, n: int, mesh: Mesh) -> jax.Array:
  """The inverse of `_micro_split`: `[k, B/k, ...] -> [B, ...]` in the original order."""
  k, bk = y.shape[:2]
  rest = y.shape[2:]
  x = y.reshape(k, n, bk // n, *rest).swapaxes(0, 1).reshape(k * bk, *rest)
  return jax.lax.with_sharding_constraint(x, parallel.batch_sharding(mesh))


def make_grad_fn(
  model: nn.Module,
  objective: losses.Objective,
  mesh: Mesh,
  config: StepConfig,
  param_shardings: Any = None,
):
  """`(params, batch, rng) -> ((loss, (scale, bias)), grads)`, plain or GradCache.

  Exposed for tests: with `accum_steps = k` the result equals `accum_steps = 1` on the same
  batch (to float32 rounding).
  """
  loss_fn = make_loss_fn(objective, mesh, config)
  modalities = tuple(config.modalities)
  side_inputs = tuple(s for s in config.side_inputs if s.modality is not None)  # embedded
  raw_inputs = tuple(s for s in config.side_inputs if s.modality is None)
  k = int(config.accum_steps)
  n = parallel.batch_shards(mesh)

  def embed(params, inputs, extra, rng):
    """Embeddings (list), scale, bias and the embedded side data of one (micro-)batch."""
    emb, extras = model.apply({"params": params}, inputs, train=True, rngs={"dropout": rng})
    side = {}
    for i, spec in enumerate(side_inputs):
      x = extra[spec.batch_key]
      rows, per_row = x.shape[:2]
      out, _ = model.apply(
        {"params": params},
        {spec.modality: x.reshape(rows * per_row, *x.shape[2:])},
        train=True,
        rngs={"dropout": jax.random.fold_in(rng, 1 + i)},
      )
      side[spec.side_key] = out[spec.modality].reshape(rows, per_row, -1)
    return [emb[m] for m in modalities], extras["scale"], extras["bias"], side

  def split(batch):
    inputs = {m: batch[m] for m in modalities}
    extra = {spec.batch_key: batch[spec.batch_key] for spec in side_inputs}
    side = {key: batch[key] for key in config.side_keys}
    side.update({spec.side_key: batch[spec.batch_key] for spec in raw_inputs})
    return inputs, extra, side

  def plain(params, batch, rng):
    inputs, extra, side = split(batch)

    def total(p):
      embeddings, scale, bias, side_emb = embed(p, inputs, extra, rng)
      return loss_fn(embeddings, scale, bias, {**side, **side_emb}), (scale, bias)

    return jax.value_and_grad(total, has_aux=True)(params)

  def gradcache(params, batch, rng):
    inputs, extra, side = split(batch)
    micro = jax.tree.map(lambda x: _micro_split(x, k, n, mesh), (inputs, extra))
    index = jnp.arange(k)

    # 1. Embeddings of every micro-batch; nothing is kept for a backward pass.
    def forward(_, xs):
      m, (mb, mx) = xs
      return None, embed(params, mb, mx, jax.random.fold_in(rng, m))

    _, (emb_k, scales, biases, side_k) = jax.lax.scan(forward, None, (index, micro))
    scale = scales[0]
    bias = None if biases is None else biases[0]

    # 2. The loss over the whole batch, and its gradient w.r.t. embeddings, scale and bias.
    def whole(emb_k, scale, bias, side_k):
      join = lambda e: _micro_join(e, n, mesh)
      side_emb = jax.tree.map(join, side_k)
      return loss_fn([join(e) for e in emb_k], scale, bias, {**side, **side_emb})

    loss, (g_emb_k, g_scale, g_bias, g_side_k) = jax.value_and_grad(whole, argnums=(0, 1, 2, 3))(
      emb_k, scale, bias, side_k
    )

    # 3. Backpropagate each micro-batch's share through the encoders; the scale and bias
    #    cotangents enter once (with the first micro-batch).
    def backward(acc, xs):
      m, (mb, mx), g_e, g_s = xs
      _, vjp = jax.vjp(lambda p: embed(p, mb, mx, jax.random.fold_in(rng, m)), params)
      first = m == 0
      ct_scale = jnp.where(first, g_scale, jnp.zeros_like(g_scale))
      ct_bias = None if g_bias is None else jnp.where(first, g_bias, jnp.zeros_like(g_bias))
      (g,) = vjp((list(g_e), ct_scale, ct_bias, g_s))
      return jax.tree.map(jnp.add, acc, g), None

    zeros = jax.tree.map(jnp.zeros_like, params)
    if param_shardings is not None:
      zeros = jax.lax.with_sharding_constraint(zeros, param_shardings)
    grads, _ = jax.lax.scan(backward, zeros, (index, micro, list(g_emb_k), g_side_k))
    return (loss, (scale, bias)), grads

  return plain if k == 1 else gradcache


def make_momentum_grad_fn(
  model: nn.Module, objective: losses.Objective, mesh: Mesh, config: StepConfig
):
  """`(params, momentum_state, batch, rng) -> ((loss, (scale, bias)), grads, keys)` for a
  momentum-queue objective (`moco`): the loss of `contrastive.train.momentum`,
  `(L(q_a, k_b, queue_b) + L(q_b, k_a, queue_a)) / 2`, and its gradient in the online
  parameters; `keys` (`{modality: [batch, embed_dim]}`, from the key encoder) go to
  `momentum.update` after the optimizer step.
  """
  loss_fn = make_loss_fn(objective, mesh, config)
  directions = momentum_lib.directions(config.modalities)

  def grad_fn(params, state: momentum_lib.MomentumState, batch, rng):
    inputs = {m: batch[m] for m in config.modalities}
    keys = momentum_lib.keys(model, state, inputs)

    def total(p):
      emb, extras = model.apply({"params": p}, inputs, train=True, rngs={"dropout": rng})
      scale, bias = extras["scale"], extras["bias"]
      per_direction = [
        loss_fn([emb[q], keys[k]], scale, bias, {"queue": state.queues[k]}) for q, k in directions
      ]
      return sum(per_direction) / len(per_direction), (scale, bias)

    out, grads = jax.value_and_grad(total, has_aux=True)(params)
    return out, grads, keys

  return grad_fn


def _loss_parts(model, objective, mesh, config: StepConfig, param_shardings):
  """The step's two loss-specific parts, picked once: `grad_fn(params, loss_state, batch, rng)
  -> ((loss, (scale, bias)), grads, aux)` and `after_update(loss_state, new_params, aux) ->
  loss_state`. Plain or GradCache (`make_grad_fn`): no `aux`, the loss state as it is. A
  momentum-queue objective (`make_momentum_grad_fn`): `aux` is the step's keys, enqueued after
  the update, and the key encoder moves towards the new parameters (`momentum.update`)."""
  if config.momentum is None:
    plain = make_grad_fn(model, objective, mesh, config, param_shardings)
    return (
      lambda params, loss_state, batch, rng: (*plain(params, batch, rng), None),
      lambda loss_state, params, aux: loss_state,
    )
  return (
    make_momentum_grad_fn(model, objective, mesh, config),
    lambda loss_state, params, keys: momentum_lib.update(loss_state, params, keys, config.momentum),
  )


def make_train_step(
  model: nn.Module,
  objective: losses.Objective,
  tx: optax.GradientTransformation,
  schedule: optax.Schedule,
  mesh: Mesh,
  state_shardings: TrainState,
  batch_shardings: Mapping[str, NamedSharding],
  config: StepConfig,
):
  """The jitted `(state, batch) -> (state, metrics)` with explicit in/out shardings.

  `state` is donated. `metrics` are replicated float32 scalars: `loss`, `grad_norm` (of the
  trainable gradients, before clipping), `param_norm`, `lr` (of this update), `scale`, `bias`
  (when the model has one) and `finite` (1 when the update was applied).

  Calls must happen inside `parallel.use_rules(mesh)`, so that tracing sees the logical axis
  rules; the returned function enters it itself.
  """
  grad_fn, after_update = _loss_parts(model, objective, mesh, config, state_shardings.params)
  base_key = jax.random.key(config.seed)

  def train_step(state: TrainState, batch: Mapping[str, jax.Array]):
    rng = jax.random.fold_in(base_key, state.step)
    (loss, (scale, bias)), grads, aux = grad_fn(state.params, state.loss_state, batch, rng)
    grad_norm = optimizer_lib.global_norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    params = optimizer_lib.clip_log_scale(params, config.max_scale)
    loss_state = after_update(state.loss_state, params, aux)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    # A non-finite step changes nothing but the counters.
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
    new_state = TrainState(
      step=state.step + 1,
      params=keep(params, state.params),
      opt_state=keep(opt_state, state.opt_state),
      skipped=state.skipped + jnp.where(finite, 0, 1).astype(jnp.int32),
      loss_state=keep(loss_state, state.loss_state),
    )
    metrics = {
      "loss": loss.astype(jnp.float32),
      "grad_norm": grad_norm,
      "param_norm": optimizer_lib.global_norm(new_state.params),
      "lr": jnp.asarray(schedule(state.step - state.skipped), jnp.float32),
      "scale": scale.astype(jnp.float32),
      "finite": finite.astype(jnp.float32),
    }
    if bias is not None:
      metrics["bias"] = bias.astype(jnp.float32)
    return new_state, metrics

  replicated = NamedSharding(mesh, P())
  jitted = jax.jit(
    train_step,
    in_shardings=(state_shardings, dict(batch_shardings)),
    out_shardings=(state_shardings, replicated),
    donate_argnums=(0,),
  )

  def step(state: TrainState, batch: Mapping[str, jax.Array]):
    with parallel.use_rules(mesh):
      return jitted(state, dict(batch))

  step.jitted = jitted
  return step
