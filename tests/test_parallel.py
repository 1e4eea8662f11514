"""make_mesh and shard_loss."""

import os
import subprocess
import sys

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


class _Chip:
  """A stand-in for a TPU device: what `parallel.ring_order` reads."""

  def __init__(self, x, y, z=0, core=0):
    self.coords, self.core_on_chip = (x, y, z), core

  def __repr__(self):
    return f"chip{self.coords[:2]}"


def _grid(nx, ny):
  return [_Chip(x, y) for y in range(ny) for x in range(nx)]  # row by row, as libtpu lists them


def _assert_neighbour_cycle(order, chips):
  assert sorted(map(id, order)) == sorted(map(id, chips))  # each chip once
  for a, b in zip(order, order[1:] + order[:1]):  # the last hop returns to the first chip
    assert sum(abs(i - j) for i, j in zip(a.coords, b.coords)) == 1, (a, b)


@pytest.mark.parametrize("nx, ny", [(2, 2), (4, 4), (16, 16), (4, 3), (3, 4), (2, 8)])
def test_ring_order_is_a_cycle_of_neighbours(nx, ny):
  chips = _grid(nx, ny)
  _assert_neighbour_cycle(parallel.ring_order(chips), chips)


@pytest.mark.parametrize(
  "chips",
  [
    _grid(3, 3),  # both sides odd: no cycle through every chip exists
    _grid(8, 1),  # one row
    [_Chip(x, y, z) for z in range(2) for y in range(2) for x in range(2)],  # a 3-D slice
    [_Chip(0, 0, 0, core) for core in range(4)],  # several cores of one chip
    _grid(4, 4)[:-1],  # not a whole grid
  ],
)
def test_ring_order_declines_what_it_cannot_order(chips):
  assert parallel.ring_order(chips) is None


def test_cpu_devices_keep_their_order():
  assert parallel.ring_order(jax.devices()) is None
  assert list(parallel.make_mesh().devices.flat) == jax.devices()


def test_a_tpu_pod_mesh_puts_the_batch_axis_in_ring_order():
  pytest.importorskip("libtpu")
  from jax.experimental import topologies

  chips = topologies.get_topology_desc(platform="tpu", topology_name="v5e:16x16").devices
  mesh = parallel.make_mesh(devices=chips)
  _assert_neighbour_cycle(list(mesh.devices.flat), chips)


_FSDP_ALL_GATHER = """
import jax, jax.numpy as jnp
from jax.experimental import topologies
from jax.sharding import NamedSharding, PartitionSpec as P
from contrastive import parallel
chips = topologies.get_topology_desc(platform="tpu", topology_name="v5e:8x8").devices
mesh = parallel.make_mesh(fsdp=2, devices=chips)
rows = NamedSharding(mesh, P(("data", "fsdp")))
x = jax.ShapeDtypeStruct((64 * 8, 128), jnp.float32, sharding=rows)
gather = jax.shard_map(lambda x: jax.lax.all_gather(x, "data", tiled=True)[:8], mesh=mesh,
                       in_specs=P(("data", "fsdp")), out_specs=P(("data", "fsdp")))
jax.jit(gather).lower(x).compile()
print("compiled")
"""


def test_an_fsdp_mesh_on_a_tpu_pod_compiles_its_data_axis_collectives():
  # Over a ring-ordered mesh, the all-gather over every other chip of the cycle makes libtpu abort
  # the process ("Failed to create limited ICI routing replica info table"): hence a subprocess.
  pytest.importorskip("libtpu")
  env = dict(os.environ, JAX_PLATFORMS="cpu", ALLOW_MULTIPLE_LIBTPU_LOAD="1")
  out = subprocess.run(
    [sys.executable, "-c", _FSDP_ALL_GATHER], env=env, capture_output=True, text=True, timeout=300
  )
  assert out.returncode == 0 and "compiled" in out.stdout, out.stderr[-2000:]
