"""Teacher terms in the trainer: the EMA teacher's update and its resume, the frozen teacher that
never moves, and the config errors of terms, each before anything compiles."""

from __future__ import annotations

import os
import shutil

import jax
import numpy as np
import pytest

from contrastive import train
from tests.train import trainer_testing as tt

DEMO = os.path.join(tt.ROOT, "configs", "demo.py:runlocal")
M = 0.9  # the EMA teacher's momentum (ALBEF: 0.995; smaller so that 4 steps move it)


def _config(terms, **changes):
  return train.get_config(
    DEMO,
    {
      "total_steps": 4,
      "checkpoint.every_steps": 2,
      "checkpoint.keep": 10,
      "checkpoint.async_save": False,
      "eval.tasks": {},
      "loss.weight": 0.6,
      "loss.terms": terms,
      **changes,
    },
  )


EMA = {"distill": {"name": "distill", "weight": 0.4, "teacher": "ema", "momentum": M}}


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("ema"))
  metrics = train.train_and_evaluate(_config(EMA), workdir)
  return workdir, metrics


def test_each_term_is_logged_beside_the_total(ema_run):
  workdir, metrics = ema_run
  scalars = tt.read_scalars(os.path.join(workdir, "tensorboard"))
  total, parts = (
    scalars["train/loss"],
    (scalars["train/loss/softmax"], scalars["train/loss/distill"]),
  )
  for step in total:
    np.testing.assert_allclose(total[step], 0.6 * parts[0][step] + 0.4 * parts[1][step], rtol=1e-5)
  assert "train/loss/distill" in metrics
  assert scalars["train/tflops_per_device"][4] > 0  # the step's FLOPs (contrastive.train.mfu)


def test_the_ema_teacher_follows_the_parameters_and_resumes_bitwise(ema_run, tmp_path):
  """teacher_4 = m teacher_3 + (1 - m) params_4 is checked between checkpoints 2 and 4 by
  replaying: a run resumed from step 2 ends with the same teacher and parameters, bitwise."""
  workdir, _ = ema_run
  two, four = tt.load_state(workdir, 2), tt.load_state(workdir, 4)
  assert set(four["teachers"]) == {"distill"}
  # After step 2 the teacher is neither the parameters nor what it was.
  t2, p2 = two["teachers"]["distill"], two["params"]
  assert not np.array_equal(t2["text"]["head"]["kernel"], p2["text"]["head"]["kernel"])
  resumed = str(tmp_path / "resumed")
  shutil.copytree(workdir, resumed)
  shutil.rmtree(os.path.join(resumed, "checkpoints", "4"))
  train.train_and_evaluate(_config(EMA), resumed)
  again = tt.load_state(resumed, 4)
  tt.assert_trees_equal(again["teachers"], four["teachers"])
  tt.assert_trees_equal(again["params"], four["params"])


def test_one_ema_update_is_the_formula():
  from contrastive import losses
  from contrastive import models
  from contrastive import parallel
  from contrastive.run import config as run_config
  from contrastive.train import assemble
  from contrastive.train import config as config_lib

  config = run_config.resolve(_config(EMA))
  model = models.make_model(config.model)
  mesh = parallel.make_mesh()
  objective = losses.get(config.loss.name)
  step_config = config_lib.check_run(config, model=model, objective=objective, mesh=mesh)
  state, shardings, tx = assemble.create_train_state(config, model, mesh, terms=step_config.terms)
  tt.assert_trees_equal(state.teachers["distill"], state.params)  # starts as a copy
  step = assemble.make_train_step(config, model, objective, tx, mesh, shardings, step_config)
  rng = np.random.default_rng(0)
  batch = {
    "image": rng.normal(size=(32, 32, 32, 3)).astype(np.float32),
    "text": rng.integers(1, 40, size=(32, 24)).astype(np.int32),
  }
  batch = jax.device_put(batch, parallel.batch_sharding(mesh))
  before = jax.device_get(state.teachers["distill"])
  state, metrics = step(state, batch)
  after, params = jax.device_get((state.teachers["distill"], state.params))
  expected = jax.tree.map(lambda t, p: M * t + (1 - M) * p, before, params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), after, expected)
  assert {"loss", "loss/softmax", "loss/distill"} <= set(metrics)


def test_a_frozen_teacher_is_loaded_and_never_moves(ema_run, tmp_path):
  """Distillation from a run directory: the teacher is that run's parameters at every step."""
  teacher_dir, _ = ema_run
  terms = {
    "distill": {"name": "distill", "weight": 0.4, "teacher": "frozen", "teacher_from": teacher_dir}
  }
  workdir = str(tmp_path / "student")
  train.train_and_evaluate(_config(terms, total_steps=2), workdir)
  teacher = tt.load_state(teacher_dir, 4)["params"]
  student = tt.load_state(workdir, 2)
  tt.assert_trees_equal(student["teachers"]["distill"], teacher)
  assert not np.array_equal(
    student["params"]["text"]["head"]["kernel"], teacher["text"]["head"]["kernel"]
  )


@pytest.mark.parametrize(
  "terms,message",
  [
    (
      {"x": {"name": "sigmod"}},
      r"loss\.terms\.x\.name: Unknown loss 'sigmod'.*Did you mean 'sigmoid'",
    ),
    (
      {"x": {"name": "sigmoid", "weight": float("nan")}},
      r"loss\.terms\.x\.weight must be a finite",
    ),
    ({"cap": {"name": "caption"}}, r"loss\.terms\.cap is a caption term, and the model has no"),
    ({"softmax": {"name": "dcl"}}, r"first term \(loss\.name\) is already called 'softmax'"),
    ({"d": {"name": "distill", "teacher": "frozen", "teacher_from": "/nonexistent"}}, "No teacher"),
  ],
)
def test_bad_terms_fail_in_one_line_before_compiling(terms, message, tmp_path):
  with pytest.raises((ValueError, FileNotFoundError), match=message):
    train.train_and_evaluate(_config(terms), str(tmp_path))
  assert not os.path.exists(os.path.join(tmp_path, "checkpoints"))


def test_a_teacher_of_another_width_is_refused(ema_run, tmp_path):
  teacher_dir, _ = ema_run
  terms = {"distill": {"name": "distill", "teacher": "frozen", "teacher_from": teacher_dir}}
  with pytest.raises(ValueError, match=r"teacher's embedding width is 128, the model's 64"):
    train.train_and_evaluate(_config(terms, **{"model.embed_dim": 64}), str(tmp_path))


def test_a_caption_task_without_a_decoder_is_refused(tmp_path):
  tasks = {"cap": dict(kind="caption", source=dict(name="synthetic", split="test"))}
  with pytest.raises(ValueError, match=r"eval\.tasks\.cap is a caption task, and the model has no"):
    train.train_and_evaluate(_config({}, **{"eval.tasks": tasks}), str(tmp_path))
