"""The train state and where each of its arrays lives on the mesh.

`TrainState` is a plain pytree (step, params, optimizer state, count of skipped steps, and the
state of a loss that keeps one) with no functions inside, so orbax saves and restores it as is.
`create_train_state` builds it directly in its sharding: parameters laid out by the logical axis
rules (`contrastive.parallel`), the optimizer's moments like the parameters they follow,
counters replicated; a momentum-queue loss's state as `contrastive.train.momentum` says.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import optax

from contrastive import parallel
from contrastive.train import example_state
from contrastive.train import momentum
from contrastive.train import teachers
from contrastive.train import terms as terms_lib


@flax.struct.dataclass
class TrainState:
  """Everything a resumed run needs besides the data iterator.

  Attributes:
    step: int32 scalar, the number of train steps taken (the next step's number).
    params: the model parameters (float32).
    opt_state: the optax state; locked (LiT) parameters have none.
    skipped: int32 scalar, steps whose update was skipped for a non-finite loss or gradient.
    loss_state: the loss's own state, None for most losses; a `momentum.MomentumState` (key
      encoder and queues) for a momentum-queue loss (`moco`); an `example_state.ExampleState`
      (a temperature and moving averages per training example) for `isogclr`.
    teachers: the parameters of the teacher terms' teachers, `{term_name: params}`
      (`contrastive.train.teachers`); None without teacher terms.
    ema_params: the exponential moving average of `params` (`optim.ema_decay`), updated after
      each applied step; None without one.
  """

  step: jax.Array
  params: Any
  opt_state: Any
  skipped: jax.Array
  loss_state: Any = None
  teachers: Any = None
  ema_params: Any = None


def _path(path) -> tuple[str, ...]:
  return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def follow_params(
  abstract_tree: Any, abstract_params: Any, param_shardings: Any, mesh: Mesh
) -> Any:
  """Shardings for an optimizer state: a leaf whose path ends with a parameter's path and has
  its shape gets that parameter's sharding; every other leaf (counts, factored moments) is
  replicated."""
  by_path = {}
  for (path, leaf), sharding in zip(
    jax.tree_util.tree_flatten_with_path(abstract_params)[0],
    jax.tree.leaves(param_shardings, is_leaf=lambda x: isinstance(x, NamedSharding)),
  ):
    by_path[_path(path)] = (leaf.shape, sharding)
  replicated = NamedSharding(mesh, P())
  max_len = max((len(p) for p in by_path), default=0)

  def pick(path, leaf):
    keys = _path(path)
    for n in range(min(len(keys), max_len), 0, -1):
      hit = by_path.get(keys[-n:])
      if hit is not None and hit[0] == leaf.shape:
        return hit[1]
    return replicated

  return jax.tree_util.tree_map_with_path(pick, abstract_tree)


def abstract_state(state_or_shapes: Any, shardings: Any) -> Any:
  """`jax.ShapeDtypeStruct`s with shardings, the target orbax restores into."""
  return jax.tree.map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state_or_shapes, shardings
  )


def create_train_state(
  model: nn.Module,
  make_tx: Callable[[Any], optax.GradientTransformation],
  mesh: Mesh,
  *,
  seed: int,
  materialize: bool = True,
  queue_size: int | None = None,
  queue_sharding: NamedSharding | None = None,
  terms: Sequence[terms_lib.Term] = (),
  teacher_models: Mapping[str, nn.Module] | None = None,
  ema: bool = False,
  example_state_size: int | None = None,
  tau_init: float | None = None,
) -> tuple[TrainState, TrainState, Any]:
  """Initializes the model and optimizer with every array created in its final sharding.

  Args:
    model: the `TowerModel` (its `init(rng, model.dummy_batch(n), train=False)` makes the
      variables).
    make_tx: `abstract_params -> optax transformation` (it reads only structure and names).
    mesh: the mesh.
    seed: the init seed (`jax.random.key(seed)`).
    materialize: False returns the state as `jax.ShapeDtypeStruct`s with shardings (the target
      of a restore) without computing anything.
    queue_size: for a momentum-queue loss (`moco`), the keys each modality's queue holds: the
      state then carries a `momentum.MomentumState`; None: no loss state.
    queue_sharding: with `queue_size`, where the queues live (the batch's sharding).
    terms: the objective's terms; those with a teacher get their teacher's parameters in the
      state's `teachers` (`contrastive.train.teachers.init`), laid out by their models'
      logical axes.
    teacher_models: `{term_name: model}` of those teachers (`teachers.teacher_models`).
    ema: keep an EMA of the parameters (`ema_params`, starting as a copy, laid out like them).
    example_state_size: for a per-example state loss (`isogclr`), the examples `n` of its
      `example_state.ExampleState` (replicated), its temperatures at `tau_init`; None: none.

  Returns:
    `(state, shardings, tx)`: the `TrainState` (initialized, or abstract), a `TrainState` of
    `NamedSharding`s with its structure, and the optimizer.
  """
  if (queue_size is None) != (queue_sharding is None):
    raise ValueError("create_train_state: give both queue_size and queue_sharding, or neither.")
  rng = jax.random.key(seed)
  init = lambda: model.init(rng, model.dummy_batch(1), train=False)
  abstract_vars = jax.eval_shape(init)
  param_shardings = parallel.logical_shardings(abstract_vars, mesh)["params"]
  abstract_params = nn.unbox(abstract_vars)["params"]
  tx = make_tx(abstract_params)
  abstract_opt = jax.eval_shape(tx.init, abstract_params)
  replicated = NamedSharding(mesh, P())
  shardings = TrainState(
    step=replicated,
    params=param_shardings,
    opt_state=follow_params(abstract_opt, abstract_params, param_shardings, mesh),
    skipped=replicated,
  )
  if queue_size is not None:
    shardings = shardings.replace(
      loss_state=momentum.state_shardings(param_shardings, model.modalities, queue_sharding)
    )
  if ema:
    shardings = shardings.replace(ema_params=param_shardings)
  if example_state_size is not None:
    shardings = shardings.replace(loss_state=example_state.state_shardings(mesh, model.modalities))
  teacher_models = dict(teacher_models or {})
  if teacher_models:
    shardings = shardings.replace(
      teachers={
        name: param_shardings
        if teacher is model
        else parallel.logical_shardings(
          jax.eval_shape(lambda t=teacher: t.init(rng, t.dummy_batch(1), train=False)), mesh
        )["params"]
        for name, teacher in teacher_models.items()
      }
    )

  def create() -> TrainState:
    params = nn.unbox(init())["params"]
    loss_state = None
    if queue_size is not None:
      loss_state = momentum.init_state(
        params,
        model.modalities,
        queue_size=queue_size,
        embed_dim=model.embed_dim,
        key=jax.random.fold_in(rng, 1),
      )
    if example_state_size is not None:
      loss_state = example_state.init_state(model.modalities, example_state_size, tau_init)
    return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      opt_state=tx.init(params),
      skipped=jnp.zeros((), jnp.int32),
      loss_state=loss_state,
      teachers=teachers.init(terms, teacher_models, params, jax.random.fold_in(rng, 2)),
      ema_params=jax.tree.map(jnp.copy, params) if ema else None,
    )

  if not materialize:
    return abstract_state(jax.eval_shape(create), shardings), shardings, tx
  state = jax.jit(create, out_shardings=shardings)()
  return state, shardings, tx
