"""make_mesh and shard_loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from contrastive import losses, parallel


def test_make_mesh_takes_the_remaining_devices():
  mesh = parallel.make_mesh()
  assert dict(mesh.shape) == {"data": 8, "fsdp": 1, "tensor": 1}
  mesh = parallel.make_mesh(data=2, fsdp=-1, tensor=2)
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
  assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)


@pytest.mark.parametrize("kwargs, match", [
    ({"data": 3}, "needs 3 devices"),
    ({"data": -1, "fsdp": -1}, "Only one"),
    ({"data": 0}, "positive"),
    ({"data": -1, "fsdp": 3}, "do not divide"),
])
def test_make_mesh_errors_name_the_problem(kwargs, match):
  with pytest.raises(ValueError, match=match):
    parallel.make_mesh(**kwargs)


def test_shard_loss_equals_the_single_device_call():
  x, y = jax.random.normal(jax.random.key(0), (2, 64, 8))
  single = losses.softmax_loss(x, y, 3.0)
  sharded = jax.jit(parallel.shard_loss(losses.softmax_loss, parallel.make_mesh()))(x, y, 3.0)
  np.testing.assert_allclose(sharded, single, rtol=1e-6)


def test_shard_loss_over_two_mesh_axes():
  mesh = parallel.make_mesh(data=4, fsdp=2)
  x, y = jax.random.normal(jax.random.key(1), (2, 32, 8))
  fn = parallel.shard_loss(losses.sigmoid_loss, mesh, axis=("data", "fsdp"))
  got = jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))(x, y, 2.0, -1.0)
  want = jax.value_and_grad(losses.reference.sigmoid_loss, argnums=(0, 1))(x, y, 2.0, -1.0)
  np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
  np.testing.assert_allclose(got[1][0], want[1][0], rtol=1e-5, atol=1e-7)


def test_shard_loss_names_an_indivisible_batch():
  fn = parallel.shard_loss(losses.softmax_loss, parallel.make_mesh())
  with pytest.raises(ValueError, match="not divisible by the 8 devices"):
    fn(jnp.ones((12, 4)), jnp.ones((12, 4)), 1.0)


def test_shard_loss_names_an_unknown_axis():
  with pytest.raises(ValueError, match="'batch' is not in the mesh"):
    parallel.shard_loss(losses.softmax_loss, parallel.make_mesh(), axis="batch")
