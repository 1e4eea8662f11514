"""The optimizer a config names: optax with warmup schedules, clipping, decay masks and locking.

`config.optim` keys (see `contrastive.run.config.defaults`):

| key              | meaning                                                                  |
| ---------------- | ------------------------------------------------------------------------ |
| `name`           | a key of `OPTIMIZERS`: `adamw`, `lamb`, `sgd`                            |
| `lr`             | the peak learning rate                                                   |
| `schedule`       | after the warmup: `cosine`, `linear`, `constant` or `rsqrt`              |
| `warmup_steps`   | linear warmup from 0 to `lr`                                             |
| `end_lr`         | where `cosine` and `linear` end, at `total_steps`                        |
| `b1`, `b2`, `eps`| Adam's moments (`b1` is SGD's momentum)                                  |
| `weight_decay`   | decoupled weight decay, on kernels and embedding tables only             |
| `grad_clip_norm` | clip the global gradient norm here (a placeholder: no clipping)          |

Weight decay follows `contrastive.models.weight_decay_mask`: Dense/Conv kernels and embedding
tables decay; biases, LayerNorm parameters, position embeddings, class tokens and the logit
scale and bias do not (as in open_clip). Locked parameters (LiT, `config.model.locked`) get no
update and no optimizer state (`contrastive.models.lock`). The CLIP scale is clipped in the
model's forward pass and, after each update, its parameter too (`clip_log_scale`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from contrastive import models

SCHEDULES = ("cosine", "linear", "constant", "rsqrt")


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
    return decay
  # Warmup reaches `lr` at its last step (count = warmup - 1 uses lr * warmup / warmup).
  ramp = lambda count: lr * (count + 1) / warmup
  return optax.join_schedules([ramp, decay], [warmup])


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


# name: (optim config, schedule, decay mask) -> optax transformation.
OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
  "adamw": _adamw,
  "lamb": _lamb,
  "sgd": _sgd,
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
  parts.append(OPTIMIZERS[optim.name](optim, schedule, decay_mask))
  tx = optax.chain(*parts)
  return models.lock(tx, params, locked=tuple(locked)), schedule


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
