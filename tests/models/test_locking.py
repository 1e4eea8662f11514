"""Tests for contrastive/models/locking.py: LiT locking through the optimizer."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from contrastive import models


def key(seed):
  return jax.random.key(seed, impl="unsafe_rbg")  # compiles much faster than threefry on CPU


@pytest.fixture(scope="module")
def setup():
  enc = lambda n: models.MLPEncoder(in_features=n, width=8, depth=1)
  model = models.TowerModel(
    encoders={"image": enc(3), "text": enc(5)},
    embed_dim=4,
    locked=("image",),
    proj_bias={"text": True},
  )
  batch = {
    "image": np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32),
    "text": np.random.default_rng(1).normal(size=(8, 5)).astype(np.float32),
  }
  params = nn.unbox(jax.jit(lambda r: model.init(r, batch, train=False))(key(2)))
  return model, batch, params["params"]


def test_trainable_mask(setup):
  model, _, params = setup
  mask = models.trainable_mask(params, locked=model.locked)
  assert not any(jax.tree.leaves(mask["image"]))
  assert all(jax.tree.leaves(mask["text"])) and mask["log_scale"]
  mask = models.trainable_mask(params, locked=("image/encoder", "log_scale"))
  assert not any(jax.tree.leaves(mask["image"]["encoder"]))
  assert all(jax.tree.leaves(mask["image"]["head"])) and not mask["log_scale"]
  assert all(jax.tree.leaves(models.trainable_mask(params)))
  labels = models.trainable_labels(params, locked=("text",))
  assert set(jax.tree.leaves(labels["text"])) == {"frozen"}


def test_unknown_locked_entry(setup):
  _, _, params = setup
  with pytest.raises(
    ValueError,
    match=r"'img' matches no parameter.*\['image', 'log_scale', "
    r"'text'\]",
  ):
    models.trainable_mask(params, locked=("img",))


def test_locked_tower_receives_no_update_and_no_optimizer_state(setup):
  model, batch, params = setup
  tx = models.lock(optax.adamw(1e-2), params, locked=model.locked)
  opt_state = tx.init(params)
  # Adam moments exist for the trainable leaves only.
  n_state = sum(x.size for x in jax.tree.leaves(opt_state))
  n_trainable = models.count_params({k: v for k, v in params.items() if k != "image"})
  assert n_state == 2 * n_trainable + 1  # mu and nu, plus the step count

  def loss(p):
    emb, extras = model.apply({"params": p}, batch, train=True)
    logits = extras["scale"] * emb["image"] @ emb["text"].T
    return optax.softmax_cross_entropy_with_integer_labels(logits, jnp.arange(8)).mean()

  @jax.jit
  def step(p, s):
    grads = jax.grad(loss)(p)
    updates, s = tx.update(grads, s, p)
    return optax.apply_updates(p, updates), s

  new = params
  for _ in range(3):
    new, opt_state = step(new, opt_state)
  jax.tree.map(np.testing.assert_array_equal, new["image"], params["image"])
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), new["text"], params["text"])
  assert all(jax.tree.leaves(changed))


def test_masked_weight_decay_also_spares_locked_leaves(setup):
  # The same mask drives optax.masked for a frozen tower when the optimizer is built by hand.
  model, _, params = setup
  mask = models.trainable_mask(params, locked=model.locked)
  tx = optax.chain(optax.masked(optax.add_decayed_weights(0.1), mask), optax.sgd(1.0))
  zero_grads = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zero_grads, tx.init(params), params)
  assert all(float(jnp.abs(u).max()) == 0 for u in jax.tree.leaves(updates["image"]))


def test_weight_decay_mask(setup):
  _, _, params = setup
  mask = models.weight_decay_mask(params)
  assert mask["text"]["head"] == {"kernel": True, "bias": False}
  assert mask["image"]["encoder"]["norm"] == {"scale": False, "bias": False}
  assert mask["log_scale"] is False


def test_lock_with_nothing_locked_is_the_optimizer(setup):
  _, _, params = setup
  tx = optax.sgd(1.0)
  assert models.lock(tx, params) is tx


def test_locked_scale_and_bias_stay_fixed_through_training():
  enc = lambda n: models.MLPEncoder(in_features=n, width=8, depth=1)
  model = models.TowerModel(
    encoders={"image": enc(3), "text": enc(5)},
    embed_dim=4,
    scale_init=20.0,
    bias_init=-3.0,
    locked=("log_scale", "bias"),
  )
  batch = {
    "image": np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32),
    "text": np.random.default_rng(1).normal(size=(8, 5)).astype(np.float32),
  }
  params = nn.unbox(model.init(key(3), batch, train=False))["params"]

  def loss(p):
    emb, extras = model.apply({"params": p}, batch, train=True)
    logits = extras["scale"] * emb["image"] @ emb["text"].T + extras["bias"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, jnp.arange(8)).mean()

  grads = jax.grad(loss)(params)
  assert float(grads["log_scale"]) == 0.0 and float(grads["bias"]) == 0.0
  assert np.abs(grads["text"]["head"]["kernel"]).sum() > 0
  tx = models.lock(optax.adam(0.1), params, locked=model.locked)
  state = tx.init(params)
  for _ in range(3):
    updates, state = tx.update(jax.grad(loss)(params), state, params)
    params = optax.apply_updates(params, updates)
  np.testing.assert_allclose(np.exp(params["log_scale"]), 20.0, rtol=1e-6)
  np.testing.assert_allclose(params["bias"], -3.0)


def test_locking_a_bias_the_model_lacks():
  enc = lambda n: models.MLPEncoder(in_features=n, width=8, depth=1)
  with pytest.raises(ValueError, match="Cannot lock 'bias': the model has none"):
    models.TowerModel(encoders={"image": enc(3)}, embed_dim=4, locked=("bias",))
