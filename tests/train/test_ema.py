"""The EMA of the weights (`optim.ema_decay`): the formula step by step, evaluated beside the
weights, a bitwise resume, and loaded back with `train.load_run(..., ema=True)`."""

from __future__ import annotations

import os
import shutil

import jax
import numpy as np
import pytest

from contrastive import train
from tests.train import trainer_testing as tt

DEMO = os.path.join(tt.ROOT, "configs", "demo.py:runlocal")
D = 0.5  # the decay (small, so that four steps move the average far from the start)
TASKS = {
  "zs": dict(
    kind="zeroshot",
    source=dict(name="synthetic", split="colour", num_examples=32, image_size=32),
  )
}


def _config(**changes):
  return train.get_config(
    DEMO,
    {
      "total_steps": 4,
      "checkpoint.every_steps": 1,
      "checkpoint.keep": 10,
      "checkpoint.async_save": False,
      "optim.ema_decay": D,
      "eval.tasks": TASKS,
      "eval.report": False,
      **changes,
    },
  )


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("ema"))
  return workdir, train.train_and_evaluate(_config(), workdir)


def test_the_ema_is_the_formula_after_each_step(run):
  workdir, _ = run
  states = {k: tt.load_state(workdir, k) for k in (1, 2, 3, 4)}
  for k in (2, 3, 4):
    expected = jax.tree.map(
      lambda e, p: D * e + (1 - D) * p, states[k - 1]["ema_params"], states[k]["params"]
    )
    jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
      states[k]["ema_params"],
      expected,
    )
  kernel = lambda s: s["text"]["head"]["kernel"]
  assert not np.allclose(kernel(states[4]["ema_params"]), kernel(states[4]["params"]))


def test_the_ema_is_evaluated_beside_the_weights(run):
  _, metrics = run
  assert {"eval/zs/top1", "eval/ema/zs/top1"} <= set(metrics)


def test_a_resumed_run_continues_the_same_ema(run, tmp_path):
  workdir, _ = run
  resumed = str(tmp_path / "resumed")
  shutil.copytree(workdir, resumed)
  for step in ("3", "4"):
    shutil.rmtree(os.path.join(resumed, "checkpoints", step))
  train.train_and_evaluate(_config(), resumed)
  tt.assert_trees_equal(
    tt.load_state(resumed, 4)["ema_params"], tt.load_state(workdir, 4)["ema_params"]
  )


def test_load_run_gives_the_ema(run):
  workdir, _ = run
  state = tt.load_state(workdir, 4)
  loaded = train.load_run(workdir, ema=True)
  tt.assert_trees_equal(jax.device_get(loaded.params), state["ema_params"])


def test_a_run_without_an_ema_says_so(run, tmp_path):
  workdir, _ = run
  plain = str(tmp_path / "plain")
  train.train_and_evaluate(_config(**{"optim.ema_decay": None, "total_steps": 1}), plain)
  with pytest.raises(ValueError, match="holds no EMA of the parameters"):
    train.load_run(plain, ema=True)


def test_turning_the_ema_on_for_a_resume_is_refused(run, tmp_path):
  workdir, _ = run
  other = str(tmp_path / "other")
  shutil.copytree(workdir, other)
  with pytest.raises(ValueError, match=r"optim\.ema_decay: 0\.5 -> null"):
    train.train_and_evaluate(_config(**{"optim.ema_decay": None, "total_steps": 6}), other)


def test_a_decay_out_of_range_is_refused(tmp_path):
  with pytest.raises(ValueError, match=r"optim\.ema_decay must be in \[0, 1\)"):
    train.train_and_evaluate(_config(**{"optim.ema_decay": 1.0}), str(tmp_path))
