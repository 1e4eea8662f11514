"""The optimizer a config names: optax with warmup schedules, clipping, decay masks and locking.

`config.optim` keys (see `contrastive.run.config.defaults`):

| key              | meaning                                                                  |
| ---------------- | ------------------------------------------------------------------------ |
| `name`           | a key of `OPTIMIZERS`: `adamw`, `lamb`, `sgd`, `adafactor`, `lion`, `muon` |
| `lr`             | the peak learning rate                                                   |
| `schedule`       | after the warmup: `cosine`, `linear`, `constant` or `rsqrt`              |
| `warmup_steps`   | linear warmup from 0 to `lr`                                             |
| `end_lr`         | where `cosine` and `linear` end, at `total_steps`                        |
| `cooldown_steps` | the last N steps decay to 0 from where the schedule is (0: none)         |
| `cooldown`       | the cooldown's shape: `linear` or `sqrt` (`1 - sqrt(progress)`)          |
| `layer_decay`    | layer-wise lr decay: a float or `{modality: float}` (`param_groups`)     |
| `lr_mults`       | `(regex, multiplier)` pairs for the lr; 0 or None freezes                |
| `wd_mults`       | `(regex, multiplier)` pairs for the weight decay                         |
| `unlocked_groups`| `{modality: n}`: freeze the tower but for its last n groups (open_clip)  |
| `b1`, `b2`, `eps`| Adam's moments (`b1` is SGD's momentum)                                  |
| `weight_decay`   | decoupled weight decay, on kernels and embedding tables only             |
| `grad_clip_norm` | clip the global gradient norm here (a placeholder: no clipping)          |

Weight decay follows `contrastive.models.weight_decay_mask`: Dense/Conv kernels and embedding
tables decay; biases, LayerNorm parameters, position embeddings, class tokens and the logit
scale and bias do not (as in open_clip). Locked parameters (LiT, `config.model.locked`) get no
update and no optimizer state (`contrastive.models.lock`). The CLIP scale is clipped in the
model's forward pass and, after each update, its parameter too (`clip_log_scale`).

With layer decay, `lr_mults`, `wd_mults` or `unlocked_groups` set (`contrastive.train.
param_groups`), the chain is: clip the global norm of the trainable gradients; the optimizer,
one instance per distinct weight-decay multiplier (`optax.multi_transform`); the learning-rate
multipliers; frozen leaves (multiplier 0 or None, locked) get zero updates and no state. The
groups are logged once at start-up (`param_groups.describe`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import math
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from contrastive import models
from contrastive.train import param_groups

SCHEDULES = ("cosine", "linear", "constant", "rsqrt")
COOLDOWNS = ("linear", "sqrt")


def learning_rate_schedule(optim: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Linear warmup to `optim.lr` over `optim.warmup_steps`, then the decay `optim.schedule` names.

  The learning rate of update number `count` (0-based: the first update uses `schedule(0)`):

  - `cosine`: half a cosine from `lr` down to `end_lr` at `total_steps`;
  - `linear`: a straight line from `lr` to `end_lr` at `total_steps`;
  - `constant`: `lr`;
  - `rsqrt`: `lr * sqrt(warmup_steps / step)` after the warmup (big_vision's "rsqrt" without
    a cool-down).
  """
  lr, warmup = float(optim.lr), int(optim.warmup_steps)
  end_lr = float(optim.end_lr)
  name = optim.schedule
  if name not in SCHEDULES:
    raise ValueError(f"Unknown optim.schedule {name!r}; known: {list(SCHEDULES)}.")
  if warmup < 0:
    raise ValueError(f"optim.warmup_steps must be >= 0, got {warmup}.")
  decay_steps = max(total_steps - warmup, 1)
  if name == "cosine":
    decay = optax.cosine_decay_schedule(lr, decay_steps, alpha=end_lr / lr if lr else 0.0)
  elif name == "linear":
    decay = optax.linear_schedule(lr, end_lr, decay_steps)
  elif name == "constant":
    decay = optax.constant_schedule(lr)
  else:
    timescale = max(warmup, 1)
    decay = lambda count: lr * jnp.sqrt(timescale / (count + timescale))
  if not warmup:
    return with_cooldown(decay, optim, total_steps)
  # Warmup reaches `lr` at its last step (count = warmup - 1 uses lr * warmup / warmup).
  ramp = lambda count: lr * (count + 1) / warmup
  return with_cooldown(optax.join_schedules([ramp, decay], [warmup]), optim, total_steps)


def with_cooldown(
  schedule: optax.Schedule, optim: ml_collections.ConfigDict, total_steps: int
) -> optax.Schedule:
  r"""`schedule` with its last `optim.cooldown_steps` (N) updates decaying to 0 (warmup-stable-decay
  with `schedule="constant"`; Hägele et al., 2024, https://arxiv.org/abs/2405.18392).

  .. math::
    \eta(t) = \eta_s(\min(t, t_c)) \, f\big(\mathrm{clip}((t - t_c) / N, 0, 1)\big),
    \quad t_c = T - N, \quad f(x) = 1 - x \text{ (linear) or } 1 - \sqrt{x} \text{ (sqrt)},

  so the first cooldown update uses the schedule's value at `t_c` and update `T` (one past the
  last) would use 0.
  """
  n = int(optim.get("cooldown_steps", 0) or 0)
  shape = optim.get("cooldown", "linear")
  if shape not in COOLDOWNS:
    raise ValueError(f"Unknown optim.cooldown {shape!r}; known: {list(COOLDOWNS)}.")
  if n < 0 or n > total_steps:
    raise ValueError(f"optim.cooldown_steps must be in [0, total_steps={total_steps}], got {n}.")
  if not n:
    return schedule
  start = total_steps - n

  def cooled(count):
    progress = jnp.clip((count - start) / n, 0.0, 1.0)
    factor = 1.0 - (jnp.sqrt(progress) if shape == "sqrt" else progress)
    return schedule(jnp.minimum(count, start)) * factor

  return cooled


def _adamw(optim, schedule, decay_mask):
  return optax.adamw(
    schedule,
    b1=optim.b1,
    b2=optim.b2,
    eps=optim.eps,
    weight_decay=optim.weight_decay,
    mask=decay_mask,
  )


def _lamb(optim, schedule, decay_mask):
  return optax.lamb(
    schedule,
    b1=optim.b1,
    b2=optim.b2,
    eps=optim.eps,
    weight_decay=optim.weight_decay,
    mask=decay_mask,
  )


def _sgd(optim, schedule, decay_mask):
  return optax.chain(
    optax.add_decayed_weights(optim.weight_decay, mask=decay_mask),
    optax.sgd(schedule, momentum=optim.b1 or None, nesterov=False),
  )


def _adafactor(optim, schedule, decay_mask):
  # optax's factored second moments and block-RMS clipping; the decay decoupled as AdamW's
  # (times the learning rate), so `weight_decay` means what it means for `adamw`.
  return optax.chain(
    optax.scale_by_factored_rms(epsilon=1e-30),
    optax.clip_by_block_rms(1.0),
    optax.add_decayed_weights(optim.weight_decay, mask=decay_mask),
    optax.scale_by_learning_rate(schedule),
  )


def _lion(optim, schedule, decay_mask):
  # Chen et al. use b1=0.9, b2=0.99 and a learning rate 3-10x below AdamW's.
  return optax.lion(
    schedule, b1=optim.b1, b2=optim.b2, weight_decay=optim.weight_decay, mask=decay_mask
  )


# Muon orthogonalizes the transformer blocks' matrices; every other leaf gets AdamW.
_MUON_AXES = {  # leaf's module name: (reduction axes, output axes), counted from the end
  "query": ((-3,), (-2, -1)),
  "key": ((-3,), (-2, -1)),
  "value": ((-3,), (-2, -1)),
  "out": ((-3, -2), (-1,)),
  "fc1": ((-2,), (-1,)),
  "fc2": ((-2,), (-1,)),
}


def _muon_dims(params):
  def dims(path, leaf):
    names = [str(getattr(k, "key", k)) for k in path]
    if "transformer" not in names or names[-1] != "kernel" or names[-2] not in _MUON_AXES:
      return None
    ndim = len(leaf.shape)
    reduction, output = _MUON_AXES[names[-2]]
    return optax.contrib.MuonDimensionNumbers(
      tuple(ndim + a for a in reduction), tuple(ndim + a for a in output)
    )

  return jax.tree_util.tree_map_with_path(dims, params)


def _muon(optim, schedule, decay_mask):
  return optax.contrib.muon(
    schedule,
    beta=optim.b1,
    weight_decay=optim.weight_decay,
    weight_decay_mask=decay_mask,
    adam_b1=optim.b1,
    adam_b2=optim.b2,
    eps=optim.eps,
    adam_weight_decay=optim.weight_decay,
    muon_weight_dimension_numbers=_muon_dims,
  )


# name: (optim config, schedule, decay mask) -> optax transformation.
OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
  "adamw": _adamw,
  "lamb": _lamb,
  "sgd": _sgd,
  "adafactor": _adafactor,
  "lion": _lion,
  "muon": _muon,
}


def make_optimizer(
  optim: ml_collections.ConfigDict, params: Any, *, total_steps: int, locked: Sequence[str] = ()
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The optax transformation `config.optim` describes, and its learning-rate schedule.

  Args:
    optim: `config.optim`.
    params: the (unboxed, possibly abstract) parameters; only their structure, names and ranks
      are read (for the decay and locking masks).
    total_steps: the length of the run, for the schedule.
    locked: locked parameter path prefixes (`model.locked`).

  Returns:
    `(tx, schedule)`: `tx` clips the global norm of the trainable gradients, then applies the
    optimizer with decoupled weight decay on the decay mask; locked leaves get zero updates and
    no state.
  """
  if optim.name not in OPTIMIZERS:
    raise ValueError(f"Unknown optim.name {optim.name!r}; known: {sorted(OPTIMIZERS)}.")
  schedule = learning_rate_schedule(optim, total_steps)
  decay_mask = models.weight_decay_mask(params)
  parts = []
  if optim.grad_clip_norm is not None:
    if optim.grad_clip_norm <= 0:
      raise ValueError(f"optim.grad_clip_norm must be positive, got {optim.grad_clip_norm}.")
    parts.append(optax.clip_by_global_norm(float(optim.grad_clip_norm)))
  groups = param_groups.make_param_groups(optim, params)
  if groups.active:
    return _grouped(optim, params, schedule, decay_mask, parts, groups, tuple(locked)), schedule
  parts.append(OPTIMIZERS[optim.name](optim, schedule, decay_mask))
  tx = optax.chain(*parts)
  return models.lock(tx, params, locked=tuple(locked)), schedule


def scale_by_multipliers(multipliers: Any) -> optax.GradientTransformation:
  """Multiplies each update by its leaf's multiplier (a float or a broadcastable array); leaves
  masked out by an enclosing `multi_transform` pass through."""

  def update(updates, state, params=None):
    del params

    def scale(m, u):
      if isinstance(u, optax.MaskedNode) or (np.ndim(m) == 0 and float(m) == 1.0):
        return u
      return u * jnp.asarray(m, u.dtype)

    return jax.tree.map(scale, multipliers, updates), state

  return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


def _grouped(optim, params, schedule, decay_mask, parts, groups, locked):
  """The chain of the module docstring for per-group multipliers."""
  for modality in dict(optim.get("unlocked_groups") or {}):
    if modality in locked:
      raise ValueError(
        f"optim.unlocked_groups names {modality!r}, which model.locked locks whole (it stops "
        "the gradient through the tower); drop it from model.locked."
      )
  wd_leaves = jax.tree.leaves(groups.wd)
  values = sorted(set(wd_leaves))
  if values == [1.0]:
    inner = OPTIMIZERS[optim.name](optim, schedule, decay_mask)
  else:
    transforms = {}
    for i, w in enumerate(values):
      scaled = ml_collections.ConfigDict(optim.to_dict())
      with scaled.ignore_type():
        scaled.weight_decay = float(optim.weight_decay) * w
      transforms[f"wd{i}"] = OPTIMIZERS[optim.name](scaled, schedule, decay_mask)
    labels = jax.tree.map(lambda w: f"wd{values.index(w)}", groups.wd)
    inner = optax.multi_transform(transforms, labels)
  tx = optax.chain(*parts, inner, scale_by_multipliers(groups.lr))
  trainable = models.trainable_mask(params, locked=locked)
  labels = jax.tree.map(
    lambda t, f: models.locking.TRAINABLE if t and not f else models.locking.FROZEN,
    trainable,
    groups.frozen,
  )
  lines = param_groups.describe(groups, params, locked_by_model=trainable)
  logging.info("Parameter groups (optim.layer_decay, lr_mults, wd_mults):\n%s", "\n".join(lines))
  return optax.multi_transform(
    {models.locking.TRAINABLE: tx, models.locking.FROZEN: optax.set_to_zero()}, labels
  )


def clip_log_scale(params: Mapping[str, Any], max_scale: float | None) -> Mapping[str, Any]:
  """`params` with `log_scale` clamped at `log(max_scale)` (open_clip's clamp after each step).

  The model already clips the scale it uses; clamping the parameter as well keeps Adam's momentum
  from carrying it far past the bound, where it would get no gradient to come back.
  """
  if max_scale is None or "log_scale" not in params:
    return params
  params = dict(params)
  params["log_scale"] = jnp.minimum(params["log_scale"], math.log(max_scale))
  return params


def global_norm(tree: Any) -> jax.Array:
  """The L2 norm of all leaves of `tree` together, in float32."""
  return optax.tree.norm(jax.tree.map(lambda x: x.astype(jnp.float32), tree))
