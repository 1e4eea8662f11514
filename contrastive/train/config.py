"""A resolved run config checked against its model, loss and mesh, before anything runs.

`contrastive.run.config` holds the run config's groups, the trainer's keys and their defaults,
and `resolve`; here `check_run` checks what only the built parts can tell (modalities, bias,
side inputs, queues, divisibility of the batch, the loss's options) and returns the step's
`StepConfig`, so a bad config fails in a second with one line that names the field.
"""

from __future__ import annotations

from typing import Any

import jax
from jax.sharding import Mesh
import ml_collections
import numpy as np

from contrastive import data
from contrastive import evaluate
from contrastive import losses
from contrastive import models
from contrastive import parallel
from contrastive.losses import gap_tools
from contrastive.run import config as run_config
from contrastive.train import example_state
from contrastive.train import step as step_lib
from contrastive.train import teachers
from contrastive.train import terms as terms_lib

LOSS_TRAINER_KEYS = (
  "name",
  "weight",
  "terms",
  "block_size",
  "side_inputs",
  "queue_size",
  "momentum",
  *gap_tools.CONFIG_KEYS,  # the modality-gap tools, applied by the step (GapTools)
)


def loss_options(loss: ml_collections.ConfigDict) -> dict[str, Any]:
  """The keyword options `config.loss` passes to the loss (all but the trainer's keys)."""
  return {k: v for k, v in loss.items() if k not in LOSS_TRAINER_KEYS}


def check_batch(
  *, batch_size: int, shards: int, accum_steps: int, what: str = "data.batch_size"
) -> None:
  """The global batch must split over the devices of the batch axes, per micro-batch too."""
  if batch_size % shards:
    raise ValueError(
      f"The global batch {what}={batch_size} is not divisible by the {shards} devices of the "
      f"mesh's batch axes (data x fsdp); use a multiple of {shards}."
    )
  if batch_size % (shards * accum_steps):
    raise ValueError(
      f"With optim.accum_steps={accum_steps}, the global batch {what}={batch_size} must be "
      f"divisible by {shards} devices x {accum_steps} micro-batches = {shards * accum_steps}."
    )


def check_run(
  config: ml_collections.ConfigDict,
  *,
  model: models.TowerModel,
  objective: losses.Objective,
  mesh: Mesh,
) -> step_lib.StepConfig:
  """Checks a resolved config against its model, loss and mesh; returns the step's config.

  Everything that can be wrong with a run and is known before its first batch fails here, each
  with one line naming the field: the data config, the evaluation tasks, the loss against the
  model (modalities, a learnable bias), `loss.side_inputs`, the momentum queue of `moco`, the
  loss's options (the loss is traced once on abstract inputs), and the train and eval batches
  against the devices of the mesh's batch axes and `optim.accum_steps`.

  Args:
    config: a config from `resolve`.
    model: `models.make_model(config.model)`.
    objective: `losses.get(config.loss.name)`.
    mesh: the run's mesh.

  Returns:
    The `StepConfig` of `contrastive.train.step.make_train_step`.

  Raises:
    ValueError, FileNotFoundError: the first problem found.
  """
  data_config = data.resolve_config(config.data)
  modalities = _modalities(model, objective)
  if config.eval.tasks:
    evaluate.check_tasks(config.eval.tasks)
    captions = [n for n, t in config.eval.tasks.items() if t.get("kind") == "caption"]
    if captions and not getattr(model, "has_decoder", False):
      raise ValueError(
        f"eval.tasks.{captions[0]} is a caption task, and the model has no captioning decoder "
        "(model.decoder)."
      )
  shards = parallel.batch_shards(mesh)
  check_batch(
    batch_size=data_config.batch_size, shards=shards, accum_steps=config.optim.accum_steps
  )
  if config.eval.tasks:
    check_batch(
      batch_size=config.eval.batch_size, shards=shards, accum_steps=1, what="eval.batch_size"
    )
  side_inputs = _side_inputs(config.loss.side_inputs, model, objective)
  queue_size, momentum = _momentum(config.loss, objective, shards)
  # The momentum step gives a momentum-queue loss its queue and a PRNG key (mochi's mixing).
  given = {spec.side_key for spec in side_inputs} | ({"queue", "rng"} if queue_size else set())
  state_size = None
  if objective.example_state:  # isogclr: its state's rows are side data, its size the source's
    example_state.options(loss_options(config.loss))
    state_size = example_state.dataset_size(config.data)
    given |= set(losses.isogclr.ISOGCLR_STATE_KEYS)
  options = loss_options(config.loss)
  _trace_loss(
    objective, options, mesh, modalities, model.embed_dim, config.loss.block_size, queue_size
  )
  terms = tuple(
    _term(name, spec, model, mesh, config.loss.block_size, taken=objective.name)
    for name, spec in config.loss.terms.items()
  )
  teachers.teacher_models(terms, model)  # a teacher that does not fit fails now
  # A momentum encoder with GradCache fails here (`StepConfig` checks itself).
  return step_lib.StepConfig(
    modalities=modalities,
    side_keys=tuple(k for k in objective.side_keys if k not in given),
    side_inputs=side_inputs,
    loss_options=options,
    block_size=config.loss.block_size,
    accum_steps=config.optim.accum_steps,
    max_scale=model.max_scale,
    on_nonfinite=config.optim.on_nonfinite,
    seed=config.seed,
    momentum=momentum,
    weight=float(config.loss.weight),
    terms=terms,
    ema_decay=config.optim.ema_decay,
    gap_tools=gap_tools.GapTools.from_config(config.loss, int(config.total_steps)),
    example_state_size=state_size,
  )


def _term(name, spec, model, mesh, block_size, *, taken: str) -> terms_lib.Term:
  """One `loss.terms` entry, checked against the model as the first term is."""
  where = f"loss.terms.{name}"
  if name == taken:
    raise ValueError(
      f"{where}: the first term (loss.name) is already called {taken!r}; name this one otherwise."
    )
  spec = dict(spec)
  if spec["name"] == terms_lib.CAPTION:
    if not getattr(model, "has_decoder", False):
      raise ValueError(
        f"{where} is a caption term, and the model has no captioning decoder (model.decoder); "
        "see configs/coca.py."
      )
    return terms_lib.caption_term(name, spec)
  try:
    objective = losses.get(spec["name"])
  except ValueError as e:
    raise ValueError(
      f"{where}.name: {e}{run_config.did_you_mean(spec['name'], losses.LOSSES)}"
    ) from None
  if objective.momentum_queue:
    raise ValueError(f"{where}: a momentum-queue loss ({objective.name!r}) is a run's only term.")
  modalities = _modalities(model, objective)
  teacher = terms_lib.teacher_of(name, spec, objective)
  side_inputs = _side_inputs(
    ml_collections.ConfigDict(dict(spec.get("side_inputs") or {})), model, objective, where=where
  )
  given = {s.side_key for s in side_inputs} | (set(terms_lib.TEACHER_SIDE) if teacher else set())
  options = terms_lib.split_options(spec)
  teacher_keys = terms_lib.TEACHER_SIDE if teacher else ()
  _trace_loss(objective, options, mesh, modalities, model.embed_dim, block_size, None, teacher_keys)
  return terms_lib.RingTerm(
    name=name,
    objective=objective,
    weight=float(spec.get("weight", 1.0)),
    side_keys=tuple(k for k in objective.side_keys if k not in given),
    side_inputs=side_inputs,
    options=options,
    teacher=teacher,
  )


def _modalities(model: models.TowerModel, objective: losses.Objective) -> tuple[str, ...]:
  modalities = tuple(model.modalities)
  if objective.modalities is not None and len(modalities) != objective.modalities:
    raise ValueError(
      f"Loss {objective.name!r} takes {objective.modalities} modalities, but the model has "
      f"{len(modalities)}: {list(modalities)}."
    )
  if objective.uses_bias and model.bias_init is None:
    raise ValueError(
      f"Loss {objective.name!r} needs a learnable logit bias, and the model has none; set "
      f"model.convention='{objective.init}' (or model.bias_init)."
    )
  return modalities


def _side_inputs(
  config: ml_collections.ConfigDict,
  model: models.TowerModel,
  objective: losses.Objective,
  *,
  where: str = "loss",
) -> tuple[step_lib.SideInput, ...]:
  """`loss.side_inputs` (or a term's, `where`) checked against the loss and the model."""
  out = []
  for side_key, spec in config.items():
    if side_key not in objective.side_keys:
      raise ValueError(
        f"{where}.side_inputs names {side_key!r}, which loss {objective.name!r} does "
        f"not read; it reads {list(objective.side_keys) or 'no side data'}."
      )
    if objective.momentum_queue and side_key == "queue":
      raise ValueError(
        f"{where}.side_inputs names 'queue': loss {objective.name!r} gets its queue "
        "from the trainer (loss.queue_size), not from the batch."
      )
    modality = spec.get("modality")
    if modality is not None and modality not in model.modalities:
      raise ValueError(
        f"{where}.side_inputs.{side_key}.modality is {modality!r}; the model's "
        f"modalities are {list(model.modalities)}."
      )
    out.append(step_lib.SideInput(side_key, modality, spec.batch_key))
  return tuple(out)


def _momentum(
  loss: ml_collections.ConfigDict, objective: losses.Objective, shards: int
) -> tuple[int | None, float | None]:
  """`(queue_size, momentum)` of a momentum-queue loss (`moco`), checked; `(None, None)` for
  other losses, which must not set them."""
  if not objective.momentum_queue:
    for key in ("queue_size", "momentum"):
      if loss[key] is not None:
        raise ValueError(
          f"loss.{key}={loss[key]!r} is set, but loss {objective.name!r} keeps no "
          "momentum encoder or queue (those are for: "
          f"{[n for n, o in losses.LOSSES.items() if o.momentum_queue]})."
        )
    return None, None
  if loss.queue_size is None or loss.momentum is None:
    raise ValueError(
      f"Loss {objective.name!r} needs loss.queue_size (the keys each modality's "
      "queue holds; MoCo: 65536) and loss.momentum (of the key encoder's EMA; "
      f"MoCo: 0.999); got {loss.queue_size!r} and {loss.momentum!r}."
    )
  if loss.queue_size % shards:
    raise ValueError(
      f"loss.queue_size={loss.queue_size} must be divisible by the {shards} "
      "devices of the mesh's batch axes (the queue is split over them)."
    )
  return int(loss.queue_size), float(loss.momentum)


def _trace_loss(
  objective, options, mesh, modalities, embed_dim, block_size, queue_size, embedded=()
) -> None:
  """Traces the loss once on abstract inputs, so a bad option fails now and says so.

  Side data is traced as `[batch]` ids, except the `embedded` keys (a teacher's embeddings):
  `[batch, embed_dim]` floats."""
  n = parallel.batch_shards(mesh)
  emb = [jax.ShapeDtypeStruct((2 * n, embed_dim), np.float32)] * len(modalities)
  side = {k: jax.ShapeDtypeStruct((2 * n,), np.int32) for k in objective.side_keys}
  side.update({k: jax.ShapeDtypeStruct((2 * n, embed_dim), np.float32) for k in embedded})
  batch_side_keys = tuple(objective.side_keys)
  if queue_size is not None:
    side["queue"] = jax.ShapeDtypeStruct((queue_size, embed_dim), np.float32)
    side["rng"] = jax.eval_shape(jax.random.key, 0)  # as the momentum step passes it
    batch_side_keys = tuple(k for k in batch_side_keys if k not in ("queue", "rng"))
  scalar = jax.ShapeDtypeStruct((), np.float32)
  fn = parallel.shard_loss(objective, mesh, parallel.batch_axes(mesh))
  try:
    jax.eval_shape(
      lambda e, s, b: fn(e, s, b, side, block_size=block_size, **options),
      emb,
      scalar,
      scalar if objective.uses_bias else None,
    )
  except TypeError as e:
    raise ValueError(
      f"Bad option for loss {objective.name!r} in config.loss ({sorted(options)}): {e}"
    ) from e
  except Exception:
    if not batch_side_keys:
      raise
