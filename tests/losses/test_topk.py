"""The ring engine's top-k reductions (`row_topk`, `col_topk`) against `jax.lax.top_k` of the
dense matrix: the values and ids the engine reduces to, and the gradient through the values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from contrastive.losses import ReducedBlock
from contrastive.losses import Tile
from contrastive.losses import TileLoss
from contrastive.losses import ring
from contrastive.losses import ring_loss
from contrastive.losses import ring_pass
from tests.losses import loss_testing as lt

B, D, K = 24, 8, 7  # k above the smaller tile widths: the merge without a tile top-k too
CONFIGS = [(1, None), (1, 5), (2, 5), (4, 4), (8, 2), (8, None)]
P = jax.sharding.PartitionSpec


def _tile(tile: Tile):
  s = tile.params["scale"] * tile.sim + tile.col["w"][None, :]
  # "pair": two candidates per column, ids 2 * col + t.
  return {"rows": s, "cols": jnp.tanh(s), "pair": jnp.stack([s, 0.5 * s * s], axis=-1)}


def _finalize(home: ReducedBlock):
  c = 1.0 + jnp.arange(K, dtype=jnp.float32) / K
  return (
    jnp.sum(home.stats["rows"] * c)
    + jnp.sum(jnp.sin(home.stats["cols"]) * c[::-1])
    + 0.3 * jnp.sum(home.stats["pair"] ** 2)
  ) / home.global_batch


TOPK = TileLoss(
  _tile, {"rows": "row_topk", "cols": "col_topk", "pair": "row_topk"}, _finalize, top_k=K
)


def _dense_matrices(x, y, scale, w):
  s = scale * x @ y.T + w[None, :]
  pair = jnp.stack([s, 0.5 * s * s], axis=-1).reshape(B, 2 * B)
  return {"rows": s, "cols": jnp.tanh(s).T, "pair": pair}


def _dense(x, y, scale, w):
  m = _dense_matrices(x, y, scale, w)
  top = {n: jax.lax.top_k(v, K)[0] for n, v in m.items()}
  c = 1.0 + jnp.arange(K, dtype=jnp.float32) / K
  return (
    jnp.sum(top["rows"] * c)
    + jnp.sum(jnp.sin(top["cols"]) * c[::-1])
    + 0.3 * jnp.sum(top["pair"] ** 2)
  ) / B


def _inputs():
  x, y = lt.unit_embeddings(3, B, D)
  return x, y, 4.0, jnp.cos(jnp.arange(B, dtype=jnp.float32))


def _sharded(fn, n_devices, out_specs):
  if n_devices == 1:
    return fn
  return jax.shard_map(
    lambda x, y, scale, w: fn(x, y, scale, w, axis_name="data"),
    mesh=lt.sub_mesh(n_devices),
    in_specs=(P("data"), P("data"), P(), P("data")),
    out_specs=out_specs,
  )


@pytest.mark.parametrize("n_devices, block_size", CONFIGS)
def test_stats_are_lax_top_k_of_the_dense_matrix(n_devices, block_size):
  """Values and global ids, per row and per column, ties aside (random inputs have none)."""

  def stats(x, y, scale, w, axis_name=None):
    n_dev = ring.axis_size(axis_name)
    bs = x.shape[0] if block_size is None else min(block_size, x.shape[0])
    plan = ring._Plan(loss=TOPK, axis_name=axis_name, n_dev=n_dev, block=bs)
    params = {"scale": jnp.asarray(scale, jnp.float32)}
    if axis_name is not None:
      params = jax.tree.map(lambda p: ring_pass.vary(p, axis_name), params)
    out, _ = ring_pass.run_pass(plan, x, y, params, None, {"w": w}, want_stats=True)
    return out

  got = jax.jit(_sharded(stats, n_devices, P("data")))(*_inputs())
  for name, m in _dense_matrices(*_inputs()).items():
    values, ids = jax.lax.top_k(m, K)
    np.testing.assert_array_equal(got[name + "_ids"], ids)
    np.testing.assert_allclose(got[name], values, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n_devices, block_size", CONFIGS)
def test_gradient_flows_through_the_selected_values(n_devices, block_size):
  def loss(x, y, scale, w, axis_name=None):
    return ring_loss(
      TOPK, x, y, {"scale": scale}, col={"w": w}, axis_name=axis_name, block_size=block_size
    )

  args = _inputs()
  got = jax.jit(jax.value_and_grad(_sharded(loss, n_devices, P()), argnums=(0, 1, 2, 3)))(*args)
  want = jax.value_and_grad(_dense, argnums=(0, 1, 2, 3))(*args)
  lt.assert_close(got, want, rtol=1e-5)


@pytest.mark.parametrize("n_devices, block_size", [(4, 2), (2, 12), (1, 24)])
def test_ties_go_to_the_smaller_id_on_any_ring(n_devices, block_size):
  """All values equal: the k smallest ids, whatever the tiling and the device count (tiles
  narrower than k are merged whole, wider ones cut to their top k first)."""
  x = y = jnp.ones((B, D)) / np.sqrt(D)

  def stats(x, y, axis_name=None):
    n_dev = ring.axis_size(axis_name)
    plan = ring._Plan(loss=TOPK, axis_name=axis_name, n_dev=n_dev, block=block_size)
    params = {"scale": ring_pass.vary(jnp.float32(1.0), axis_name)}
    w = ring_pass.vary(jnp.zeros((x.shape[0],)), axis_name)
    return ring_pass.run_pass(plan, x, y, params, None, {"w": w}, want_stats=True)[0]["rows_ids"]

  fn = jax.shard_map(
    lambda x, y: stats(x, y, axis_name="data"),
    mesh=lt.sub_mesh(n_devices),
    in_specs=P("data"),
    out_specs=P("data"),
  )
  np.testing.assert_array_equal(jax.jit(fn)(x, y), np.tile(np.arange(K), (B, 1)))


def test_k_larger_than_the_candidates_is_an_error():
  loss = TileLoss(_tile, {"rows": "row_topk"}, lambda h: jnp.sum(h.stats["rows"]), top_k=B + 1)
  x, y, scale, w = _inputs()
  with pytest.raises(ValueError, match=r"top_k=25 is larger than the 24 candidates"):
    ring_loss(loss, x, y, {"scale": scale}, col={"w": w})


def test_bad_spelling():
  with pytest.raises(ValueError, match="top_k >= 1"):
    TileLoss(_tile, {"rows": "row_topk"}, _finalize)
  with pytest.raises(ValueError, match="row_sum/col_sum"):
    TileLoss(_tile, {"rows": "row_topk"}, _finalize, linear=True, top_k=2)
