"""`train_and_evaluate` from Python, as a notebook runs it: the final metrics come back as a
value; a second run in the same process (another loss, another workdir) leaks no threads, worker
processes or device arrays; a KeyboardInterrupt leaves the checkpoints intact and saves the
step it fell after."""

import gc
import json
import math
import multiprocessing
import os
import threading

import jax
import pytest

from contrastive import train
from contrastive.train import metrics as metrics_lib
from contrastive.train import step as step_lib
from tests.train import trainer_testing as tt

DEMO = os.path.join(tt.ROOT, "configs", "demo.py:runlocal")  # a tiny model, 8 devices
STEPS = 4


def _config(**changes):
  return train.get_config(
    DEMO,
    {
      "total_steps": STEPS,
      "checkpoint.every_steps": 1,
      "checkpoint.keep": 10,
      "eval.tasks": {},
      **changes,
    },
  )


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
  """The demo's runlocal config with its evaluation, every step checkpointed."""
  workdir = str(tmp_path_factory.mktemp("first"))
  config = train.get_config(
    DEMO, {"total_steps": STEPS, "checkpoint.every_steps": 1, "checkpoint.keep": 10}
  )
  return workdir, train.train_and_evaluate(config, workdir)


def _leftovers():
  gc.collect()
  return threading.active_count(), len(multiprocessing.active_children()), len(jax.live_arrays())


def test_the_final_metrics_come_back(first_run):
  workdir, metrics = first_run
  assert all(isinstance(v, float) for v in metrics.values()), metrics
  assert math.isfinite(metrics["train/loss"]) and metrics["wall_time"] > 0
  logged = tt.read_scalars(os.path.join(workdir, "tensorboard"))
  assert metrics["train/loss"] == logged["train/loss"][STEPS]
  report = json.load(open(os.path.join(workdir, "eval", "metrics.json")))
  assert report["step"] == STEPS
  assert metrics["eval/zeroshot_shape/top1"] == report["zeroshot_shape/top1"]
  assert (
    metrics["eval/retrieval/image_to_text/recall@1"] == report["retrieval/image_to_text/recall@1"]
  )


def test_a_second_run_with_another_loss_leaks_nothing(first_run, tmp_path):
  before = _leftovers()  # the first run made what stays for the process (grain's shm pool)
  metrics = train.train_and_evaluate(_config(**{"loss.name": "dcl"}), str(tmp_path))
  assert (
    math.isfinite(metrics["train/loss"]) and metrics["train/loss"] != first_run[1]["train/loss"]
  )
  assert _leftovers() == before  # threads, grain worker processes, live jax.Arrays


def test_keyboard_interrupt_saves_the_step_and_leaves_the_checkpoints(
  first_run, tmp_path, monkeypatch
):
  first_dir, _ = first_run
  workdir = str(tmp_path)
  before = _leftovers()
  write_scalars = metrics_lib.MetricWriter.write_scalars

  def interrupt_after_step_3(writer, step, scalars):  # between two steps: a clean point
    write_scalars(writer, step, scalars)
    if step == 3:
      raise KeyboardInterrupt

  monkeypatch.setattr(metrics_lib.MetricWriter, "write_scalars", interrupt_after_step_3)
  lines = []
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(_config(), workdir, progress=lines.append)
  monkeypatch.undo()
  assert _leftovers() == before
  assert lines[-1].startswith("Interrupted: the last checkpoint is step 3"), lines
  checkpoints = os.path.join(workdir, "checkpoints")
  assert sorted(os.listdir(checkpoints)) == ["1", "2", "3"]
  # Step 3 as the uninterrupted run saved it: the state and the data iterator's position.
  tt.assert_trees_equal(tt.load_state(workdir, 3), tt.load_state(first_dir, 3))
  position = os.path.join("3", "data_iter", "process_0-of-1.json")
  assert (
    open(os.path.join(checkpoints, position)).read()
    == open(os.path.join(first_dir, "checkpoints", position)).read()
  )

  # An interrupt inside a step (the batch taken, the update not done) saves nothing more, and
  # the checkpoints stay byte for byte as they were.
  saved = tt.digest(checkpoints)

  def interrupted_step(*args, **kwargs):
    del args, kwargs

    def step(state, batch):
      raise KeyboardInterrupt

    return step

  monkeypatch.setattr(step_lib, "make_train_step", interrupted_step)
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(_config(), workdir)
  assert tt.digest(checkpoints) == saved
  assert _leftovers() == before
