"""A run's train state and train step, built from its config: what `train_and_evaluate` runs and
`compile_for` compiles, built once for both."""

from __future__ import annotations

from jax.sharding import Mesh
import ml_collections

from contrastive import losses
from contrastive import models
from contrastive import parallel
from contrastive.train import example_state
from contrastive.train import optimizer as optimizer_lib
from contrastive.train import state as state_lib
from contrastive.train import step as step_lib
from contrastive.train import teachers
from contrastive.train import terms as terms_lib


def create_train_state(
  config: ml_collections.ConfigDict,
  model: models.TowerModel,
  mesh: Mesh,
  *,
  materialize: bool = True,
  terms: tuple = (),
):
  """`(state, shardings, tx)` of `state.create_train_state` with the run's optimizer, for a
  momentum-queue loss its queues (`loss.queue_size`, set only for such a loss by `check_run`),
  and the teachers of the teacher `terms` (`StepConfig.terms`). `materialize=False`: abstract
  arrays, for a restore or a compile."""
  total_steps = int(config.total_steps)

  def make_tx(params):
    return optimizer_lib.make_optimizer(
      config.optim, params, total_steps=total_steps, locked=model.locked
    )[0]

  queue_size = config.loss.queue_size
  per_example = {}
  if losses.get(config.loss.name).example_state:  # isogclr: a row per training example
    per_example = dict(
      example_state_size=example_state.dataset_size(config.data),
      tau_init=example_state.options(dict(config.loss)).tau_init,
    )
  return state_lib.create_train_state(
    model,
    make_tx,
    mesh,
    seed=config.seed,
    materialize=materialize,
    queue_size=queue_size,
    queue_sharding=parallel.batch_sharding(mesh) if queue_size else None,
    terms=terms,
    teacher_models=teachers.teacher_models(terms, model),
    ema=config.optim.ema_decay is not None,
    **per_example,
  )


def batch_keys(step_config: step_lib.StepConfig) -> tuple[str, ...]:
  """The batch arrays the step reads: modalities, and every ring term's side keys and side
  inputs' batch keys."""
  keys = list(step_config.modalities) + list(step_config.side_keys)
  keys += [spec.batch_key for spec in step_config.side_inputs]
  for term in step_config.terms:
    if isinstance(term, terms_lib.RingTerm):
      keys += list(term.side_keys) + [spec.batch_key for spec in term.side_inputs]
  return tuple(dict.fromkeys(keys))


def make_train_step(
  config: ml_collections.ConfigDict,
  model: models.TowerModel,
  objective: losses.Objective,
  tx,
  mesh: Mesh,
  shardings: state_lib.TrainState,
  step_config: step_lib.StepConfig,
):
  """`step.make_train_step` with the run's learning-rate schedule and every batch key sharded
  over the batch axes."""
  batch_sharding = parallel.batch_sharding(mesh)
  return step_lib.make_train_step(
    model,
    objective,
    tx,
    optimizer_lib.learning_rate_schedule(config.optim, int(config.total_steps)),
    mesh,
    shardings,
    {k: batch_sharding for k in batch_keys(step_config)},
    step_config,
    teachers.teacher_models(step_config.terms, model),
  )
