"""`train_and_evaluate(config, workdir)`: the one trainer every recipe runs.

The pieces, in order: check the config (unknown fields, the loss name, the data source, the
batch against the mesh) before anything heavy; build the mesh, the model, the data iterator and
the train state in its sharding; restore the latest checkpoint of `workdir` if there is one
(state and data iterator); then loop: fetch a batch, run the jitted step, check the previous
step's loss, log, checkpoint, evaluate.

What a run leaves in `workdir`:

    config.json           the resolved config (every default filled in)
    checkpoints/{step}/   train state + data iterator (orbax), the newest `checkpoint.keep`
    tensorboard/          train/* and eval/* scalars
    eval/                 metrics.json, history.jsonl and the report's PNGs (contrastive.evaluate)
    profile/              a jax.profiler trace, when `log.profile_start_step` is set

Non-finite losses. The step never applies an update whose loss or gradient norm is not finite
(the state stays as it was). With `optim.on_nonfinite="stop"` the loop then waits for the
checkpoints in flight and raises `NonFiniteLossError`, so the latest checkpoint is the last good
state; with `"skip"` it logs the step and goes on (`train/skipped_steps` counts them).

Preemption. On SIGTERM (a single process) or JAX's preemption notice (several processes, all at
the same step), the loop saves a checkpoint at the current step and returns; rerunning the same
command resumes there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import math
import os
import signal
import threading
import time
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from contrastive import data
from contrastive import evaluate
from contrastive import losses
from contrastive import models
from contrastive import parallel
from contrastive.train import checkpoint as checkpoint_lib
from contrastive.train import config as config_lib
from contrastive.train import evaluation
from contrastive.train import metrics as metrics_lib
from contrastive.train import momentum as momentum_lib
from contrastive.train import optimizer as optimizer_lib
from contrastive.train import state as state_lib
from contrastive.train import step as step_lib

Progress = Callable[[str], None]


class NonFiniteLossError(FloatingPointError):
  """A train step produced a non-finite loss or gradient (with `optim.on_nonfinite="stop"`)."""


def _log_progress(line: str) -> None:
  logging.info("%s", line)


def _modalities(model: models.TowerModel, objective: losses.Objective) -> tuple[str, ...]:
  modalities = tuple(model.modalities)
  if objective.modalities is not None and len(modalities) != objective.modalities:
    raise ValueError(
        f"Loss {objective.name!r} takes {objective.modalities} modalities, but the model has "
        f"{len(modalities)}: {list(modalities)}.")
  if objective.uses_bias and model.bias_init is None:
    raise ValueError(
        f"Loss {objective.name!r} needs a learnable logit bias, and the model has none; set "
        f"model.convention='{objective.init}' (or model.bias_init).")
  return modalities


def _side_inputs(config: ml_collections.ConfigDict, model: models.TowerModel,
                 objective: losses.Objective) -> tuple[step_lib.SideInput, ...]:
  """`loss.side_inputs` checked against the loss and the model."""
  out = []
  for side_key, spec in config.items():
    if side_key not in objective.side_keys:
      raise ValueError(f"loss.side_inputs names {side_key!r}, which loss {objective.name!r} does "
                       f"not read; it reads {list(objective.side_keys) or 'no side data'}.")
    if objective.momentum_queue and side_key == "queue":
      raise ValueError(f"loss.side_inputs names 'queue': loss {objective.name!r} gets its queue "
                       "from the trainer (loss.queue_size), not from the batch.")
    modality = spec.get("modality")
    if modality is not None and modality not in model.modalities:
      raise ValueError(f"loss.side_inputs.{side_key}.modality is {modality!r}; the model's "
                       f"modalities are {list(model.modalities)}.")
    out.append(step_lib.SideInput(side_key, modality, spec.batch_key))
  return tuple(out)


def _momentum(config: ml_collections.ConfigDict, objective: losses.Objective, shards: int
              ) -> tuple[int | None, float | None]:
  """`(queue_size, momentum)` of a momentum-queue loss (`moco`), checked; `(None, None)` for
  other losses, which must not set them."""
  loss = config.loss
  if not objective.momentum_queue:
    for key in ("queue_size", "momentum"):
      if loss[key] is not None:
        raise ValueError(f"loss.{key}={loss[key]!r} is set, but loss {objective.name!r} keeps no "
                         "momentum encoder or queue (those are for: "
                         f"{[n for n, o in losses.LOSSES.items() if o.momentum_queue]}).")
    return None, None
  if loss.queue_size is None or loss.momentum is None:
    raise ValueError(f"Loss {objective.name!r} needs loss.queue_size (the keys each modality's "
                     "queue holds; MoCo: 65536) and loss.momentum (of the key encoder's EMA; "
                     f"MoCo: 0.999); got {loss.queue_size!r} and {loss.momentum!r}.")
  if loss.queue_size % shards:
    raise ValueError(f"loss.queue_size={loss.queue_size} must be divisible by the {shards} "
                     "devices of the mesh's batch axes (the queue is split over them).")
  if config.optim.accum_steps != 1:
    raise ValueError(f"Loss {objective.name!r} (a momentum encoder with queues) does not combine "
                     "with GradCache accumulation: set optim.accum_steps=1, got "
                     f"{config.optim.accum_steps}.")
  return int(loss.queue_size), float(loss.momentum)


def _check_loss_options(objective, options, mesh, modalities, side_keys, embed_dim,
                        block_size, queue_size=None) -> None:
  """Traces the loss once on abstract inputs, so a bad option fails now and says so."""
  n = step_lib.num_batch_shards(mesh)
  emb = [jax.ShapeDtypeStruct((2 * n, embed_dim), np.float32)] * len(modalities)
  side = {k: jax.ShapeDtypeStruct((2 * n,), np.int32) for k in side_keys}
  if queue_size is not None:
    side["queue"] = jax.ShapeDtypeStruct((queue_size, embed_dim), np.float32)
    side_keys = tuple(k for k in side_keys if k != "queue")
  scalar = jax.ShapeDtypeStruct((), np.float32)
  fn = parallel.shard_loss(objective, mesh, step_lib.batch_axes(mesh))
  try:
    jax.eval_shape(lambda e, s, b: fn(e, s, b, side, block_size=block_size, **options),
                   emb, scalar, scalar if objective.uses_bias else None)
  except TypeError as e:
    raise ValueError(f"Bad option for loss {objective.name!r} in config.loss "
                     f"({sorted(options)}): {e}") from e
  except Exception:  # noqa: BLE001  (side data of other shapes: checked on the real batch)
    if not side_keys:
      raise


def _save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  if jax.process_index() != 0:
    return
  path = os.path.join(workdir, "config.json")
  with open(path + ".tmp", "w") as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True))
  os.replace(path + ".tmp", path)


def _init_from(state: state_lib.TrainState, shardings: state_lib.TrainState,
               config: ml_collections.ConfigDict) -> state_lib.TrainState:
  """The state with (some of) its parameters taken from another run's checkpoint."""
  loaded, step = checkpoint_lib.restore_params(config.checkpoint.init_from,
                                               step=config.checkpoint.init_from_step)
  keys = tuple(config.checkpoint.init_from_keys) or tuple(loaded)
  params = dict(state.params)
  for key in keys:
    if key not in loaded or key not in params:
      raise ValueError(f"checkpoint.init_from_keys names {key!r}; the checkpoint has "
                       f"{sorted(loaded)} and the model {sorted(params)}.")
    want = jax.tree.map(lambda x: x.shape, params[key])
    got = jax.tree.map(lambda x: x.shape, loaded[key])
    if jax.tree.structure(want) != jax.tree.structure(got) or want != got:
      raise ValueError(f"Parameters {key!r} of {config.checkpoint.init_from} (step {step}) do not "
                       f"fit the model: shapes {got} vs {want}.")
    params[key] = jax.device_put(jax.tree.map(np.asarray, loaded[key]), shardings.params[key])
  logging.info("Initialized %s from %s, step %d.", list(keys), config.checkpoint.init_from, step)
  state = state.replace(params=params)
  if isinstance(state.loss_state, momentum_lib.MomentumState):  # the key encoder starts as a copy
    state = state.replace(loss_state=state.loss_state.replace(
        params=jax.tree.map(jnp.copy, params)))
  return state


class _Stop:
  """SIGTERM (or SIGINT) in a single-process run: finish the step, save, return."""

  def __init__(self):
    self.requested = False
    self._old = {}
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM,):
        self._old[sig] = signal.signal(sig, self._handle)

  def _handle(self, signum, frame):
    del frame
    logging.warning("Signal %d received: saving a checkpoint after this step.", signum)
    self.requested = True

  def restore(self) -> None:
    for sig, old in self._old.items():
      signal.signal(sig, old)


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
  host = jax.device_get(dict(metrics))
  return {f"train/{k}": float(v) for k, v in host.items() if k != "finite"}


def _headline(eval_metrics: Mapping[str, float]) -> str:
  keys = [k for k in eval_metrics if k.endswith(("/top1", "/accuracy", "recall@1", "/rsum"))]
  keys = [k for k in keys if "/seen/" not in k and "/heldout/" not in k] or keys
  return ", ".join(f"{k} {eval_metrics[k]:.3f}" for k in sorted(keys)[:12])


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike, *,
                       progress: Progress | None = None) -> dict[str, float]:
  """Trains (resuming from `workdir` if it holds checkpoints), evaluating at intervals.

  Args:
    config: a run config (see `contrastive.train.config`).
    workdir: the run's directory; created if missing.
    progress: called with the progress line every `log.every_steps` steps and with the closing
      summary (the CLI prints; the default logs).

  Returns:
    The last train scalars (`train/...`) and, if an evaluation ran, its metrics (`eval/...`).

  Raises:
    ValueError, FileNotFoundError: a bad config (unknown field, unknown loss, missing dataset,
      a batch that does not divide over the devices), before any training.
    NonFiniteLossError: a non-finite loss with `optim.on_nonfinite="stop"`.
  """
  wall_start = time.perf_counter()
  progress = progress or _log_progress
  config = config_lib.resolve(config)
  workdir = os.path.abspath(os.fspath(workdir))

  # Everything that can be wrong with the config fails here, before anything heavy.
  objective = losses.get(config.loss.name)
  data_config = data.resolve_config(config.data)
  model = models.make_model(config.model)
  modalities = _modalities(model, objective)
  if config.eval.tasks:
    evaluate.check_tasks(config.eval.tasks)
  mesh = parallel.make_mesh(**config.mesh)
  shards = step_lib.num_batch_shards(mesh)
  config_lib.check_batch(batch_size=data_config.batch_size, shards=shards,
                         accum_steps=config.optim.accum_steps)
  if config.eval.tasks:
    config_lib.check_batch(batch_size=config.eval.batch_size, shards=shards, accum_steps=1,
                           what="eval.batch_size")
  options = config_lib.loss_options(config.loss)
  side_inputs = _side_inputs(config.loss.side_inputs, model, objective)
  queue_size, momentum = _momentum(config, objective, shards)
  given = {spec.side_key for spec in side_inputs} | ({"queue"} if queue_size else set())
  side_keys = tuple(k for k in objective.side_keys if k not in given)  # batch keys, same names
  _check_loss_options(objective, options, mesh, modalities, tuple(objective.side_keys),
                      model.embed_dim, config.loss.block_size, queue_size)
  train_iter = data.make_pipeline(config.data, training=True, mesh=mesh,
                                  batch_axes=step_lib.batch_axes(mesh))

  os.makedirs(workdir, exist_ok=True)
  _save_config(config, workdir)
  logging.info("Mesh %s over %d devices (%d processes); global batch %d.", dict(mesh.shape),
               jax.device_count(), jax.process_count(), data_config.batch_size)

  total_steps = int(config.total_steps)
  schedule_holder = {}

  def make_tx(abstract_params):
    tx, schedule = optimizer_lib.make_optimizer(config.optim, abstract_params,
                                                total_steps=total_steps, locked=model.locked)
    schedule_holder["schedule"] = schedule
    return tx

  checkpointer = checkpoint_lib.Checkpointer(
      checkpoint_lib.checkpoint_dir(workdir), every_steps=config.checkpoint.every_steps,
      keep=config.checkpoint.keep, async_save=config.checkpoint.async_save)
  batch_sharding = step_lib.batch_sharding(mesh)
  queue = dict(queue_size=queue_size, queue_sharding=batch_sharding if queue_size else None)
  latest = checkpointer.latest_step()
  if latest is not None:
    abstract, shardings, tx = state_lib.create_train_state(model, make_tx, mesh, seed=config.seed,
                                                           materialize=False, **queue)
    state, train_iter = checkpointer.restore(latest, abstract, train_iter)
    logging.info("Resuming from step %d (%s).", latest, checkpointer.directory)
  else:
    state, shardings, tx = state_lib.create_train_state(model, make_tx, mesh, seed=config.seed,
                                                        **queue)
    if config.checkpoint.init_from:
      state = _init_from(state, shardings, config)
    elif model.locked:
      logging.warning("model.locked=%s but checkpoint.init_from is not set: the locked towers "
                      "keep their random initialization.", list(model.locked))
  trainable = models.trainable_mask(state.params, locked=model.locked)
  logging.info("Model: %s parameters, %s trainable.", f"{models.count_params(state.params):,}",
               f"{sum(int(np.prod(x.shape)) for x, t in zip(jax.tree.leaves(state.params), jax.tree.leaves(trainable)) if t):,}")

  step_config = step_lib.StepConfig(
      modalities=modalities, side_keys=side_keys, side_inputs=side_inputs, loss_options=options,
      block_size=config.loss.block_size, accum_steps=config.optim.accum_steps,
      max_scale=model.max_scale, on_nonfinite=config.optim.on_nonfinite, seed=config.seed,
      momentum=momentum)
  keys = tuple(dict.fromkeys(modalities + side_keys +
                             tuple(spec.batch_key for spec in side_inputs)))
  train_step = step_lib.make_train_step(
      model, objective, tx, schedule_holder["schedule"], mesh, shardings,
      {k: batch_sharding for k in keys}, step_config)

  writer = metrics_lib.MetricWriter(os.path.join(workdir, "tensorboard"))
  eval_dir = os.path.join(workdir, "eval")
  results: dict[str, float] = {}
  first_step = int(jax.device_get(state.step))
  if first_step >= total_steps:
    progress(f"Nothing to do: {workdir} already holds step {first_step} of {total_steps}.")
    checkpointer.close()
    writer.close()
    return results

  def check_finite(pending) -> None:
    step, m = pending
    if float(jax.device_get(m["finite"])) == 1.0:
      return
    loss, grad_norm = (float(jax.device_get(m[k])) for k in ("loss", "grad_norm"))
    if config.optim.on_nonfinite == "skip":
      logging.warning("Step %d: non-finite loss %s or gradient norm %s; update skipped.", step,
                      loss, grad_norm)
      return
    checkpointer.wait()
    good = checkpointer.latest_step()
    checkpointer.close()
    writer.close()
    raise NonFiniteLossError(
        f"Step {step}: the loss is {loss} and the gradient norm {grad_norm} (not finite). "
        f"Training stopped and this step was not applied; the last good checkpoint is "
        f"{'step ' + str(good) if good is not None else 'none (no checkpoint was written yet)'} "
        f"in {checkpointer.directory}, and rerunning the command resumes from it. Lower "
        f"optim.lr, set optim.grad_clip_norm, check the data, or pass "
        f"--config.optim.on_nonfinite=skip to skip such steps.")

  def evaluate_now(step: int) -> dict[str, float]:
    start = time.perf_counter()
    out = evaluation.run(model, state.params, config, mesh=mesh, workdir=eval_dir, step=step)
    out = {f"eval/{k}": v for k, v in out.items()}
    writer.write_scalars(step, out)
    writer.flush()
    logging.info("Evaluation at step %d took %.1f s.", step, time.perf_counter() - start)
    progress(f"eval step {step}: {_headline(out)}")
    return out

  stop = _Stop()
  timer = metrics_lib.IntervalTimer()
  profile_start = config.log.profile_start_step
  profile_stop = None if profile_start is None else profile_start + config.log.profile_num_steps
  profiling = False
  pending = None
  scalars: dict[str, float] = {}
  try:
    for step in range(first_step + 1, total_steps + 1):  # `step`: the count after this update
      if profile_start is not None and step - 1 == profile_start and not profiling:
        jax.profiler.start_trace(os.path.join(workdir, "profile"))
        profiling = True
      timer.waiting()
      batch = next(train_iter)
      missing = [k for k in keys if k not in batch]
      if missing:
        raise ValueError(f"The batch has no {missing} (needed by the model's modalities and "
                         f"loss {objective.name!r}, see loss.side_inputs; hard negatives need "
                         f"data.hard_negatives=True); its keys: {sorted(batch)}.")
      batch = data.to_global({k: batch[k] for k in keys}, batch_sharding)
      timer.done_waiting()
      state, step_metrics = train_step(state, batch)
      timer.step()
      if pending is not None:
        check_finite(pending)
      pending = (step, step_metrics)
      if step == first_step + 1:  # the first step compiled: time from here on
        check_finite(pending)
        timer.reset()
      if profiling and step - 1 == profile_stop - 1:
        jax.block_until_ready(state)
        jax.profiler.stop_trace()
        profiling = False
        logging.info("Profile of steps %d-%d written to %s.", profile_start + 1, step,
                     os.path.join(workdir, "profile"))
      last = step == total_steps
      preempted = stop.requested or checkpointer.reached_preemption(step)
      if step % config.log.every_steps == 0 or last:
        scalars = _scalars(step_metrics)
        scalars["train/skipped_steps"] = float(jax.device_get(state.skipped))
        scalars["train/bad_records"] = float(getattr(train_iter, "num_skipped", 0))
        if timer.steps:
          scalars.update({f"train/{k}": v
                          for k, v in timer.summary(data_config.batch_size).items()})
        writer.write_scalars(step, scalars)
        progress(metrics_lib.progress_line(step, total_steps, scalars,
                                           elapsed=time.perf_counter() - wall_start))
        timer.reset()
      if last or preempted or step % config.checkpoint.every_steps == 0:
        check_finite(pending)
        checkpointer.save(step, state, train_iter, force=last or preempted)
      if preempted and not last:
        checkpointer.wait()
        progress(f"Preempted: saved step {step} to {checkpointer.directory}; rerun the same "
                 "command to resume.")
        return {**scalars}
      every = config.eval.every_steps
      if config.eval.tasks and ((every and step % every == 0 and not last) or
                                (last and config.eval.at_end)):
        results.update(evaluate_now(step))
        timer.reset()
    checkpointer.wait()
  finally:
    if profiling:
      jax.profiler.stop_trace()
    stop.restore()
    checkpointer.close()
    writer.close()
    if hasattr(train_iter, "close"):
      train_iter.close()

  results.update(scalars)
  elapsed = time.perf_counter() - wall_start
  summary = [f"Done: {total_steps - first_step} steps in {elapsed:.0f} s "
             f"(final loss {scalars.get('train/loss', math.nan):.4f})."]
  if any(k.startswith("eval/") for k in results):
    summary.append(f"Evaluation: {_headline(results)}")
    summary.append(f"Report: {eval_dir}/metrics.json and PNG plots.")
  summary.append(f"Checkpoint: {checkpointer.directory}/{total_steps}")
  summary.append(f"TensorBoard: tensorboard --logdir {os.path.join(workdir, 'tensorboard')}")
  progress("\n".join(summary))
  results["wall_time"] = elapsed
  return results
