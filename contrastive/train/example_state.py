r"""Per-example loss state (`isogclr`): what it holds, where it lives, how the step uses it.

An objective registered with `example_state=True` keeps, for every example of the training set
and for each of the model's two modalities (the image anchors `a` and the text anchors `b`),

* `tau[m]`: `[n]` float32, the example's temperature as an anchor of modality `m`;
* `log_u[m]`: `[n]` float32, the log of the moving average of its inner mean, :math:`-\infty`
  until it is first seen;
* `momentum[m]`: `[n]` float32, the moving average of its temperature's gradient,

indexed by the example's id: the batch's `index` key, the record's position in the training
source (`contrastive.data.sources`: every record carries it, and the batch keeps it), with `n`
the source's length (`dataset_size`). Each step, in one jitted function (`make_grad_fn`):

1. gathers the batch's rows of the state by id;
2. the batch's :math:`\log g` (`losses.isogclr_estimates`, no gradient) and the new
   :math:`\log u` (`losses.isogclr_moving_average`);
3. the loss with those rows as side data (`losses.isogclr_loss` through the registry) and its
   gradient in the model's parameters;
4. the temperatures' gradient data (`losses.isogclr_weighted_z`) and their step
   (`losses.isogclr_tau_step`);

and after the optimizer's update `update` scatters the new rows back (a step whose loss or
gradient is not finite leaves the state as it was, like the parameters).

`ExampleState` is the train state's `loss_state`, so it is checkpointed and restored with the
rest and a resumed run continues exactly. It is replicated on every device: memory
`2 modalities x 3 x n` float32 (24 bytes per example: 4.8 MB for the demo's 200,000 records).
The batch's rows are gathered from and scattered to it inside the step; the ring never sees
more than the batch's rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import ml_collections
import numpy as np

from contrastive import losses
from contrastive import parallel
from contrastive.data import config as data_config_lib
from contrastive.data import sources

IDS = "index"  # the batch key of the example ids


@flax.struct.dataclass
class ExampleState:
  """The per-example state of an `example_state` loss (iSogCLR), by modality.

  Attributes:
    tau: `{modality: [n] float32}`, the examples' temperatures as anchors of that modality.
    log_u: `{modality: [n] float32}`, log of the moving average of their inner means; -inf
      where not seen yet.
    momentum: `{modality: [n] float32}`, the moving average of the temperatures' gradients.
  """

  tau: dict[str, jax.Array]
  log_u: dict[str, jax.Array]
  momentum: dict[str, jax.Array]


def options(loss_options: Mapping[str, Any]) -> losses.IsogclrOptions:
  """The state update's options among the loss's options (`config.loss`), checked."""
  fields = losses.IsogclrOptions.__dataclass_fields__
  return losses.IsogclrOptions(**{k: v for k, v in loss_options.items() if k in fields})


def dataset_size(data: ml_collections.ConfigDict) -> int:
  """`n`, the number of examples of the training source: the state's rows.

  Raises:
    ValueError: for a mixture (its sources' ids overlap) or an empty source.
  """
  cfg = data_config_lib.resolve_config(data)
  if cfg.mixture:
    raise ValueError(
      "A per-example state loss (isogclr) indexes its state by the examples' ids, which the "
      "sources of a mixture (data.mixture) share: train it on one source."
    )
  n = len(sources.make_source(cfg, split=cfg.train_split))
  if n == 0:
    raise ValueError(f"The training split of data source {cfg.source!r} is empty.")
  return n


def init_state(modalities: Sequence[str], size: int, tau_init: float | None = None) -> ExampleState:
  """Every temperature at `tau_init` (None: the authors' 0.01), every example unseen, no
  momentum."""
  tau_init = losses.IsogclrOptions.tau_init if tau_init is None else tau_init
  full = lambda v: {m: jnp.full((size,), v, jnp.float32) for m in modalities}
  return ExampleState(tau=full(tau_init), log_u=full(-jnp.inf), momentum=full(0.0))


def state_shardings(mesh: Mesh, modalities: Sequence[str]) -> ExampleState:
  """Replicated: each step reads and writes rows anywhere in it."""
  one = {m: NamedSharding(mesh, P()) for m in modalities}
  return ExampleState(tau=one, log_u=dict(one), momentum=dict(one))


def check_ids(batch: Mapping[str, Any], size: int) -> None:
  """On the host, before the first step: the batch has ids, each in `[0, size)`."""
  _check_has_ids(batch)
  ids = batch[IDS]
  if isinstance(ids, jax.Array):  # this process's shards: a multi-host array is not all here
    ids = np.concatenate([np.asarray(s.data).ravel() for s in ids.addressable_shards])
  ids = np.asarray(ids)
  if ids.size and (ids.min() < 0 or ids.max() >= size):
    raise ValueError(
      f"Example ids (batch key {IDS!r}) must be in [0, {size}), the state's size (the "
      f"training source's length); got ids from {ids.min()} to {ids.max()}."
    )


def _check_has_ids(batch: Mapping[str, Any]) -> None:
  if IDS not in batch:
    raise ValueError(
      f"A per-example state loss (isogclr) needs example ids in the batch (key {IDS!r}); "
      f"the batch has {sorted(batch)}."
    )


def make_grad_fn(
  model: nn.Module,
  objective: losses.Objective,
  mesh: Mesh,
  modalities: Sequence[str],
  loss_options: Mapping[str, Any],
  block_size: int | None,
):
  """`(params, state, batch, rng) -> ((loss, (scale, bias, values)), grads, rows)` for an
  `example_state` objective; `rows` (the ids and the batch's new state rows) go to `update`."""
  a, b = modalities
  opts = options(loss_options)
  axes = parallel.batch_axes(mesh)
  sharded_loss = parallel.shard_loss(objective, mesh, axes)

  def per_row(fn):
    body = lambda *args: fn(*args, axis_name=axes, block_size=block_size)
    return jax.shard_map(body, mesh=mesh, in_specs=P(axes), out_specs=P(axes))

  estimates = per_row(losses.isogclr_estimates)
  weighted_z = per_row(losses.isogclr_weighted_z)

  def grad_fn(params, state: ExampleState, batch, rng):
    _check_has_ids(batch)  # where the step is traced without `check_ids` (compile_for)
    ids = batch[IDS].astype(jnp.int32)
    inputs = {m: batch[m] for m in modalities}
    tau = {m: state.tau[m][ids] for m in modalities}

    def total(p):
      emb, extras = model.apply({"params": p}, inputs, train=True, rngs={"dropout": rng})
      x, y = emb[a], emb[b]
      fixed = jax.lax.stop_gradient((x, y))
      log_g = dict(zip(modalities, estimates(*fixed, tau[a], tau[b])))
      log_u = {
        m: losses.isogclr_moving_average(state.log_u[m][ids], log_g[m], opts.gamma)
        for m in modalities
      }
      side = {IDS: ids, "tau_x": tau[a], "tau_y": tau[b], "log_u_x": log_u[a], "log_u_y": log_u[b]}
      loss = sharded_loss([x, y], extras["scale"], extras["bias"], side, **loss_options)
      q = dict(zip(modalities, weighted_z(*fixed, tau[a], tau[b], log_u[a], log_u[b])))
      return loss, (extras["scale"], extras["bias"], log_u, q)

    (loss, (scale, bias, log_u, q)), grads = jax.value_and_grad(total, has_aux=True)(params)
    new_tau, momentum = {}, {}
    for m in modalities:
      new_tau[m], momentum[m] = losses.isogclr_tau_step(
        tau[m], state.momentum[m][ids], log_u[m], q[m], opts
      )
    rows = (ids, ExampleState(tau=new_tau, log_u=log_u, momentum=momentum))
    return (loss, (scale, bias, {objective.name: loss})), grads, rows

  return grad_fn


def update(state: ExampleState, rows: tuple[jax.Array, ExampleState]) -> ExampleState:
  """Writes the batch's new rows at their ids (after the optimizer's update)."""
  ids, new = rows
  return jax.tree.map(lambda whole, part: whole.at[ids].set(part), state, new)
