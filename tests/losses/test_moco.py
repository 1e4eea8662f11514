"""moco_loss and its state: the ring over a sharded queue against the dense reference, the
InfoNCE special cases, the queue's ring buffer, the EMA, and a few steps of the trainer protocol."""

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from contrastive import losses
from contrastive import parallel
from contrastive.losses import reference
from contrastive.losses import registry
from tests.losses import loss_testing as lt

B, D = 24, 8


def _batch(seed=0, queue_size=40):
  return (
    lt.unit_rows(seed, (B, D)),
    lt.unit_rows(seed + 1, (B, D)),
    lt.unit_rows(seed + 2, (queue_size, D)),
  )


@pytest.mark.parametrize("batch_negatives", [False, True])
@pytest.mark.parametrize("n_devices,block_size", lt.CONFIGS, ids=lt.CONFIG_IDS)
def test_matches_reference(batch_negatives, n_devices, block_size):
  """A queue of 40 is 5 rows per device against a local batch of 3: folded to [3, 2, d] with one
  padded row, which must not count."""
  q, k, queue = _batch()
  lt.assert_matches_reference(
    losses.moco_loss,
    reference.moco_loss,
    (q, k, queue, 5.0),
    n_devices=n_devices,
    block_size=block_size,
    rtol=lt.RTOL,
    atol=lt.ATOL,
    relative_to="element",
    batch_negatives=batch_negatives,
  )


def test_empty_queue_with_batch_negatives_is_clip():
  """No queue, the batch's keys as negatives: one-direction InfoNCE; both directions averaged
  is the CLIP loss."""
  q, k, _ = _batch(seed=1)
  empty = jnp.zeros((0, D))
  value, _ = lt.ring_value_and_grads(
    losses.moco_loss, (q, k, empty, 5.0), n_devices=8, block_size=2, batch_negatives=True
  )
  logits = 5.0 * q @ k.T
  np.testing.assert_allclose(
    value, jnp.mean(jax.nn.logsumexp(logits, 1) - jnp.diag(logits)), rtol=1e-5
  )
  both = jax.jit(
    lambda q, k: (
      (
        losses.moco_loss(q, k, empty, 5.0, batch_negatives=True)
        + losses.moco_loss(k, q, empty, 5.0, batch_negatives=True)
      )
      / 2
    )
  )
  np.testing.assert_allclose(both(q, k), reference.softmax_loss(q, k, 5.0), rtol=1e-5)


def test_empty_queue_alone_is_zero():
  q, k, _ = _batch(seed=2)
  assert float(losses.moco_loss(q, k, jnp.zeros((0, D)), 5.0)) == 0.0


def test_queue_of_the_batch_keys():
  """queue = k: MoCo's denominator holds the positive twice, so the loss is the one-direction
  InfoNCE plus mean log(1 + p_ii); with the batch's keys as negatives too, InfoNCE + log 2."""
  q, k, _ = _batch(seed=3)
  logits = 5.0 * q @ k.T
  infonce = jax.nn.logsumexp(logits, 1) - jnp.diag(logits)
  p_ii = jnp.exp(-infonce)
  fn = jax.jit(
    lambda q, k, bn: losses.moco_loss(q, k, k, 5.0, batch_negatives=bn), static_argnums=2
  )
  np.testing.assert_allclose(fn(q, k, False), jnp.mean(infonce + jnp.log1p(p_ii)), rtol=1e-5)
  np.testing.assert_allclose(fn(q, k, True), jnp.mean(infonce) + np.log(2.0), rtol=1e-5)


def test_registry_with_the_queue_on_the_mesh():
  """The trainer's call: embeddings (q, k), the queue in `side`, sharded over the mesh."""
  q, k, queue = _batch(seed=4, queue_size=64)
  objective = registry.get("moco")
  fn = parallel.shard_loss(
    lambda emb, scale, side, axis_name: objective(
      emb, scale, None, side, axis_name=axis_name, block_size=2
    ),
    parallel.make_mesh(),
  )
  got = jax.jit(fn)((q, k), 5.0, {"queue": queue})
  np.testing.assert_allclose(got, reference.moco_loss(q, k, queue, 5.0), rtol=1e-5)
  np.testing.assert_allclose(objective.dense((q, k), 5.0, side={"queue": queue}), got, rtol=1e-5)
  with pytest.raises(KeyError, match="queue"):
    objective((q, k), 5.0)


def test_extreme_inputs_stay_finite():
  q, k, queue = _batch(seed=5)
  lt.assert_finite_losses(
    losses.moco_loss,
    (q, k, queue, 1e4),
    (q, q, jnp.tile(q, (2, 1))[:40], 1e4),
    (100.0 * q, k, queue, 10.0),
  )


def test_bad_input():
  q, k, queue = _batch()
  with pytest.raises(ValueError, match="dim 8"):
    losses.moco_loss(q, k, queue[:, :4], 1.0)
  with pytest.raises(ValueError, match=r"\[queue_size, dim\]"):
    losses.moco_loss(q, k, queue[0], 1.0)
  with pytest.raises(ValueError, match="same"):
    losses.moco_loss(q, k[:12], queue, 1.0)
  with pytest.raises(TypeError, match="floating"):
    losses.moco_loss(q, k, queue.astype(jnp.int32), 1.0)


# ----------------------------------------------------------------------------------------------
# The state.


def test_update_queue_wraps_around():
  queue = jnp.zeros((10, 2))
  keys = jnp.arange(1, 9, dtype=jnp.float32).reshape(4, 2)
  new, ptr = losses.update_queue(queue, keys, 8)
  np.testing.assert_array_equal(new[jnp.array([8, 9, 0, 1])], keys)
  np.testing.assert_array_equal(new[2:8], 0)
  assert int(ptr) == 2 and ptr.dtype == jnp.int32


def test_update_queue_keeps_the_newest_when_keys_outnumber_rows():
  keys = jnp.arange(6, dtype=jnp.float32)[:, None] * jnp.ones((1, 2))
  new, ptr = losses.update_queue(jnp.zeros((4, 2)), keys, 1)
  # Written in order from row 1: keys 0..5 land on rows 1, 2, 3, 0, 1, 2; the last write wins.
  np.testing.assert_array_equal(new[:, 0], [3, 4, 5, 2])
  assert int(ptr) == 3


def test_update_queue_sharded_matches_global():
  """Inside shard_map (local queue rows, local keys) the update equals the global one, and a
  global sharded queue under jit keeps its sharding."""
  mesh = parallel.make_mesh()
  queue = lt.unit_rows(0, (40, D))
  keys = lt.unit_rows(1, (B, D))
  for ptr in (0, 30):
    want, want_ptr = losses.update_queue(queue, keys, ptr)
    local = jax.jit(
      jax.shard_map(
        lambda qu, ke, p: losses.update_queue(qu, ke, p, axis_name="data"),
        mesh=mesh,
        in_specs=(P("data"), P("data"), P()),
        out_specs=(P("data"), P()),
      )
    )
    got, got_ptr = local(queue, keys, jnp.int32(ptr))
    np.testing.assert_array_equal(got, want)
    assert int(got_ptr) == int(want_ptr) == (ptr + B) % 40
  sharded = jax.device_put(queue, NamedSharding(mesh, P("data")))
  got, _ = jax.jit(losses.update_queue)(sharded, keys, jnp.int32(30))
  np.testing.assert_array_equal(got, want)
  assert got.sharding.is_equivalent_to(sharded.sharding, 2)


def test_init_queue():
  mesh = parallel.make_mesh()
  queue, ptr = losses.init_queue(jax.random.key(0), 64, D, sharding=NamedSharding(mesh, P("data")))
  assert queue.shape == (64, D) and int(ptr) == 0
  np.testing.assert_allclose(jnp.linalg.norm(queue, axis=-1), 1.0, rtol=1e-5)
  assert queue.sharding.is_equivalent_to(NamedSharding(mesh, P("data")), 2)
  with pytest.raises(ValueError, match="queue_size"):
    losses.init_queue(jax.random.key(0), -1, D)


def test_ema_update():
  online = {"w": jnp.ones((2, 3)), "b": jnp.full((3,), 4.0, jnp.bfloat16)}
  target = {"w": jnp.zeros((2, 3)), "b": jnp.zeros((3,), jnp.bfloat16)}
  new = losses.ema_update(online, target, 0.9)
  np.testing.assert_allclose(new["w"], 0.1, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(new["b"], np.float32), 0.4, rtol=1e-2)
  assert new["b"].dtype == jnp.bfloat16
  lt.assert_close(
    losses.ema_update(online, target, 1.0), target, atol=lt.ATOL, relative_to="element"
  )
  lt.assert_close(
    losses.ema_update(online, target, 0.0), online, atol=lt.ATOL, relative_to="element"
  )
  with pytest.raises(ValueError, match="momentum"):
    losses.ema_update(online, target, 1.5)
  with pytest.raises(ValueError, match="structure"):
    losses.ema_update(online, {"w": target["w"]}, 0.9)


def test_trainer_protocol():
  """Three steps of what a trainer carries: online and target parameters, the sharded queue and
  its pointer. The keys enter the queue and the target parameters trail the online ones."""
  mesh = parallel.make_mesh()
  data = NamedSharding(mesh, P("data"))
  encode = lambda w, x: x @ w / jnp.linalg.norm(x @ w, axis=-1, keepdims=True)
  loss_fn = parallel.shard_loss(losses.moco_loss, mesh)

  @jax.jit
  def step(online, target, queue, ptr, x1, x2):
    k = jax.lax.stop_gradient(encode(target, x2))
    loss, grad = jax.value_and_grad(lambda w: loss_fn(encode(w, x1), k, queue, 10.0))(online)
    online = online - 0.5 * grad
    queue, ptr = losses.update_queue(queue, k, ptr)
    return online, losses.ema_update(online, target, 0.9), queue, ptr, loss, k

  online = jax.random.normal(jax.random.key(0), (D, D))
  target = online
  queue, ptr = losses.init_queue(jax.random.key(1), 48, D, sharding=data)
  for i in range(3):
    x = jax.device_put(jax.random.normal(jax.random.key(10 + i), (B, D)), data)
    x1, x2 = x + 0.1, x - 0.1
    online, target, queue, ptr, loss, k = step(online, target, queue, ptr, x1, x2)
    assert np.isfinite(float(loss))
    np.testing.assert_allclose(queue[(i * B) % 48 : (i * B) % 48 + B], k, rtol=1e-6)
    assert int(ptr) == ((i + 1) * B) % 48
  assert not np.allclose(online, target)
