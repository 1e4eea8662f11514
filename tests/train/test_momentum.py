"""The trainer's momentum encoder and queues (`moco`): the step's loss against a direct
computation, the EMA after one step, the queues after several, a checkpoint round trip that
resumes bit for bit, and a key encoder that starts as the model of `checkpoint.init_from`."""

import jax
import ml_collections
import numpy as np
import optax
import pytest

from contrastive import losses
from contrastive import models
from contrastive import parallel
from contrastive.losses import reference
from contrastive.train import checkpoint as checkpoint_lib
from contrastive.train import loop
from contrastive.train import momentum as momentum_lib
from contrastive.train import state as state_lib
from contrastive.train import step as step_lib

MODALITIES = ("image", "text")
BATCH, QUEUE, M = 32, 80, 0.9  # 96 keys in 3 steps: the queue of 80 wraps around


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


def _batch(mesh, seed):
  rng = np.random.default_rng(seed)
  batch = {
    "image": rng.normal(size=(BATCH, 16, 16, 3)).astype(np.float32),
    "text": rng.integers(1, 64, size=(BATCH, 8)).astype(np.int32),
  }
  return jax.device_put(batch, parallel.batch_sharding(mesh))


def _setup(mesh, *, materialize=True):
  model = _model()
  state, shardings, tx = state_lib.create_train_state(
    model,
    lambda _: optax.adam(1e-2),
    mesh,
    seed=0,
    materialize=materialize,
    queue_size=QUEUE,
    queue_sharding=parallel.batch_sharding(mesh),
  )
  config = step_lib.StepConfig(modalities=MODALITIES, momentum=M)
  train_step = step_lib.make_train_step(
    model,
    losses.get("moco"),
    tx,
    lambda s: 1e-2,
    mesh,
    shardings,
    {m: parallel.batch_sharding(mesh) for m in MODALITIES},
    config,
  )
  return model, state, shardings, train_step


def _host(tree):
  return jax.tree.map(np.array, jax.device_get(tree))


@pytest.fixture(scope="module")
def mesh():
  return parallel.make_mesh()


def test_state_layout(mesh):
  _, state, shardings, _ = _setup(mesh)
  assert isinstance(state.loss_state, momentum_lib.MomentumState)
  for m in MODALITIES:
    queue = state.loss_state.queues[m]
    assert queue.shape == (QUEUE, 16)
    assert queue.sharding == parallel.batch_sharding(mesh)  # split over the batch axes
    np.testing.assert_allclose(np.linalg.norm(np.asarray(queue), axis=-1), 1.0, rtol=1e-5)
  assert shardings.loss_state.params == shardings.params  # the key encoder like the online one
  jax.tree.map(np.testing.assert_array_equal, _host(state.loss_state.params), _host(state.params))


def test_loss_ema_and_queues_follow_the_formulas(mesh):
  model, state, _, train_step = _setup(mesh)
  keys_fn = jax.jit(lambda s, b: momentum_lib.keys(model, s, b))
  rng = jax.random.fold_in(jax.random.key(0), 0)  # the step's dropout key (seed 0, step 0)
  apply_fn = jax.jit(lambda p, b: model.apply({"params": p}, b, train=True, rngs={"dropout": rng}))
  expected = _host(state.loss_state.queues)
  ptr = 0
  for step in range(3):
    batch = _batch(mesh, step)
    with parallel.use_rules(mesh):
      keys = _host(keys_fn(state.loss_state, batch))
      if step == 0:
        params_0, target_0 = _host(state.params), _host(state.loss_state.params)
        emb, extras = apply_fn(state.params, batch)
        scale = extras["scale"]
        direct = (
          reference.moco_loss(emb["image"], keys["text"], expected["text"], scale)
          + reference.moco_loss(emb["text"], keys["image"], expected["image"], scale)
        ) / 2
    state, metrics = train_step(state, batch)
    if step == 0:
      # The loss: both directions, each against the other modality's keys and queue.
      np.testing.assert_allclose(metrics["loss"], direct, rtol=1e-5)
      # theta_k <- m theta_k + (1 - m) theta_q, with the updated theta_q (theta_k was theta_q).
      jax.tree.map(
        lambda t, t0, p: np.testing.assert_allclose(t, M * t0 + (1 - M) * p, rtol=1e-6, atol=1e-7),
        _host(state.loss_state.params),
        target_0,
        _host(state.params),
      )
      assert not all(jax.tree.leaves(jax.tree.map(np.array_equal, _host(state.params), params_0)))
    for m in MODALITIES:  # a ring buffer: row (ptr + r) mod QUEUE gets key r
      expected[m][(ptr + np.arange(BATCH)) % QUEUE] = keys[m]
    ptr = (ptr + BATCH) % QUEUE
  assert int(state.loss_state.ptr) == ptr == 16
  for m in MODALITIES:
    np.testing.assert_allclose(np.asarray(state.loss_state.queues[m]), expected[m], atol=1e-6)


def test_checkpoint_round_trip_resumes_exactly(mesh, tmp_path):
  _, state, _, train_step = _setup(mesh)
  for step in range(2):
    state, _ = train_step(state, _batch(mesh, step))
  checkpointer = checkpoint_lib.Checkpointer(tmp_path, every_steps=1, keep=1, async_save=False)
  checkpointer.save(2, state, force=True)
  checkpointer.wait()
  saved = _host(state)
  abstract = _setup(mesh, materialize=False)[1]
  restored, _ = checkpointer.restore(2, abstract)
  checkpointer.close()
  assert isinstance(restored.loss_state, momentum_lib.MomentumState)
  jax.tree.map(np.testing.assert_array_equal, _host(restored), saved)
  assert restored.loss_state.queues["text"].sharding == parallel.batch_sharding(mesh)
  # The next step from the restored state equals the next step of the run, bit for bit.
  batch = _batch(mesh, 2)
  a, _ = train_step(state, batch)
  b, _ = train_step(restored, batch)
  jax.tree.map(np.testing.assert_array_equal, _host(a), _host(b))
  # A new run initialized from it (checkpoint.init_from) starts its key encoder as that model.
  _, fresh, shardings, _ = _setup(mesh)
  config = ml_collections.ConfigDict(
    {"checkpoint": {"init_from": str(tmp_path), "init_from_step": None, "init_from_keys": ()}}
  )
  init = loop._init_from(fresh, shardings, config)
  jax.tree.map(np.testing.assert_array_equal, _host(init.loss_state.params), saved.params)
  jax.tree.map(np.testing.assert_array_equal, _host(init.params), saved.params)


def test_gradcache_is_refused():
  mesh = parallel.make_mesh()
  with pytest.raises(ValueError, match="does not combine with GradCache"):
    config = step_lib.StepConfig(modalities=MODALITIES, momentum=M, accum_steps=2)
    step_lib.make_momentum_grad_fn(_model(), losses.get("moco"), mesh, config)
