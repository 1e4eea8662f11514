"""make_mesh and shard_loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from contrastive import losses
from contrastive import parallel


def test_make_mesh_takes_the_remaining_devices():
  mesh = parallel.make_mesh()
  assert dict(mesh.shape) == {"data": 8, "fsdp": 1, "tensor": 1}
  mesh = parallel.make_mesh(data=2, fsdp=-1, tensor=2)
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
  assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)


@pytest.mark.parametrize(
  "kwargs, match",
  [
    ({"data": 3}, "needs 3 devices"),
    ({"data": -1, "fsdp": -1}, "Only one"),
    ({"data": 0}, "positive"),
    ({"data": -1, "fsdp": 3}, "do not divide"),
  ],
)
def test_make_mesh_errors_name_the_problem(kwargs, match):
  with pytest.raises(ValueError, match=match):
    parallel.make_mesh(**kwargs)


def test_shard_loss_equals_the_single_device_call():
  x, y = jax.random.normal(jax.random.key(0), (2, 64, 8))
  single = losses.softmax_loss(x, y, 3.0)
  sharded = jax.jit(parallel.shard_loss(losses.softmax_loss, parallel.make_mesh()))(x, y, 3.0)
  np.testing.assert_allclose(sharded, single, rtol=1e-5)


def test_shard_loss_over_two_mesh_axes():
  mesh = parallel.make_mesh(data=4, fsdp=2)
  x, y = jax.random.normal(jax.random.key(1), (2, 32, 8))
  fn = parallel.shard_loss(losses.sigmoid_loss, mesh, axis=("data", "fsdp"))
  got = jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))(x, y, 2.0, -1.0)
  want = jax.value_and_grad(losses.reference.sigmoid_loss, argnums=(0, 1))(x, y, 2.0, -1.0)
  np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
  np.testing.assert_allclose(got[1][0], want[1][0], rtol=1e-5, atol=1e-6)


def test_shard_loss_names_an_indivisible_batch():
  fn = parallel.shard_loss(losses.softmax_loss, parallel.make_mesh())
  with pytest.raises(ValueError, match="not divisible by the 8 devices"):
    fn(jnp.ones((12, 4)), jnp.ones((12, 4)), 1.0)


def test_shard_loss_names_an_unknown_axis():
  with pytest.raises(ValueError, match="'batch' is not in the mesh"):
    parallel.shard_loss(losses.softmax_loss, parallel.make_mesh(), axis="batch")


def test_batch_axes_are_those_the_mesh_has():
  mesh = parallel.make_mesh(data=2, fsdp=4)
  assert parallel.batch_axes(mesh) == parallel.BATCH_AXES == ("data", "fsdp")
  assert parallel.batch_shards(mesh) == 8
  sharding = parallel.batch_sharding(mesh)
  assert sharding.spec == jax.sharding.PartitionSpec(("data", "fsdp")) and sharding.mesh is mesh
  data_axis = parallel.batch_sharding(mesh, batch_axes=("data",))
  assert data_axis.spec == jax.sharding.PartitionSpec("data")
  assert parallel.batch_shards(mesh, ("fsdp", "other")) == 4
  data_only = jax.sharding.Mesh(np.asarray(jax.devices()).reshape(8), ("data",))
  assert parallel.batch_axes(data_only) == ("data",) and parallel.batch_shards(data_only) == 8
  with pytest.raises(ValueError, match=r"batch axes \('model',\).*'data', 'fsdp', 'tensor'"):
    parallel.batch_sharding(mesh, batch_axes=("model",))


def test_initialize_does_nothing_without_an_address(monkeypatch):
  for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
    monkeypatch.delenv(name, raising=False)
  called = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: called.append(kw))
  assert not parallel.initialize(num_processes=2, process_id=0)
  assert not called


def test_initialize_takes_the_flags_then_the_environment(monkeypatch):
  called = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: called.append(kw))
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
  monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
  monkeypatch.setenv("JAX_PROCESS_ID", "3")
  monkeypatch.setenv("CONTRASTIVE_HEARTBEAT_TIMEOUT", "30")
  assert parallel.initialize(process_id=1)
  assert called[-1] == dict(
    coordinator_address="10.0.0.1:1234", num_processes=4, process_id=1, heartbeat_timeout_seconds=30
  )
  monkeypatch.delenv("JAX_COORDINATOR_ADDRESS")
  monkeypatch.delenv("CONTRASTIVE_HEARTBEAT_TIMEOUT")
  assert parallel.initialize(distributed=True)  # a cluster JAX detects: no address needed
  assert called[-1] == dict(coordinator_address=None, num_processes=4, process_id=3)


def test_host_flags_pass_their_values_to_initialize(monkeypatch):
  from absl import flags  # pylint: disable=g-import-not-at-top

  for name in (
    "JAX_COORDINATOR_ADDRESS",
    "JAX_NUM_PROCESSES",
    "JAX_PROCESS_ID",
    "CONTRASTIVE_HEARTBEAT_TIMEOUT",
  ):
    monkeypatch.delenv(name, raising=False)
  called = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: called.append(kw))
  flag_values = flags.FlagValues()
  hosts = parallel.define_host_flags(flag_values)
  flag_values(["prog"])
  assert not hosts.initialize() and not called
  flag_values(["prog", "--coordinator_address=127.0.0.1:5", "--num_processes=2", "--process_id=1"])
  assert hosts.initialize()
  assert called == [dict(coordinator_address="127.0.0.1:5", num_processes=2, process_id=1)]
  names = {"distributed", "coordinator_address", "num_processes", "process_id"}
  assert {f.name for f in flag_values.get_key_flags_for_module(__name__)} == names  # --help
