"""The ring engine on a made-up loss that uses every feature: pytree tiles, float and integer
side data on rows and columns, row and column reductions, home terms, and the fused linear mode.
Each is held to the same loss written densely and differentiated by JAX."""

import jax
import jax.numpy as jnp
import pytest

from contrastive import losses
from contrastive import parallel
from contrastive.losses import ReducedBlock
from contrastive.losses import Tile
from contrastive.losses import TileLoss
from contrastive.losses import ring_loss
from tests.losses import loss_testing as lt

B, D = 24, 8


def _two_pass_tile(tile: Tile):
  x0, x1 = tile.x
  same_label = tile.row["label"][:, None] == tile.col["label"][None, :]
  a = tile.params["scale"] * jnp.dot(x0, tile.y.T) + tile.col["w"][None, :]
  b = jnp.where(same_label & ~tile.positive, jnp.dot(x1, tile.y.T), 0.0)
  return {"a": a, "b": b, "c": jnp.tanh(a)}


def _two_pass_finalize(home: ReducedBlock):
  x0, _ = home.x
  n = home.global_batch
  return (
    jnp.sum(home.stats["a"]) / n
    + 0.5 * jnp.sum(home.stats["b"]) / n
    + jnp.sum(home.stats["c"] ** 2) / n**2
    + jnp.sum(home.row["u"][:, None] * x0) / n
  )


TWO_PASS = TileLoss(
  _two_pass_tile, {"a": "row_lse", "b": "col_sum", "c": "col_lse"}, _two_pass_finalize
)


def two_pass_dense(x0, x1, y, scale, u, w, label):
  n = y.shape[0]
  a = scale * x0 @ y.T + w[None, :]
  same = (label[:, None] == label[None, :]) & ~jnp.eye(n, dtype=bool)
  b = jnp.where(same, x1 @ y.T, 0.0)
  c = jnp.tanh(a)
  return (
    jnp.sum(jax.nn.logsumexp(a, axis=1)) / n
    + 0.5 * jnp.sum(b) / n
    + jnp.sum(jax.nn.logsumexp(c, axis=0) ** 2) / n**2
    + jnp.sum(u[:, None] * x0) / n
  )


def _linear_tile(tile: Tile):
  z = tile.params["scale"] * tile.sim * tile.col["c"][None, :] + tile.params["bias"]
  return {"r": jax.nn.softplus(jnp.where(tile.positive, -z, z)), "k": tile.sim}


def _linear_finalize(home: ReducedBlock):
  # The last term uses x, scale and the column data directly, not through the statistics.
  home_term = jnp.sum(jnp.sin(home.x) * home.col["c"][:, None]) * home.params["scale"]
  return (jnp.sum(home.stats["r"]) + 0.1 * jnp.sum(home.stats["k"]) + home_term) / home.global_batch


LINEAR = TileLoss(_linear_tile, {"r": "row_sum", "k": "col_sum"}, _linear_finalize, linear=True)


def linear_dense(x, y, scale, bias, c):
  n = x.shape[0]
  z = scale * (x @ y.T) * c[None, :] + bias
  return (
    jnp.sum(jax.nn.softplus(jnp.where(jnp.eye(n, dtype=bool), -z, z)))
    + 0.1 * jnp.sum(x @ y.T)
    + jnp.sum(jnp.sin(x) * c[:, None]) * scale
  ) / n


def _inputs():
  x0, x1, y = lt.unit_embeddings(0, B, D, n=3)
  u = jnp.linspace(-1.0, 1.0, B)
  w = jnp.cos(jnp.arange(B, dtype=jnp.float32))
  label = jnp.arange(B) % 5
  return x0, x1, y, u, w, label


def _sharded(fn, n_devices):
  if n_devices == 1:
    return fn
  return jax.shard_map(
    lambda *a: fn(*a, axis_name="data"),
    mesh=lt.sub_mesh(n_devices),
    in_specs=jax.sharding.PartitionSpec("data"),
    out_specs=jax.sharding.PartitionSpec(),
  )


@pytest.mark.parametrize("n_devices, block_size", [(1, None), (1, 5), (8, 2), (4, 4)])
def test_two_pass_engine_matches_autodiff_of_dense(n_devices, block_size):
  x0, x1, y, u, w, label = _inputs()

  def ring(x0, x1, y, scale, u, w, label, axis_name=None):
    return ring_loss(
      TWO_PASS,
      (x0, x1),
      y,
      {"scale": scale},
      {"u": u, "label": label},
      {"w": w, "label": label},
      axis_name=axis_name,
      block_size=block_size,
    )

  if n_devices > 1:
    mesh = lt.sub_mesh(n_devices)
    P = jax.sharding.PartitionSpec
    ring_fn = jax.shard_map(
      lambda *a: ring(*a, axis_name="data"),
      mesh=mesh,
      in_specs=(P("data"),) * 3 + (P(),) + (P("data"),) * 3,
      out_specs=P(),
    )
  else:
    ring_fn = ring
  args = (x0, x1, y, 3.0, u, w, label)
  got = jax.jit(jax.value_and_grad(ring_fn, argnums=(0, 1, 2, 3, 4, 5)))(*args)
  want = jax.value_and_grad(two_pass_dense, argnums=(0, 1, 2, 3, 4, 5))(*args)
  lt.assert_close(got, want, rtol=1e-5)


@pytest.mark.parametrize("n_devices, block_size", [(1, 5), (8, None), (8, 2)])
def test_linear_engine_matches_autodiff_of_dense(n_devices, block_size):
  x, y = lt.unit_embeddings(1, B, D)
  c = 1.0 + 0.5 * jnp.sin(jnp.arange(B, dtype=jnp.float32))

  def ring(x, y, scale, bias, c):
    return ring_loss(
      LINEAR, x, y, {"scale": scale, "bias": bias}, col={"c": c}, block_size=block_size
    )

  fn = (
    ring
    if n_devices == 1
    else parallel.shard_loss(
      lambda x, y, s, b, c, axis_name: ring_loss(
        LINEAR,
        x,
        y,
        {"scale": s, "bias": b},
        col={"c": c},
        axis_name=axis_name,
        block_size=block_size,
      ),
      lt.sub_mesh(n_devices),
    )
  )
  args = (x, y, 4.0, -2.0, c)
  got = jax.jit(jax.value_and_grad(fn, argnums=(0, 1, 2, 3, 4)))(*args)
  want = jax.value_and_grad(linear_dense, argnums=(0, 1, 2, 3, 4))(*args)
  lt.assert_close(got, want, rtol=1e-5)


def test_tile_loss_rejects_unknown_reductions():
  with pytest.raises(ValueError, match="row_max"):
    TileLoss(_linear_tile, {"r": "row_max"}, _linear_finalize)
  with pytest.raises(ValueError, match="linear"):
    TileLoss(_linear_tile, {"r": "row_lse"}, _linear_finalize, linear=True)


def test_every_device_returns_the_same_loss():
  x, y = lt.unit_embeddings(2, 32, D)
  P = jax.sharding.PartitionSpec
  per_device = jax.shard_map(
    lambda x, y: losses.softmax_loss(x, y, 5.0, axis_name="data")[None],
    mesh=parallel.make_mesh(),
    in_specs=P("data"),
    out_specs=P("data"),
  )(x, y)
  assert per_device.shape == (8,)
  assert float(jnp.max(per_device) - jnp.min(per_device)) == 0.0


@pytest.mark.parametrize("n_devices,block_size", [(1, 5), (8, 2)])
def test_ring_stats_are_the_dense_reductions(n_devices, block_size):
  """`ring_stats` gives each local row's and column's statistics, as the dense reductions."""
  x0, x1, y, _, w, label = _inputs()
  scale = jnp.float32(3.0)

  def stats(x0, x1, y, w, label, axis_name=None):
    return losses.ring_stats(
      TWO_PASS,
      (x0, x1),
      y,
      {"scale": scale},
      {"label": label},
      {"w": w, "label": label},
      axis_name=axis_name,
      block_size=block_size,
    )

  fn = (
    stats
    if n_devices == 1
    else jax.shard_map(
      lambda *a: stats(*a, axis_name="data"),
      mesh=lt.sub_mesh(n_devices),
      in_specs=jax.sharding.PartitionSpec("data"),
      out_specs=jax.sharding.PartitionSpec("data"),
    )
  )
  got = jax.jit(fn)(x0, x1, y, w, label)
  a = scale * x0 @ y.T + w[None, :]
  same = (label[:, None] == label[None, :]) & ~jnp.eye(B, dtype=bool)
  lt.assert_close(got["a"], jax.nn.logsumexp(a, axis=1))
  lt.assert_close(got["b"], jnp.sum(jnp.where(same, x1 @ y.T, 0.0), axis=0))
  lt.assert_close(got["c"], jax.nn.logsumexp(jnp.tanh(a), axis=0))
