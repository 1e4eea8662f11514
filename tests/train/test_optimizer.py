"""The optimizer: schedules, weight-decay masks, clipping, LiT locking, the CLIP scale bound."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from contrastive.run import config as run_config
from contrastive.train import config as config_lib
from contrastive.train import optimizer


def _optim(**kw):
  c = run_config.defaults().optim
  c.update(kw)
  return c


def test_warmup_then_cosine_reaches_end_lr():
  schedule = optimizer.learning_rate_schedule(
    _optim(lr=1.0, warmup_steps=4, schedule="cosine", end_lr=0.1), total_steps=14
  )
  values = [float(schedule(i)) for i in range(15)]
  np.testing.assert_allclose(values[:4], [0.25, 0.5, 0.75, 1.0], rtol=1e-6)
  np.testing.assert_allclose(values[4], 1.0, rtol=1e-6)  # the decay starts at the peak
  np.testing.assert_allclose(values[9], 0.1 + 0.9 * 0.5, rtol=1e-5)  # half-way down
  np.testing.assert_allclose(values[14], 0.1, rtol=1e-5)
  assert all(a >= b for a, b in zip(values[4:], values[5:]))


@pytest.mark.parametrize(
  "name,expected_last", [("linear", 0.0), ("constant", 1.0), ("rsqrt", math.sqrt(2 / (10 + 2)))]
)
def test_other_schedules(name, expected_last):
  schedule = optimizer.learning_rate_schedule(
    _optim(lr=1.0, warmup_steps=2, schedule=name, end_lr=0.0), total_steps=12
  )
  np.testing.assert_allclose(float(schedule(1)), 1.0, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(12)), expected_last, rtol=1e-5, atol=1e-7)


def test_unknown_schedule_and_optimizer_are_named():
  with pytest.raises(ValueError, match="cosin.*known"):
    optimizer.learning_rate_schedule(_optim(schedule="cosin"), total_steps=10)
  with pytest.raises(ValueError, match="adamm.*known.*adamw"):
    optimizer.make_optimizer(_optim(name="adamm"), {"w": jnp.ones((2, 2))}, total_steps=10)


def _params():
  return {
    "image": {
      "encoder": {
        "norm": {"scale": jnp.ones((4,)), "bias": jnp.ones((4,))},
        "dense": {"kernel": jnp.ones((4, 4)), "bias": jnp.ones((4,))},
      },
      "head": {"kernel": jnp.ones((4, 2))},
    },
    "text": {
      "encoder": {"embedding": {"embedding": jnp.ones((8, 4))}},
      "head": {"kernel": jnp.ones((4, 2))},
    },
    "log_scale": jnp.array(math.log(1 / 0.07), jnp.float32),
  }


def test_weight_decay_only_on_kernels_and_embeddings():
  params = _params()
  tx, _ = optimizer.make_optimizer(_optim(lr=0.1, weight_decay=0.5), params, total_steps=10)
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zeros, tx.init(params), params)
  new = optax.apply_updates(params, updates)
  decayed = lambda x: bool(jnp.all(x < 1.0))
  assert decayed(new["image"]["encoder"]["dense"]["kernel"])
  assert decayed(new["text"]["encoder"]["embedding"]["embedding"])
  for leaf in (
    new["image"]["encoder"]["norm"]["scale"],
    new["image"]["encoder"]["norm"]["bias"],
    new["image"]["encoder"]["dense"]["bias"],
  ):
    np.testing.assert_array_equal(leaf, 1.0)
  np.testing.assert_array_equal(new["log_scale"], params["log_scale"])


def test_gradient_clipping_bounds_the_global_norm():
  params = {"w": jnp.zeros((3, 3))}
  tx, _ = optimizer.make_optimizer(
    _optim(name="sgd", lr=1.0, b1=0.0, grad_clip_norm=2.0), params, total_steps=10
  )
  grads = {"w": jnp.full((3, 3), 10.0)}
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(float(optax.tree.norm(updates)), 2.0, rtol=1e-5)


def test_locked_tower_has_no_state_and_no_update():
  params = _params()
  tx, _ = optimizer.make_optimizer(
    _optim(lr=0.1, weight_decay=0.1), params, total_steps=10, locked=("image",)
  )
  state = tx.init(params)
  n_state = sum(x.size for x in jax.tree.leaves(state) if x.ndim)
  n_text = sum(x.size for x in jax.tree.leaves(params["text"]))
  assert n_state == 2 * n_text  # Adam's two moments, for the text tower only (+ scalars)
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, state, params)
  for leaf in jax.tree.leaves(updates["image"]):
    np.testing.assert_array_equal(leaf, 0.0)
  assert float(jnp.abs(updates["text"]["head"]["kernel"]).sum()) > 0


def test_log_scale_is_clamped_at_max_scale():
  params = {"log_scale": jnp.array(5.0), "w": jnp.ones(2)}
  out = optimizer.clip_log_scale(params, 100.0)
  np.testing.assert_allclose(float(out["log_scale"]), math.log(100.0), rtol=1e-6)
  np.testing.assert_array_equal(out["w"], params["w"])
  assert optimizer.clip_log_scale(params, None) is params


def test_batch_divisibility_messages():
  config_lib.check_batch(batch_size=32, shards=8, accum_steps=4)
  with pytest.raises(ValueError, match="12 is not divisible by the 8 devices"):
    config_lib.check_batch(batch_size=12, shards=8, accum_steps=1)
  with pytest.raises(ValueError, match="accum_steps=3"):
    config_lib.check_batch(batch_size=32, shards=8, accum_steps=3)
