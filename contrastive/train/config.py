"""The run config: its trainer keys and defaults, and the checks made before anything runs.

A run config (`configs/*.py`, `get_config(arg)`) has these groups; `defaults()` holds the
trainer's own keys with their defaults, and each other group is checked by the part that owns
it (`data`: `contrastive.data.resolve_config`; `model`: `contrastive.models.make_model`;
`eval.tasks`: `contrastive.evaluate.check_tasks`):

    seed          int; parameter init and per-step randomness (`fold_in(key(seed), step)`)
    total_steps   int; the length of the run
    mesh          data, fsdp, tensor: mesh axis sizes (-1: the rest of the devices)
    data          the data pipeline; `data.batch_size` is the GLOBAL batch size
    model         the tower model
    loss          name (a key of `contrastive.losses.LOSSES`), block_size, side_inputs,
                  queue_size and momentum (moco), and the loss's own options
    optim         optimizer, schedule, clipping, accumulation, non-finite handling
    checkpoint    every_steps, keep, async_save, init_from (+ init_from_step, init_from_keys,
                  init_from_name)
    eval          every_steps, at_end, batch_size, report, tasks
    log           every_steps, progress, profile_start_step, profile_num_steps

`resolve(config)` fills the trainer defaults in, rejects unknown fields (naming the closest
known one), and checks values; `check_run` then checks the config against the model, the loss
and the mesh (modalities, bias, side inputs, queues, divisibility of the batch, the loss's
options) and returns the step's `StepConfig`. Both run before anything heavy, so a bad config
fails in a second with one line that names the field.

Config files and `key=value` overrides, from Python (`get_config`) and the command line
(`parse_flags`), are loaded by `contrastive.train.overrides`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import difflib
import math
from typing import Any

import jax
from jax.sharding import Mesh
import ml_collections
from ml_collections import config_dict
import numpy as np

from contrastive import data
from contrastive import evaluate
from contrastive import losses
from contrastive import models
from contrastive import parallel
from contrastive.train import step as step_lib

GROUPS = ("mesh", "data", "model", "loss", "optim", "checkpoint", "eval", "log")
TOP_LEVEL = ("seed", "total_steps") + GROUPS
NONFINITE = ("stop", "skip")
PROGRESS = ("auto", "bar", "lines")


def defaults() -> ml_collections.ConfigDict:
  """The trainer's keys with their defaults (`data`, `model` and `eval.tasks` are not here)."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.total_steps = config_dict.placeholder(int)  # required

  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))

  c.loss = ml_collections.ConfigDict()
  c.loss.name = "softmax"  # a key of contrastive.losses.LOSSES
  c.loss.block_size = config_dict.placeholder(int)  # ring tile size; None: the loss picks
  # Side data of the loss, {side_key: spec}; side_key is an argument the loss reads (its
  # `side_keys`). Two kinds of spec:
  #   {"batch_key": K}: batch[K] as it is, e.g. labels=dict(batch_key="meaning_id") for "supcon"
  #     (examples of the same meaning are positives of each other);
  #   {"modality": M, "batch_key": K}: batch[K] embedded by the tower of modality M first, e.g.
  #     neg_y=dict(modality="text", batch_key="hard_negatives") for "hard_negative".
  # A side key with no spec is read from the batch key of the same name.
  c.loss.side_inputs = ml_collections.ConfigDict()
  # Losses with a momentum encoder and a queue of its past keys (moco) only; see
  # contrastive/train/momentum.py. queue_size: keys per modality, a multiple of the devices of
  # the batch axes (MoCo: 65536); momentum: m of the key encoder's EMA (MoCo: 0.999).
  c.loss.queue_size = config_dict.placeholder(int)
  c.loss.momentum = config_dict.placeholder(float)
  # Any other key of `loss` is passed to the loss as a keyword option (e.g. label_smoothing).

  c.optim = ml_collections.ConfigDict()
  c.optim.name = "adamw"  # adamw | lamb | sgd
  c.optim.lr = 1e-3  # peak learning rate
  c.optim.schedule = "cosine"  # after warmup: cosine | linear | constant | rsqrt
  c.optim.warmup_steps = 0
  c.optim.end_lr = 0.0  # where cosine and linear end
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.eps = 1e-8
  c.optim.weight_decay = 0.0  # decoupled; kernels and embedding tables only
  c.optim.grad_clip_norm = config_dict.placeholder(float)  # None: no clipping
  c.optim.accum_steps = 1  # GradCache micro-batches per step (the result equals one big batch)
  c.optim.on_nonfinite = "stop"  # stop | skip: what a non-finite loss or gradient does

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every_steps = 1000  # also saved at the end and on preemption
  c.checkpoint.keep = 3  # the newest checkpoints kept
  c.checkpoint.async_save = True  # write in the background while training goes on
  c.checkpoint.init_from = config_dict.placeholder(str)  # a workdir to take parameters from
  c.checkpoint.init_from_step = config_dict.placeholder(int)  # None: its latest checkpoint
  c.checkpoint.init_from_keys = ()  # top-level parameter names to take (empty: all)
  # init_from may also be a checkpoint as downloaded (contrastive.train.pretrained); its
  # architecture name where the files do not give it (models.load_pretrained's name=).
  c.checkpoint.init_from_name = config_dict.placeholder(str)

  c.eval = ml_collections.ConfigDict()
  c.eval.every_steps = config_dict.placeholder(int)  # None: only at the end
  c.eval.at_end = True
  c.eval.batch_size = 256  # divisible by the devices of the batch axes
  c.eval.report = True  # PNG plots next to metrics.json
  c.eval.tasks = ml_collections.ConfigDict()  # {name: {kind, **options}}; empty: no evaluation

  c.log = ml_collections.ConfigDict()
  c.log.every_steps = 50  # TensorBoard scalars and the console line
  # auto: a tqdm bar in a terminal or a notebook (IPython), the progress line otherwise;
  # bar | lines: always that.
  c.log.progress = "auto"
  c.log.profile_start_step = config_dict.placeholder(int)  # jax.profiler trace from this step
  c.log.profile_num_steps = 5
  return c


def unknown_field(path: str, key: str, known: Sequence[str]) -> str:
  """The one-line message for field `key` that group `path` (`""`: the top) lacks: the closest
  known name, and the known ones."""
  where = f"{path}.{key}" if path else key
  close = difflib.get_close_matches(key, list(known), n=1)
  hint = f" Did you mean {(path + '.' if path else '') + close[0]!r}?" if close else ""
  return (
    f"Unknown config field {where!r}.{hint} Known fields"
    f"{' of ' + path if path else ''}: {sorted(known)}."
  )


def _known_error(path: str, key: str, known: Sequence[str]) -> ValueError:
  return ValueError(unknown_field(path, key, known))


def _merge(
  out: ml_collections.ConfigDict, given: Mapping[str, Any], path: str, *, open_keys: bool = False
) -> None:
  for key, value in given.items():
    if key not in out:
      if not open_keys:
        raise _known_error(path, key, list(out.keys()))
      out[key] = value
      continue
    if isinstance(out[key], ml_collections.ConfigDict) and key != "tasks":
      if not isinstance(value, Mapping | ml_collections.ConfigDict):
        raise ValueError(
          f"Config field {path + '.' if path else ''}{key} must be a group, got {value!r}."
        )
      _merge(out[key], value, f"{path}.{key}" if path else key)
    else:
      with out.ignore_type():
        out[key] = value


def resolve(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The config over the trainer defaults, checked.

  Returns:
    A new, unlocked `ConfigDict` with every trainer key (`data` and `model` as given).

  Raises:
    ValueError: an unknown field (with the closest known name), a missing `total_steps`, or a
      bad value (each message names the field and the allowed values).
  """
  given = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
  unknown = sorted(set(given) - set(TOP_LEVEL))
  if unknown:
    raise _known_error("", unknown[0], TOP_LEVEL)
  out = defaults()
  for key in ("data", "model"):
    if key not in given:
      raise ValueError(f"The config needs a {key!r} group.")
  out.data = ml_collections.ConfigDict(given.pop("data"))
  out.model = ml_collections.ConfigDict(given.pop("model"))
  loss = dict(given.pop("loss", {}))
  side_inputs = loss.pop("side_inputs", None) or {}
  _merge(out.loss, loss, "loss", open_keys=True)
  for side_key, spec in dict(side_inputs).items():
    out.loss.side_inputs[side_key] = ml_collections.ConfigDict(_side_input(side_key, spec))
  eval_tasks = dict(given.get("eval", {})).pop("tasks", None)
  if "eval" in given:
    given["eval"] = {k: v for k, v in given["eval"].items() if k != "tasks"}
  _merge(out, given, "")
  if eval_tasks is not None:
    out.eval.tasks = ml_collections.ConfigDict(eval_tasks)
  check_values(out)
  return out


def _side_input(side_key: str, spec: Any) -> dict[str, str]:
  """A checked `loss.side_inputs` entry: `{"batch_key"}` or `{"modality", "batch_key"}`."""
  where = f"loss.side_inputs.{side_key}"
  if not isinstance(spec, Mapping | ml_collections.ConfigDict):
    raise ValueError(f"{where} must be a group like dict(batch_key='meaning_id'), got {spec!r}.")
  spec = dict(spec)
  unknown = sorted(set(spec) - {"modality", "batch_key"})
  if unknown or "batch_key" not in spec:
    raise ValueError(
      f"{where} takes 'batch_key' (the batch array passed as it is) and optionally 'modality' "
      f"(embed it with that tower first), got {sorted(spec)}."
    )
  for key, value in spec.items():
    if not isinstance(value, str) or not value:
      raise ValueError(f"{where}.{key} must be a name, got {value!r}.")
  return spec


def _positive_int(value: Any, name: str, *, allow_none: bool = False) -> None:
  if value is None and allow_none:
    return
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(f"{name} must be a positive int, got {value!r}.")


def check_values(c: ml_collections.ConfigDict) -> None:
  """Checks the trainer's own values (not `data`, `model` or the tasks)."""
  if c.total_steps is None:
    raise ValueError("total_steps is required (e.g. --config.total_steps=1000).")
  _positive_int(c.total_steps, "total_steps")
  if isinstance(c.seed, bool) or not isinstance(c.seed, int) or c.seed < 0:
    raise ValueError(f"seed must be a non-negative int, got {c.seed!r}.")
  for axis in ("data", "fsdp", "tensor"):
    size = c.mesh[axis]
    if isinstance(size, bool) or not isinstance(size, int) or (size < 1 and size != -1):
      raise ValueError(f"mesh.{axis} must be a positive int or -1, got {size!r}.")
  if not isinstance(c.loss.name, str):
    raise ValueError(f"loss.name must be a loss name, got {c.loss.name!r}.")
  _positive_int(c.loss.block_size, "loss.block_size", allow_none=True)
  _positive_int(c.loss.queue_size, "loss.queue_size", allow_none=True)
  m = c.loss.momentum
  if m is not None and (
    isinstance(m, bool) or not isinstance(m, (int, float)) or not 0.0 <= m <= 1.0
  ):
    raise ValueError(f"loss.momentum must be a number in [0, 1], got {m!r}.")
  o = c.optim
  if not (isinstance(o.lr, (int, float)) and math.isfinite(o.lr) and o.lr >= 0):
    raise ValueError(f"optim.lr must be a finite number >= 0, got {o.lr!r}.")
  if (
    isinstance(o.warmup_steps, bool) or not isinstance(o.warmup_steps, int) or (o.warmup_steps < 0)
  ):
    raise ValueError(f"optim.warmup_steps must be an int >= 0, got {o.warmup_steps!r}.")
  _positive_int(o.accum_steps, "optim.accum_steps")
  if o.on_nonfinite not in NONFINITE:
    raise ValueError(
      f"optim.on_nonfinite must be one of {list(NONFINITE)}, got {o.on_nonfinite!r}."
    )
  if o.weight_decay < 0:
    raise ValueError(f"optim.weight_decay must be >= 0, got {o.weight_decay!r}.")
  _positive_int(c.checkpoint.every_steps, "checkpoint.every_steps")
  _positive_int(c.checkpoint.keep, "checkpoint.keep")
  _positive_int(c.checkpoint.init_from_step, "checkpoint.init_from_step", allow_none=True)
  _positive_int(c.eval.every_steps, "eval.every_steps", allow_none=True)
  _positive_int(c.eval.batch_size, "eval.batch_size")
  _positive_int(c.log.every_steps, "log.every_steps")
  if c.log.progress not in PROGRESS:
    raise ValueError(f"log.progress must be one of {list(PROGRESS)}, got {c.log.progress!r}.")
  if c.log.profile_start_step is not None:
    if isinstance(c.log.profile_start_step, bool) or c.log.profile_start_step < 0:
      raise ValueError(f"log.profile_start_step must be >= 0, got {c.log.profile_start_step!r}.")
  _positive_int(c.log.profile_num_steps, "log.profile_num_steps")


LOSS_TRAINER_KEYS = ("name", "block_size", "side_inputs", "queue_size", "momentum")


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
  given = {spec.side_key for spec in side_inputs} | ({"queue"} if queue_size else set())
  options = loss_options(config.loss)
  _trace_loss(
    objective, options, mesh, modalities, model.embed_dim, config.loss.block_size, queue_size
  )
  step_config = step_lib.StepConfig(
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
  )
  step_lib.check_step_config(objective, step_config)
  return step_config


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
  config: ml_collections.ConfigDict, model: models.TowerModel, objective: losses.Objective
) -> tuple[step_lib.SideInput, ...]:
  """`loss.side_inputs` checked against the loss and the model."""
  out = []
  for side_key, spec in config.items():
    if side_key not in objective.side_keys:
      raise ValueError(
        f"loss.side_inputs names {side_key!r}, which loss {objective.name!r} does "
        f"not read; it reads {list(objective.side_keys) or 'no side data'}."
      )
    if objective.momentum_queue and side_key == "queue":
      raise ValueError(
        f"loss.side_inputs names 'queue': loss {objective.name!r} gets its queue "
        "from the trainer (loss.queue_size), not from the batch."
      )
    modality = spec.get("modality")
    if modality is not None and modality not in model.modalities:
      raise ValueError(
        f"loss.side_inputs.{side_key}.modality is {modality!r}; the model's "
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


def _trace_loss(objective, options, mesh, modalities, embed_dim, block_size, queue_size) -> None:
  """Traces the loss once on abstract inputs, so a bad option fails now and says so."""
  n = parallel.batch_shards(mesh)
  emb = [jax.ShapeDtypeStruct((2 * n, embed_dim), np.float32)] * len(modalities)
  side = {k: jax.ShapeDtypeStruct((2 * n,), np.int32) for k in objective.side_keys}
  batch_side_keys = tuple(objective.side_keys)
  if queue_size is not None:
    side["queue"] = jax.ShapeDtypeStruct((queue_size, embed_dim), np.float32)
    batch_side_keys = tuple(k for k in batch_side_keys if k != "queue")
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
  except Exception:  # noqa: BLE001  (side data of other shapes: checked on the real batch)
    if not batch_side_keys:
      raise


def parse_arg(arg: str | None, **spec: Any) -> ml_collections.ConfigDict:
  """Parses a config file's one-string argument, `"key=value,key2=value2"` (big_vision style).

  The keyword defaults fix both each key's default and its type (`bool` accepts `True`/`False`,
  `1`/`0`); a key not among them fails with the known ones. A bare word `name` sets the bool key
  `name` to True (`configs/demo.py:runlocal`).

  Example:
    >>> arg = parse_arg("batch_size=64,runlocal", batch_size=256, runlocal=False)
    >>> arg.batch_size, arg.runlocal
    (64, True)
  """
  out = ml_collections.ConfigDict(dict(spec))
  if not arg:
    return out
  for item in str(arg).split(","):
    item = item.strip()
    if not item:
      continue
    key, eq, value = item.partition("=")
    key = key.strip()
    if key not in spec:
      close = difflib.get_close_matches(key, list(spec), n=1)
      hint = f" Did you mean {close[0]!r}?" if close else ""
      raise ValueError(f"Unknown config argument {key!r}.{hint} Known: {sorted(spec)}.")
    default = spec[key]
    if not eq:
      if not isinstance(default, bool):
        raise ValueError(f"Config argument {key!r} needs a value ({key}=...).")
      out[key] = True
      continue
    value = value.strip()
    if isinstance(default, bool):
      if value.lower() not in ("true", "false", "1", "0"):
        raise ValueError(f"Config argument {key!r} is a bool (True/False), got {value!r}.")
      out[key] = value.lower() in ("true", "1")
    elif isinstance(default, int):
      out[key] = int(value)
    elif isinstance(default, float):
      out[key] = float(value)
    else:
      out[key] = value
  return out
