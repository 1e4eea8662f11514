"""The trainer's per-example state (`isogclr`): its layout, the step's update against a numpy
transcription of the authors' `iSogCLR_Loss`, a checkpoint round trip, the bad inputs, and the
loss zoo's config through the trainer."""

import importlib.util
import math
import pathlib

import jax
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from contrastive import losses
from contrastive import models
from contrastive import parallel
from contrastive.train import checkpoint as checkpoint_lib
from contrastive.train import example_state
from contrastive.train import loop
from contrastive.train import state as state_lib
from contrastive.train import step as step_lib

MODALITIES = ("image", "text")
N, BATCH = 48, 16  # three steps make an epoch
# rho below log(B - 1) = 2.7 and a small step, so that temperatures move both ways, unclipped
# (the authors' rho = 8 exceeds it at any batch below e^8: every temperature falls to tau_min).
UPDATE = {"rho": 2.0, "eta": 0.003}
OPTS = losses.IsogclrOptions(**UPDATE)


def _model():
  cfg = models.model_config(
    image="mu/8",
    text="mu",
    image_size=16,
    vocab_size=64,
    max_len=8,
    embed_dim=16,
    convention="clip",
  )
  return models.make_model(cfg)


def _setup(mesh, *, materialize=True):
  model = _model()
  state, shardings, tx = state_lib.create_train_state(
    model,
    lambda _: optax.adam(1e-2),
    mesh,
    seed=0,
    materialize=materialize,
    example_state_size=N,
    tau_init=OPTS.tau_init,
  )
  config = step_lib.StepConfig(
    modalities=MODALITIES, side_keys=("index",), loss_options=UPDATE, example_state_size=N
  )
  keys = (*MODALITIES, "index")
  train_step = step_lib.make_train_step(
    model,
    losses.get("isogclr"),
    tx,
    lambda s: 1e-2,
    mesh,
    shardings,
    {k: parallel.batch_sharding(mesh) for k in keys},
    config,
  )
  return model, state, shardings, train_step


def _batch(mesh, seed, ids):
  rng = np.random.default_rng(seed)
  batch = {
    "image": rng.normal(size=(BATCH, 16, 16, 3)).astype(np.float32),
    "text": rng.integers(1, 64, size=(BATCH, 8)).astype(np.int32),
    "index": np.asarray(ids, np.int32),
  }
  return jax.device_put(batch, parallel.batch_sharding(mesh))


def _host(tree):
  return jax.tree.map(np.array, jax.device_get(tree))


@pytest.fixture(scope="module")
def mesh():
  return parallel.make_mesh()


class Authors:
  """numpy transcription of `iSogCLR_Loss.forward` (zhqiu/contrastive-learning-iSogCLR,
  bimodal_exps/models/losses.py): s, b, u (the momentum) and tau per example, per modality."""

  def __init__(self, n):
    self.s = {m: np.zeros(n) for m in "IT"}
    self.b = {m: np.zeros(n) for m in "IT"}
    self.u = {m: np.zeros(n) for m in "IT"}
    self.tau = {m: np.full(n, OPTS.tau_init) for m in "IT"}

  def forward(self, image, text, ids, epoch):
    o, bsz = OPTS, len(ids)
    sim = image.astype(np.float64) @ text.astype(np.float64).T
    diag = np.diagonal(sim)
    diffs = {"I": sim - diag[:, None], "T": (sim - diag[None, :]).T}  # anchors along rows
    mask = 1.0 - np.eye(bsz)
    loss = 0.0
    for m in "IT":
      tau = self.tau[m][ids]
      z = diffs[m] / tau[:, None]
      old_b = self.b[m][ids].copy()
      self.b[m][ids] = np.maximum(z.max(1), old_b)
      b = self.b[m][ids]
      e = np.exp(z - b[:, None]) * mask
      g = e.sum(1)
      s = g if epoch == 0 else (1 - o.gamma) * self.s[m][ids] * np.exp(old_b - b) + o.gamma * g
      self.s[m][ids] = s
      s = np.maximum(s, 1e-14)
      w = e / s[:, None]
      loss += np.mean(np.sum(w * diffs[m], 1))
      grad = np.log(s / (bsz - 1)) + b + o.rho - np.sum(w * z, 1)
      self.u[m][ids] = (1 - o.beta) * self.u[m][ids] + o.beta * np.clip(grad, -5, 5)
      self.tau[m][ids] = np.clip(tau - o.eta * self.u[m][ids], o.tau_min, o.tau_max)
    return loss

  def log_u(self, m):  # the mean's log: log(s e^b / (B - 1)); -inf where not seen
    with np.errstate(divide="ignore"):
      return np.log(self.s[m]) + self.b[m] - np.log(BATCH - 1)


def test_state_layout(mesh):
  _, state, shardings, _ = _setup(mesh)
  assert isinstance(state.loss_state, example_state.ExampleState)
  for m in MODALITIES:
    np.testing.assert_array_equal(state.loss_state.tau[m], np.full(N, OPTS.tau_init, np.float32))
    assert np.all(np.isneginf(np.asarray(state.loss_state.log_u[m])))
    assert shardings.loss_state.tau[m].spec == jax.sharding.PartitionSpec()  # replicated


def test_step_follows_the_authors_update(mesh):
  model, state, _, train_step = _setup(mesh)
  order = np.random.default_rng(0).permutation(N)
  schedule = [order[:16], order[16:32], order[32:], order[::3], order[1::3]]  # 1 epoch, then 2/3
  authors = Authors(N)
  for step, ids in enumerate(schedule):
    batch = _batch(mesh, step, ids)
    rng = jax.random.fold_in(jax.random.key(0), step)  # the step's dropout key (seed 0)
    with parallel.use_rules(mesh):
      emb, _ = jax.jit(
        lambda p, b, r=rng: model.apply({"params": p}, b, train=True, rngs={"dropout": r})
      )(state.params, {m: batch[m] for m in MODALITIES})
    expected_loss = authors.forward(*_host([emb["image"], emb["text"]]), ids, epoch=step // 3)
    state, metrics = train_step(state, batch)
    np.testing.assert_allclose(metrics["loss"], expected_loss, rtol=1e-4, atol=1e-5)
    got = _host(state.loss_state)
    for m, a in zip(MODALITIES, "IT"):
      np.testing.assert_allclose(got.tau[m], authors.tau[a], rtol=1e-4)
      # The gradient log u + rho - q cancels terms of ~20 known to float32 at 1 / tau = 100.
      np.testing.assert_allclose(got.momentum[m], authors.u[a], rtol=1e-4, atol=1e-3)
      np.testing.assert_allclose(got.log_u[m], authors.log_u(a), rtol=1e-4, atol=1e-3)
  moved = got.tau["image"] - OPTS.tau_init
  assert np.any(moved > 0) and np.any(moved < 0)  # the temperatures moved apart, both ways


def test_checkpoint_round_trip_resumes_exactly(mesh, tmp_path):
  _, state, _, train_step = _setup(mesh)
  for step in range(2):
    state, _ = train_step(state, _batch(mesh, step, np.arange(BATCH) + BATCH * step))
  checkpointer = checkpoint_lib.Checkpointer(tmp_path, every_steps=1, keep=1, async_save=False)
  checkpointer.save(2, state, force=True)
  checkpointer.wait()
  saved = _host(state)
  restored, _ = checkpointer.restore(2, _setup(mesh, materialize=False)[1])
  checkpointer.close()
  assert isinstance(restored.loss_state, example_state.ExampleState)
  jax.tree.map(np.testing.assert_array_equal, _host(restored), saved)
  batch = _batch(mesh, 2, np.arange(BATCH) + 8)  # half of these ids were seen before
  a, _ = train_step(state, batch)
  b, _ = train_step(restored, batch)
  jax.tree.map(np.testing.assert_array_equal, _host(a), _host(b))


def test_bad_ids_fail_with_one_line(mesh):
  *_, train_step = _setup(mesh)
  _, state, _, _ = _setup(mesh)
  batch = _batch(mesh, 0, np.arange(BATCH) + N - 4)
  with pytest.raises(ValueError, match=r"must be in \[0, 48\)"):
    train_step(state, batch)
  without = {k: v for k, v in _batch(mesh, 0, np.arange(BATCH)).items() if k != "index"}
  with pytest.raises(ValueError, match="needs example ids in the batch"):
    example_state.check_ids(without, N)


def test_unsupported_configs_are_refused():
  with pytest.raises(ValueError, match="only term, without GradCache"):
    step_lib.StepConfig(modalities=MODALITIES, example_state_size=N, accum_steps=2)
  data = ml_collections.ConfigDict({"mixture": {"a": {"source": "synthetic", "weight": 1.0}}})
  with pytest.raises(ValueError, match="mixture"):
    example_state.dataset_size(data)


def test_loss_zoo_config_trains(tmp_path):
  """configs/loss_zoo.py:loss=isogclr,runlocal through the trainer: finite loss, and the saved
  state holds the rows of the examples it saw."""
  spec = importlib.util.spec_from_file_location(
    "loss_zoo", pathlib.Path(__file__).parents[2] / "configs" / "loss_zoo.py"
  )
  zoo = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(zoo)
  config = zoo.get_config("loss=isogclr,runlocal")
  config.total_steps = 2
  config.eval.tasks = {}
  result = loop.train_and_evaluate(config, tmp_path)
  assert math.isfinite(result["train/loss"]) and result["train/loss"] != 0.0
  path = tmp_path / "checkpoints" / "2" / "state"
  saved = ocp.PyTreeCheckpointer().restore(path)["loss_state"]
  size = config.data.synthetic.train_size
  seen = np.isfinite(np.asarray(saved["log_u"]["image"]))
  assert saved["tau"]["text"].shape == (size,)
  assert seen.sum() == 2 * config.data.batch_size  # two batches of distinct examples
