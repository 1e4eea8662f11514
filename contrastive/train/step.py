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
from contrastive.losses import gap_tools as gap_tools_lib
from contrastive.train import example_state as example_state_lib
from contrastive.train import momentum as momentum_lib
from contrastive.train import optimizer as optimizer_lib
from contrastive.train import teachers as teachers_lib
from contrastive.train import terms as terms_lib
from contrastive.train.state import TrainState

SideInput = terms_lib.SideInput


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
      not combine with `accum_steps > 1` (the queues take one batch of keys per update) or with
      more terms: such a config is refused when it is made.
    weight: the weight of the first term (the objective given beside this config).
    terms: the objective's other terms (`contrastive.train.terms`), e.g. CoCa's caption term.
    ema_decay: the decay `d` of the parameters' EMA, `ema <- d ema + (1 - d) params` after
      each applied update (`TrainState.ema_params`); None: none kept.
    gap_tools: the modality-gap tools (`contrastive.losses.gap_tools`): centering, noise and
      swapping of the embeddings before every ring term, and a scheduled logit scale that
      replaces the learned one. None: none.
    example_state_size: for a per-example state objective (`isogclr`), the number of examples
      `n` its state holds (the training source's length); the train state then carries an
      `example_state.ExampleState`. None: no such state.
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
  weight: float = 1.0
  terms: tuple[terms_lib.Term, ...] = ()
  ema_decay: float | None = None
  gap_tools: gap_tools_lib.GapTools | None = None
  example_state_size: int | None = None

  def __post_init__(self):
    if self.example_state_size is not None and (
      self.accum_steps != 1
      or self.terms
      or self.weight != 1.0
      or self.momentum is not None
      or self.gap_tools is not None
    ):
      raise ValueError(
        "A per-example state loss (isogclr) is a run's only term, without GradCache or the gap "
        "tools: remove loss.terms, loss.weight and the gap tools (loss.center, embedding_noise, "
        "swap_fraction, scale_schedule), and set optim.accum_steps=1."
      )
    if self.momentum is not None and self.accum_steps != 1:
      raise ValueError(
        f"A momentum-queue loss (loss.momentum={self.momentum}: a momentum encoder with queues) "
        "does not combine with GradCache accumulation: set optim.accum_steps=1, got "
        f"{self.accum_steps}."
      )
    if self.momentum is not None and (self.terms or self.weight != 1.0):
      raise ValueError(
        "A momentum-queue loss (moco) is a run's only term: remove loss.terms and loss.weight."
      )
    if self.momentum is not None and self.gap_tools is not None:
      raise ValueError(
        "The gap tools (loss.center, embedding_noise, swap_fraction, scale_schedule) do not "
        "combine with a momentum-queue loss (moco)."
      )

  def all_terms(self, objective: losses.Objective) -> tuple[terms_lib.Term, ...]:
    """The first term (`objective` with this config's side data and options), then `terms`."""
    first = terms_lib.RingTerm(
      name=objective.name,
      objective=objective,
      weight=self.weight,
      side_keys=tuple(self.side_keys),
      side_inputs=tuple(self.side_inputs),
      options=dict(self.loss_options),
    )
    return (first, *self.terms)


def _ring_loss_fn(objective: losses.Objective, options, mesh: Mesh, block_size: int | None):
  """`(embeddings list, scale, bias, side) -> scalar` on global batch-sharded arrays (the ring)."""
  sharded = parallel.shard_loss(objective, mesh, parallel.batch_axes(mesh))

  def loss_fn(embeddings: Sequence[jax.Array], scale, bias, side) -> jax.Array:
    return sharded(list(embeddings), scale, bias, dict(side), block_size=block_size, **options)

  return loss_fn


def make_loss_fn(objective: losses.Objective, mesh: Mesh, config: StepConfig):
  """The first term's loss: `(embeddings list, scale, bias, side) -> scalar` (the ring)."""
  return _ring_loss_fn(objective, dict(config.loss_options), mesh, config.block_size)


def _weighted(terms: Sequence[terms_lib.Term], values: Mapping[str, jax.Array]) -> jax.Array:
  """`sum_k w_k L_k`; one term of weight 1 is its value as it is (today's step, bitwise)."""
  if len(terms) == 1 and terms[0].weight == 1.0:
    return values[terms[0].name]
  return sum(t.weight * values[t.name] for t in terms)


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
  """`(params, batch, rng, teacher_side=None) -> ((loss, (scale, bias, values)), grads)`, plain
  or GradCache.

  `loss` is the weighted sum of the terms (`config.all_terms(objective)`), `values` each term's
  value by name. `teacher_side`: `{term_name: {side_key: [batch, d]}}`, the teachers' embeddings
  of a teacher term (`contrastive.train.teachers.side`).

  Ring terms see the whole batch through the ring. A caption term is the mean over the batch's
  tokens: each micro-batch contributes its token-loss sum, divided once by the batch's token
  count, so GradCache stays exact for it too. Exposed for tests: with `accum_steps = k` the
  result equals `accum_steps = 1` on the same batch (to float32 rounding).
  """
  terms = config.all_terms(objective)
  ring = [t for t in terms if isinstance(t, terms_lib.RingTerm)]
  captions = [t for t in terms if isinstance(t, terms_lib.CaptionTerm)]
  loss_fns = {t.name: _ring_loss_fn(t.objective, t.options, mesh, config.block_size) for t in ring}
  modalities = tuple(config.modalities)
  embedded = [(t.name, s) for t in ring for s in t.side_inputs if s.modality is not None]
  k = int(config.accum_steps)
  n = parallel.batch_shards(mesh)
  tools = config.gap_tools
  if tools is not None and tools.transforms:
    # Its own stream of the step's key: dropout keeps fold_in(rng, m) and fold_in(rng, 1 + i).
    transform = gap_tools_lib.make_transform(tools, mesh, parallel.batch_axes(mesh))
    gap_transform = lambda emb, rng: transform(emb, jax.random.fold_in(rng, 0x6A9))
  else:
    gap_transform = lambda emb, rng: list(emb)

  def embed(params, inputs, extra, rng):
    """Embeddings (list), scale, bias, the embedded side data by term and the caption terms'
    token-loss sums of one (micro-)batch."""
    emb, extras = model.apply({"params": params}, inputs, train=True, rngs={"dropout": rng})
    side = {t.name: {} for t in ring}
    for i, (term_name, spec) in enumerate(embedded):
      x = extra[spec.batch_key]
      rows, per_row = x.shape[:2]
      out, _ = model.apply(
        {"params": params},
        {spec.modality: x.reshape(rows * per_row, *x.shape[2:])},
        train=True,
        rngs={"dropout": jax.random.fold_in(rng, 1 + i)},
      )
      side[term_name][spec.side_key] = out[spec.modality].reshape(rows, per_row, -1)
    sums = {
      t.name: losses.caption_sums(
        extras["caption_logits"],
        inputs["text"][:, 1:],
        pad_id=t.pad_id,
        label_smoothing=t.label_smoothing,
      )[0]
      for t in captions
    }
    return [emb[m] for m in modalities], extras["scale"], extras["bias"], side, sums

  def split(batch, teacher_side):
    inputs = {m: batch[m] for m in modalities}
    extra = {spec.batch_key: batch[spec.batch_key] for _, spec in embedded}
    side = {}
    for t in ring:
      side[t.name] = {key: batch[key] for key in t.side_keys}
      side[t.name].update(
        {s.side_key: batch[s.batch_key] for s in t.side_inputs if s.modality is None}
      )
      side[t.name].update((teacher_side or {}).get(t.name, {}))
    counts = {
      t.name: jnp.maximum(jnp.sum(batch["text"][:, 1:] != t.pad_id).astype(jnp.float32), 1.0)
      for t in captions
    }
    return inputs, extra, side, counts

  def ring_values(emb, scale, bias, side, side_emb):
    return {
      t.name: loss_fns[t.name](emb, scale, bias, {**side[t.name], **side_emb[t.name]}) for t in ring
    }

  def plain(params, batch, rng, teacher_side=None):
    inputs, extra, side, counts = split(batch, teacher_side)

    def total(p):
      emb, scale, bias, side_emb, sums = embed(p, inputs, extra, rng)
      values = ring_values(gap_transform(emb, rng), scale, bias, side, side_emb)
      values.update({t.name: sums[t.name] / counts[t.name] for t in captions})
      return _weighted(terms, values), (scale, bias, values)

    return jax.value_and_grad(total, has_aux=True)(params)

  def gradcache(params, batch, rng, teacher_side=None):
    inputs, extra, side, counts = split(batch, teacher_side)
    micro = jax.tree.map(lambda x: _micro_split(x, k, n, mesh), (inputs, extra))
    index = jnp.arange(k)

    # 1. Embeddings of every micro-batch; nothing is kept for a backward pass.
    def forward(_, xs):
      m, (mb, mx) = xs
      return None, embed(params, mb, mx, jax.random.fold_in(rng, m))

    _, (emb_k, scales, biases, side_k, sums_k) = jax.lax.scan(forward, None, (index, micro))
    scale = scales[0]
    bias = None if biases is None else biases[0]

    # 2. The ring terms over the whole batch, and their gradient w.r.t. embeddings, scale and
    #    bias; a caption term's value is its micro-batches' sums over the batch's token count.
    def whole(emb_k, scale, bias, side_k):
      join = lambda e: _micro_join(e, n, mesh)
      emb = gap_transform([join(e) for e in emb_k], rng)
      values = ring_values(emb, scale, bias, side, jax.tree.map(join, side_k))
      return _weighted(ring, values), values

    (ring_loss, values), (g_emb_k, g_scale, g_bias, g_side_k) = jax.value_and_grad(
      whole, argnums=(0, 1, 2, 3), has_aux=True
    )(emb_k, scale, bias, side_k)
    values.update({t.name: jnp.sum(sums_k[t.name]) / counts[t.name] for t in captions})
    loss = ring_loss if not captions else _weighted(terms, values)
    ct_sums = {t.name: t.weight / counts[t.name] for t in captions}  # d loss / d sum_m

    # 3. Backpropagate each micro-batch's share through the encoders; the scale and bias
    #    cotangents enter once (with the first micro-batch).
    def backward(acc, xs):
      m, (mb, mx), g_e, g_s = xs
      _, vjp = jax.vjp(lambda p: embed(p, mb, mx, jax.random.fold_in(rng, m)), params)
      first = m == 0
      ct_scale = jnp.where(first, g_scale, jnp.zeros_like(g_scale))
      ct_bias = None if g_bias is None else jnp.where(first, g_bias, jnp.zeros_like(g_bias))
      (g,) = vjp((list(g_e), ct_scale, ct_bias, g_s, ct_sums))
      return jax.tree.map(jnp.add, acc, g), None

    zeros = jax.tree.map(jnp.zeros_like, params)
    if param_shardings is not None:
      zeros = jax.lax.with_sharding_constraint(zeros, param_shardings)
    grads, _ = jax.lax.scan(backward, zeros, (index, micro, list(g_emb_k), g_side_k))
    return (loss, (scale, bias, values)), grads

  return plain if k == 1 else gradcache


def make_momentum_grad_fn(
  model: nn.Module, objective: losses.Objective, mesh: Mesh, config: StepConfig
):
  """`(params, momentum_state, batch, rng) -> ((loss, (scale, bias, values)), grads, keys)` for
  a momentum-queue objective (`moco`): the loss of `contrastive.train.momentum`,
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
      # `rng`: for a loss that draws (mochi's mixing), one stream per direction.
      per_direction = [
        loss_fn(
          [emb[q], keys[k]],
          scale,
          bias,
          {"queue": state.queues[k], "rng": jax.random.fold_in(rng, 1 + i)},
        )
        for i, (q, k) in enumerate(directions)
      ]
      loss = sum(per_direction) / len(per_direction)
      return loss, (scale, bias, {objective.name: loss})

    out, grads = jax.value_and_grad(total, has_aux=True)(params)
    return out, grads, keys

  return grad_fn


def make_teacher_side(config: StepConfig, teacher_models: Mapping[str, nn.Module], mesh: Mesh):
  """`(state_teachers, batch) -> {term_name: {side_key: [batch, d]}}`: the teachers' embeddings
  (`contrastive.train.teachers.side`), one GradCache micro-batch at a time when accumulating."""
  k = int(config.accum_steps)
  n = parallel.batch_shards(mesh)

  def side(state_teachers, batch):
    inputs = {m: batch[m] for m in config.modalities}
    one = lambda x: teachers_lib.side(
      config.terms, teacher_models, state_teachers, x, config.modalities
    )
    if k == 1:
      return one(inputs)
    micro = jax.tree.map(lambda x: _micro_split(x, k, n, mesh), inputs)
    return jax.tree.map(lambda y: _micro_join(y, n, mesh), jax.lax.map(one, micro))

  return side


def _loss_parts(model, objective, mesh, config: StepConfig, param_shardings):
  """The step's two loss-specific parts, picked once: `grad_fn(params, loss_state, batch, rng,
  teacher_side) -> ((loss, (scale, bias, values)), grads, aux)` and `after_update(loss_state,
  new_params, aux) -> loss_state`. Plain or GradCache (`make_grad_fn`): no `aux`, the loss state
  as it is. A momentum-queue objective (`make_momentum_grad_fn`): `aux` is the step's keys,
  enqueued after the update, and the key encoder moves towards the new parameters
  (`momentum.update`). A per-example state objective (`example_state.make_grad_fn`): `aux` is
  the batch's ids and new state rows, written back after the update."""
  if config.example_state_size is not None:
    state_grad_fn = example_state_lib.make_grad_fn(
      model, objective, mesh, config.modalities, config.loss_options, config.block_size
    )
    return (
      lambda params, loss_state, batch, rng, side: state_grad_fn(params, loss_state, batch, rng),
      lambda loss_state, params, rows: example_state_lib.update(loss_state, rows),
    )
  if config.momentum is None:
    grad_fn = make_grad_fn(model, objective, mesh, config, param_shardings)
    return (
      lambda params, loss_state, batch, rng, side: (*grad_fn(params, batch, rng, side), None),
      lambda loss_state, params, aux: loss_state,
    )
  momentum_grad_fn = make_momentum_grad_fn(model, objective, mesh, config)
  return (
    lambda params, loss_state, batch, rng, side: momentum_grad_fn(params, loss_state, batch, rng),
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
  teacher_models: Mapping[str, nn.Module] | None = None,
):
  """The jitted `(state, batch) -> (state, metrics)` with explicit in/out shardings.

  `state` is donated. `metrics` are replicated float32 scalars: `loss` (the weighted sum of the
  terms), `loss/<term>` (each term, when there are several), `grad_norm` (of the trainable
  gradients, before clipping), `param_norm`, `lr` (of this update), `scale`, `bias` (when the
  model has one) and `finite` (1 when the update was applied). `teacher_models`: the models of
  the teacher terms (`contrastive.train.teachers.teacher_models`), whose parameters are the
  state's `teachers`; an EMA teacher moves after the update.

  Calls must happen inside `parallel.use_rules(mesh)`, so that tracing sees the logical axis
  rules; the returned function enters it itself.
  """
  grad_fn, after_update = _loss_parts(model, objective, mesh, config, state_shardings.params)
  teacher_side = make_teacher_side(config, teacher_models or {}, mesh)
  base_key = jax.random.key(config.seed)
  scale_schedule = config.gap_tools.scale_schedule if config.gap_tools is not None else None

  def train_step(state: TrainState, batch: Mapping[str, jax.Array]):
    rng = jax.random.fold_in(base_key, state.step)
    side = teacher_side(state.teachers, batch) if state.teachers is not None else None
    params_in = state.params
    if scale_schedule is not None:  # the scheduled scale, not the learned one (no gradient)
      params_in = gap_tools_lib.with_log_scale(state.params, scale_schedule(state.step))
    (loss, (scale, bias, values)), grads, aux = grad_fn(
      params_in, state.loss_state, batch, rng, side
    )
    if scale_schedule is not None:
      grads = {**grads, "log_scale": jnp.zeros_like(grads["log_scale"])}
    grad_norm = optimizer_lib.global_norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    params = optimizer_lib.clip_log_scale(params, config.max_scale)
    if scale_schedule is not None:  # the model carries the next step's scale (for evaluation)
      params = gap_tools_lib.with_log_scale(params, scale_schedule(state.step + 1))
    loss_state = after_update(state.loss_state, params, aux)
    teachers = teachers_lib.update(config.terms, state.teachers, params)
    ema_params = state.ema_params
    if config.ema_decay is not None:
      ema_params = losses.ema_update(params, state.ema_params, config.ema_decay)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    # A non-finite step changes nothing but the counters.
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
    new_state = TrainState(
      step=state.step + 1,
      params=keep(params, state.params),
      opt_state=keep(opt_state, state.opt_state),
      skipped=state.skipped + jnp.where(finite, 0, 1).astype(jnp.int32),
      loss_state=keep(loss_state, state.loss_state),
      teachers=keep(teachers, state.teachers),
      ema_params=keep(ema_params, state.ema_params),
    )
    metrics = {
      "loss": loss.astype(jnp.float32),
      **{k: v.astype(jnp.float32) for k, v in terms_lib.values_metrics(values).items()},
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

  checked = []

  def step(state: TrainState, batch: Mapping[str, jax.Array]):
    if config.example_state_size is not None and not checked:  # ids index the state: once
      example_state_lib.check_ids(batch, config.example_state_size)
      checked.append(True)
    with parallel.use_rules(mesh):
      return jitted(state, dict(batch))

  step.jitted = jitted
  return step
