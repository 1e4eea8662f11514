"""`train_and_evaluate(config, workdir)`: the one trainer every recipe runs.

The pieces, in order: check the run (`config.resolve`, then `config.check_run`: unknown fields,
the loss, the data, the batch against the mesh) and whether `workdir` may be resumed with it
(`resume.check_resume`), all before anything heavy; build the data iterator and the train state
in its sharding, restored from the latest checkpoint of `workdir` if there is one (state and
data iterator); then loop: fetch a batch, run the jitted step, check the previous step's loss,
log, checkpoint, evaluate.

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

Preemption and interruption. On SIGTERM (a single process) or JAX's preemption notice (several
processes, all at the same step), the loop saves a checkpoint at the current step and returns;
rerunning the same command resumes there. A `KeyboardInterrupt` (Ctrl-C, a notebook's stop
button) lets the saves in flight finish, saves the current step when it falls between two steps,
and is raised again. Whatever ends a run, its data iterator (and worker processes), checkpoint
manager, TensorBoard writer and progress bar are closed, so a notebook can run again at once.
"""

from __future__ import annotations

from collections.abc import Callable
import contextlib
import os
import time

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from contrastive import data
from contrastive import losses
from contrastive import models
from contrastive import parallel
from contrastive.evaluate import configured as evaluation
from contrastive.run import config as run_config
from contrastive.run import workdir as workdir_lib
from contrastive.train import assemble
from contrastive.train import checkpoint as checkpoint_lib
from contrastive.train import compile_cache
from contrastive.train import config as config_lib
from contrastive.train import metrics as metrics_lib
from contrastive.train import mfu
from contrastive.train import momentum as momentum_lib
from contrastive.train import resume
from contrastive.train import state as state_lib
from contrastive.train import teachers as teachers_lib

Write = Callable[[str], None]  # where the console's lines go


class NonFiniteLossError(FloatingPointError):
  """A train step produced a non-finite loss or gradient (with `optim.on_nonfinite="stop"`)."""


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str | os.PathLike, *, progress: Write | None = None
) -> dict[str, float]:
  """Trains (resuming from `workdir` if it holds checkpoints), evaluating at intervals.

  Args:
    config: a run config (see `contrastive.run.config`; `contrastive.train.get_config` loads
      a config file with overrides).
    workdir: the run's directory; created if missing.
    progress: called with each progress line, evaluation headline and the closing summary (the
      CLI prints them); default: `absl.logging`, or a `tqdm` bar when `config.log.progress`
      says so (`"auto"`: in a terminal or a notebook).

  Returns:
    Floats: the last logged train scalars (`train/loss`, `train/lr`, ...), the metrics of the
    last evaluation (`eval/...`) and `wall_time` (seconds). Empty when `workdir` already holds
    the last step; the last train scalars only when preempted.

  Raises:
    ValueError, FileNotFoundError: a bad config (unknown field, unknown loss, missing dataset,
      a batch that does not divide over the devices), or a resume with a config that changes
      the train state (see `contrastive.train.resume`), before anything is built or compiled.
    NonFiniteLossError: a non-finite loss with `optim.on_nonfinite="stop"`.
    KeyboardInterrupt: raised again after saving (see the module's docstring).
  """
  wall_start = time.perf_counter()
  config = run_config.resolve(config)
  compile_cache.enable(config.compilation_cache_dir)
  workdir = os.path.abspath(os.fspath(workdir))
  objective = losses.get(config.loss.name)
  model = models.make_model(config.model)
  mesh = parallel.make_mesh(**config.mesh)
  step_config = config_lib.check_run(config, model=model, objective=objective, mesh=mesh)
  resume.check_resume(workdir, config)
  total_steps = int(config.total_steps)

  with contextlib.ExitStack() as stack:
    train_iter = data.make_pipeline(
      config.data, training=True, mesh=mesh, batch_axes=parallel.batch_axes(mesh)
    )
    stack.callback(_close, train_iter)
    os.makedirs(workdir, exist_ok=True)
    checkpointer = checkpoint_lib.Checkpointer(
      workdir_lib.checkpoint_dir(workdir),
      every_steps=config.checkpoint.every_steps,
      keep=config.checkpoint.keep,
      async_save=config.checkpoint.async_save,
    )
    stack.callback(checkpointer.close)
    state, shardings, tx, restored_iter = _restore_or_init(
      config, model, mesh, checkpointer, train_iter, step_config.terms
    )
    if restored_iter is not train_iter:
      stack.callback(_close, restored_iter)
      train_iter = restored_iter
    resume.save_config(config, workdir)  # once the checkpoints fit it
    batch_size = train_iter.global_batch_size
    logging.info(
      "Mesh %s over %d devices (%d processes); global batch %d.",
      dict(mesh.shape),
      jax.device_count(),
      jax.process_count(),
      batch_size,
    )

    keys = assemble.batch_keys(step_config)
    batch_sharding = parallel.batch_sharding(mesh)
    train_step = assemble.make_train_step(
      config, model, objective, tx, mesh, shardings, step_config
    )
    writer = metrics_lib.MetricWriter(os.path.join(workdir, "tensorboard"))
    stack.callback(writer.close)
    first_step = int(jax.device_get(state.step))
    console = metrics_lib.Progress(
      config.log.progress, total_steps=total_steps, first_step=first_step, write=progress
    )
    stack.callback(console.close)
    if first_step >= total_steps:
      console.message(f"Nothing to do: {workdir} already holds step {first_step} of {total_steps}.")
      return {}
    stop = stack.enter_context(checkpoint_lib.StopOnSigterm())
    profile = stack.enter_context(metrics_lib.Profile(config.log, os.path.join(workdir, "profile")))
    timer = metrics_lib.IntervalTimer()
    ledger = _StepLedger(checkpointer, first_step, config.optim.on_nonfinite)
    results, scalars, flops = {}, {}, None
    try:
      for step in range(first_step + 1, total_steps + 1):  # `step`: the count after this update
        profile.before(step)
        timer.waiting()
        ledger.fetching()
        batch = _global_batch(next(train_iter), keys, batch_sharding, objective)
        timer.done_waiting()
        state, step_metrics = train_step(state, batch)
        ledger.stepped(step, step_metrics)  # checks the loss of the step before
        timer.step()
        console.advance()
        if step == first_step + 1:  # the first step compiled: time from here on
          timer.reset()
          flops = _flops_per_example(train_step, state, batch, mesh, batch_size)
        profile.after(step, state)
        last = step == total_steps
        preempted = stop.requested or checkpointer.reached_preemption(step)
        if step % config.log.every_steps == 0 or last:
          scalars = _train_scalars(step_metrics, state, train_iter, timer, batch_size, flops)
          writer.write_scalars(step, scalars)
          console.log(step, scalars, elapsed=time.perf_counter() - wall_start)
          timer.reset()
        if last or preempted or step % config.checkpoint.every_steps == 0:
          ledger.save(step, state, train_iter, force=last or preempted)
        if preempted and not last:
          checkpointer.wait()
          console.message(
            f"Preempted: saved step {step} to {checkpointer.directory}; rerun the "
            "same command to resume."
          )
          return {**scalars}
        if _evaluates(config.eval, step, last):
          results.update(
            _evaluate(model, state.params, config, mesh, workdir, step, writer, console)
          )
          if state.ema_params is not None:
            results.update(
              _evaluate(
                model, state.ema_params, config, mesh, workdir, step, writer, console, "ema"
              )
            )
          timer.reset()
      checkpointer.wait()
    except KeyboardInterrupt:
      console.message(ledger.save_interrupted(state, train_iter))
      raise
    results.update(scalars)
    results["wall_time"] = time.perf_counter() - wall_start
    console.message(
      metrics_lib.summary(
        results,
        steps=total_steps - first_step,
        workdir=workdir,
        checkpoint=f"{checkpointer.directory}/{total_steps}",
      )
    )
  return results


def _restore_or_init(config, model, mesh, checkpointer, train_iter, terms):
  """`(state, shardings, tx, train_iter)`: restored from the latest checkpoint with the data
  iterator, or initialized (from `checkpoint.init_from` if set; frozen teachers from their
  checkpoints)."""
  locked = model.locked
  latest = checkpointer.latest_step()
  if latest is None:
    state, shardings, tx = assemble.create_train_state(config, model, mesh, terms=terms)
    state = state.replace(
      teachers=teachers_lib.load_frozen(terms, state.teachers, shardings.teachers)
    )
    if config.checkpoint.init_from:
      state = _init_from(state, shardings, config, terms)
    elif towers := [e for e in locked if e not in models.towers.SCALARS]:
      logging.warning(
        "model.locked=%s but checkpoint.init_from is not set: the locked towers "
        "keep their random initialization.",
        towers,
      )
    _log_params(state.params, locked)
    return state, shardings, tx, train_iter
  abstract, shardings, tx = assemble.create_train_state(
    config, model, mesh, materialize=False, terms=terms
  )
  try:
    state, train_iter = checkpointer.restore(latest, abstract, train_iter)
  except Exception as e:
    logging.info("Restoring step %d of %s failed.", latest, checkpointer.directory, exc_info=True)
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
    raise ValueError(
      f"Cannot resume {checkpointer.directory} (step {latest}): its saved state does not fit "
      f"the state this config makes ({type(e).__name__}: {first}). Start a new run in another "
      "workdir, or rerun with the config this one was trained with (its config.json)."
    ) from None
  logging.info("Resuming from step %d (%s).", latest, checkpointer.directory)
  _log_params(state.params, locked)
  return state, shardings, tx, train_iter


def _log_params(params, locked) -> None:
  trainable = jax.tree.leaves(models.trainable_mask(params, locked=locked))
  count = sum(int(np.prod(x.shape)) for x, t in zip(jax.tree.leaves(params), trainable) if t)
  logging.info(
    "Model: %s parameters, %s trainable.", f"{models.count_params(params):,}", f"{count:,}"
  )


def _init_from(
  state: state_lib.TrainState,
  shardings: state_lib.TrainState,
  config: ml_collections.ConfigDict,
  terms=(),
) -> state_lib.TrainState:
  """The state with (some of) its parameters taken from another run's checkpoint."""
  from contrastive.train import pretrained

  if pretrained.is_run_directory(config.checkpoint.init_from):
    loaded, step = pretrained.restore_run_params(
      config.checkpoint.init_from, config.get("model"), step=config.checkpoint.init_from_step
    )
  else:  # a checkpoint as downloaded (open_clip, Hugging Face, big_vision)
    loaded, step = pretrained.restore_params(
      config.checkpoint.init_from,
      config.model,
      keys=config.checkpoint.init_from_keys,
      step=config.checkpoint.init_from_step,
      name=config.checkpoint.get("init_from_name"),
    )
  keys = tuple(config.checkpoint.init_from_keys) or tuple(loaded)
  params = dict(state.params)
  for key in keys:
    if key not in loaded or key not in params:
      raise ValueError(
        f"checkpoint.init_from_keys names {key!r}; the checkpoint has "
        f"{sorted(loaded)} and the model {sorted(params)}."
      )
    want = jax.tree.map(lambda x: x.shape, params[key])
    got = jax.tree.map(lambda x: x.shape, loaded[key])
    if jax.tree.structure(want) != jax.tree.structure(got) or want != got:
      raise ValueError(
        f"Parameters {key!r} of {config.checkpoint.init_from} (step {step}) do not "
        f"fit the model: shapes {got} vs {want}."
      )
    params[key] = jax.device_put(jax.tree.map(np.asarray, loaded[key]), shardings.params[key])
  logging.info("Initialized %s from %s, step %d.", list(keys), config.checkpoint.init_from, step)
  state = state.replace(params=params)
  if isinstance(state.loss_state, momentum_lib.MomentumState):  # the key encoder starts as a copy
    state = state.replace(
      loss_state=state.loss_state.replace(params=jax.tree.map(jnp.copy, params))
    )
  return state.replace(teachers=teachers_lib.restart_ema(terms, state.teachers, params))


def _global_batch(batch, keys, sharding, objective):
  missing = [k for k in keys if k not in batch]
  if missing:
    raise ValueError(
      f"The batch has no {missing} (needed by the model's modalities and loss "
      f"{objective.name!r}, see loss.side_inputs; hard negatives need "
      f"data.hard_negatives=True); its keys: {sorted(batch)}."
    )
  return data.to_global({k: batch[k] for k in keys}, sharding)


class _StepLedger:
  """Which step the train state and the data iterator agree on, and the step whose loss is not
  checked yet.

  A step's `finite` metric is read one step late, so that reading it does not wait for the
  device: `stepped` checks the step before (the first step at once: it compiled), `save` the
  step it saves. A non-finite step is logged (`on_nonfinite="skip"`), or ends the run with
  `NonFiniteLossError` once the checkpoints in flight are written (`"stop"`).
  """

  def __init__(self, checkpointer: checkpoint_lib.Checkpointer, first_step: int, on_nonfinite):
    self._checkpointer = checkpointer
    self._first_step = first_step
    self._skip = on_nonfinite == "skip"
    self._agreed = first_step  # None from fetching a batch to the step's update
    self._pending = None  # (step, metrics), not checked yet

  def fetching(self) -> None:
    """The next batch is taken: the iterator is ahead of the state until `stepped`."""
    self._agreed = None

  def stepped(self, step: int, metrics) -> None:
    """Step `step` is applied (state and iterator agree); checks the loss of the step before."""
    self._agreed = step
    self.check()
    self._pending = (step, metrics)
    if step == self._first_step + 1:
      self.check()

  def check(self) -> None:
    """The pending step's loss: logged when not finite (`skip`), or the end of the run (`stop`)."""
    if self._pending is None:
      return
    step, m = self._pending
    if not _finite(m):
      loss, grad_norm = (float(jax.device_get(m[k])) for k in ("loss", "grad_norm"))
      if not self._skip:
        self._checkpointer.wait()
        good = self._checkpointer.latest_step()
        raise NonFiniteLossError(
          f"Step {step}: the loss is {loss} and the gradient norm {grad_norm} (not finite). "
          f"Training stopped and this step was not applied; the last good checkpoint is "
          f"{'step ' + str(good) if good is not None else 'none (no checkpoint was written yet)'} "
          f"in {self._checkpointer.directory}, and rerunning the command resumes from it. Lower "
          f"optim.lr, set optim.grad_clip_norm, check the data, or pass "
          f"--config.optim.on_nonfinite=skip to skip such steps."
        )
      logging.warning(
        "Step %d: non-finite loss %s or gradient norm %s; update skipped.", step, loss, grad_norm
      )
    self._pending = None

  def save(self, step: int, state, train_iter, *, force: bool) -> None:
    """Checks the pending step's loss, then saves `state` (at `step`) with the iterator."""
    self.check()
    self._checkpointer.save(step, state, train_iter, force=force)

  def save_interrupted(self, state, train_iter) -> str:
    """After a KeyboardInterrupt: the saves in flight finish, and the current step is saved too
    when the interrupt fell between two steps (the state and the data iterator agree), it is not
    saved yet, and its update was applied (or `on_nonfinite="skip"`). Returns the line to show."""
    self._checkpointer.wait()
    latest = self._checkpointer.latest_step()
    done = self._agreed
    applied = self._skip or self._pending is None or _finite(self._pending[1])
    if done is not None and done > self._first_step and done != latest and applied:
      self._checkpointer.save(done, state, train_iter, force=True)
      self._checkpointer.wait()
      latest = done
    where = f"step {latest} in {self._checkpointer.directory}" if latest is not None else "none"
    return f"Interrupted: the last checkpoint is {where}; rerun to resume."


def _finite(metrics) -> bool:
  return float(jax.device_get(metrics["finite"])) == 1.0


def _evaluates(eval_config: ml_collections.ConfigDict, step: int, last: bool) -> bool:
  """Whether the loop evaluates after `step`: every `eval.every_steps`, and at the end."""
  every = eval_config.every_steps
  return bool(eval_config.tasks) and (
    (bool(every) and step % every == 0 and not last) or (last and eval_config.at_end)
  )


def _flops_per_example(train_step, state, batch, mesh, batch_size) -> float | None:
  """The step's FLOPs per example (`contrastive.train.mfu`), from its lowered program."""
  with parallel.use_rules(mesh):
    flops = mfu.step_flops(lambda: train_step.jitted.lower(state, batch))
  return None if flops is None else flops / batch_size


def _train_scalars(
  step_metrics, state, train_iter, timer, batch_size, flops_per_example=None
) -> dict[str, float]:
  scalars = metrics_lib.train_scalars(step_metrics)
  scalars["train/skipped_steps"] = float(jax.device_get(state.skipped))
  scalars["train/bad_records"] = float(getattr(train_iter, "num_skipped", 0))
  counts = getattr(train_iter, "source_counts", None) or {}
  total = sum(counts.values())
  for name, count in counts.items():  # data.mixture: each source's share of the examples so far
    scalars[f"train/source/{name}"] = count / max(total, 1)
  if timer.steps:
    scalars.update({f"train/{k}": v for k, v in timer.summary(batch_size).items()})
  scalars.update(
    mfu.scalars(
      flops_per_example,
      scalars.get("train/examples_per_sec"),
      num_devices=jax.device_count(),
      device_kind=jax.devices()[0].device_kind,
    )
  )
  return scalars


def _evaluate(
  model, params, config, mesh, workdir, step, writer, console, which: str = ""
) -> dict[str, float]:
  """Runs `config.eval.tasks`; `which="ema"`: on the EMA of the weights (`eval/ema/...`, its
  report under `eval/ema/`)."""
  start = time.perf_counter()
  where = os.path.join(workdir, "eval", which) if which else os.path.join(workdir, "eval")
  out = evaluation.run(model, params, config, mesh=mesh, workdir=where, step=step)
  prefix = f"eval/{which}/" if which else "eval/"
  out = {f"{prefix}{k}": float(v) for k, v in out.items()}
  writer.write_scalars(step, out)
  writer.flush()
  logging.info("Evaluation at step %d took %.1f s.", step, time.perf_counter() - start)
  console.message(f"eval step {step}: {metrics_lib.headline(out)}")
  return out


def _close(train_iter) -> None:
  if hasattr(train_iter, "close"):
    train_iter.close()  # grain's worker processes and threads
