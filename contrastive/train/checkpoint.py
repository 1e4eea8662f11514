"""Checkpoints: the train state and the data iterator, saved together by one orbax manager.

Layout: `{workdir}/checkpoints/{step}/` with the items `state` (the `TrainState`, every array in
its sharding, written collectively by all processes) and `data_iter` (each process's grain
iterator position, `process_{i}-of-{n}.json`). Saves are asynchronous and atomic: a step is
visible only once complete, and a save interrupted by a crash leaves a `*.orbax-checkpoint-tmp`
directory that the manager ignores. The newest `keep` checkpoints are kept.

A resumed run restores both items, so it continues with exactly the batches the interrupted
run would have seen; with the step's randomness derived from `fold_in(key, step)`, the resumed
run ends bitwise equal to an uninterrupted one. The iterator positions are per process: resume
with the same number of processes (model arrays reshard freely). `contrastive.run.workdir` reads
a checkpoint's parameters back without a trainer (`restore_params`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Any

from absl import logging
import grain
import jax
import orbax.checkpoint as ocp

from contrastive.run.workdir import DATA_ITER
from contrastive.run.workdir import STATE


class Checkpointer:
  """One `orbax.checkpoint.CheckpointManager` for a run's state and data iterator.

  Args:
    directory: where the step directories go (created if missing).
    every_steps: the save interval (the trainer saves on its multiples, at the end and on
      preemption, each with `force=True`).
    keep: how many of the newest checkpoints to keep.
    async_save: write in a background thread while training continues.
  """

  def __init__(
    self, directory: str | os.PathLike, *, every_steps: int, keep: int, async_save: bool = True
  ):
    self.directory = os.path.abspath(os.fspath(directory))
    self.every_steps = int(every_steps)
    options = ocp.CheckpointManagerOptions(
      max_to_keep=int(keep),
      save_interval_steps=int(every_steps),
      create=True,
      enable_async_checkpointing=bool(async_save),
    )
    self._manager = ocp.CheckpointManager(
      self.directory, options=options, item_names=(STATE, DATA_ITER)
    )

  @property
  def manager(self) -> ocp.CheckpointManager:
    return self._manager

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def reached_preemption(self, step: int) -> bool:
    """True on every process at the same step once any of them was told to stop (SIGTERM)."""
    return self._manager.reached_preemption(step)

  def save(
    self, step: int, state: Any, data_iter: Any | None = None, *, force: bool = False
  ) -> bool:
    """Starts saving `state` (and the iterator's position) as `step`; True if a save started.

    Without `force`, orbax saves only on its interval (and whenever no checkpoint exists yet).
    The state's arrays are copied before this returns, so training may go on (and donate them)
    at once.
    """
    items = {STATE: ocp.args.StandardSave(state)}
    if data_iter is not None:
      items[DATA_ITER] = grain.checkpoint.CheckpointSave(data_iter)
    saved = self._manager.save(step, args=ocp.args.Composite(**items), force=force)
    if saved:
      logging.info("Saving checkpoint %d to %s.", step, self.directory)
    return saved

  def restore(
    self, step: int, abstract_state: Any, data_iter: Any | None = None
  ) -> tuple[Any, Any]:
    """The state saved at `step`, laid out as `abstract_state` says, and the data iterator at
    the position saved with it.

    Use the returned iterator: orbax may hand the restore a copy of `data_iter`.
    """
    items = {STATE: ocp.args.StandardRestore(abstract_state)}
    if data_iter is not None:
      items[DATA_ITER] = grain.checkpoint.CheckpointRestore(data_iter)
    restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    logging.info("Restored checkpoint %d from %s.", step, self.directory)
    return restored[STATE], (restored[DATA_ITER] if data_iter is not None else None)

  def wait(self) -> None:
    """Blocks until every started save is on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


class StopOnSigterm(contextlib.AbstractContextManager):
  """SIGTERM in a single-process run sets `requested`: the trainer finishes the step, saves and
  returns (several processes learn of a preemption from `Checkpointer.reached_preemption`).
  Leaving the context restores the previous handler."""

  def __init__(self):
    self.requested = False
    self._old = {}
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._old[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del frame
    logging.warning("Signal %d received: saving a checkpoint after this step.", signum)
    self.requested = True

  def __exit__(self, *exc) -> None:
    for sig, old in self._old.items():
      signal.signal(sig, old)
