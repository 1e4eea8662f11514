"""Blocked similarity equals the dense computation, sharded equals unsharded."""

import jax
import numpy as np
import pytest

from contrastive import parallel
from contrastive.evaluate import similarity


def _data(n=37, m=23, d=5, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(n, d)).astype(np.float32), rng.normal(size=(m, d)).astype(np.float32))


def _dense_ranks(x, y, x_ids, y_ids):
  s = x.astype(np.float64) @ y.T.astype(np.float64)
  pos = x_ids[:, None] == y_ids[None, :]
  best = np.where(pos, s, -np.inf).max(1)
  return 1 + ((s >= best[:, None]) & ~pos).sum(1)


@pytest.mark.parametrize("block_size", [1, 4, 7, 1024])
def test_topk_equals_dense(block_size):
  x, y = _data()
  vals, idx = similarity.topk(x, y, 4, block_size=block_size)
  s = x @ y.T
  order = np.argsort(-s, axis=1, kind="stable")[:, :4]
  np.testing.assert_array_equal(np.asarray(idx), order)
  np.testing.assert_allclose(
    np.asarray(vals), np.take_along_axis(s, order, 1), rtol=1e-5, atol=1e-5
  )


@pytest.mark.parametrize("block_size", [3, 8, 1024])
def test_positive_ranks_equal_dense(block_size):
  x, y = _data()
  rng = np.random.default_rng(1)
  x_ids, y_ids = rng.integers(0, 6, len(x)), rng.integers(0, 6, len(y))
  ranks = similarity.positive_ranks(x, y, x_ids=x_ids, y_ids=y_ids, block_size=block_size)
  np.testing.assert_array_equal(np.asarray(ranks), _dense_ranks(x, y, x_ids, y_ids))


def test_ties_count_against_the_query():
  x = np.ones((3, 2), np.float32)  # every score is equal: a collapsed model
  ranks = similarity.positive_ranks(x, x, x_ids=np.arange(3), y_ids=np.arange(3))
  np.testing.assert_array_equal(np.asarray(ranks), [3, 3, 3])


@pytest.mark.parametrize("exclude_diagonal", [False, True])
def test_log_mean_gaussian_potential_equals_dense(exclude_diagonal):
  x, _ = _data(n=29)
  y = x[::-1] * 0.7
  d2 = ((x[:, None].astype(np.float64) - y[None]) ** 2).sum(-1)
  a = -2.0 * d2
  if exclude_diagonal:
    a = a[~np.eye(len(x), dtype=bool)]
  want = np.log(np.mean(np.exp(a)))
  got = similarity.log_mean_gaussian_potential(
    x, y, t=2.0, exclude_diagonal=exclude_diagonal, block_size=6
  )
  np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_sharded_equals_unsharded():
  mesh = parallel.make_mesh()
  assert mesh.size == 8
  x, y = _data(n=45, m=19)
  rng = np.random.default_rng(2)
  x_ids, y_ids = rng.integers(0, 4, len(x)), rng.integers(0, 4, len(y))
  v0, i0 = similarity.topk(x, y, 3, block_size=4)
  v1, i1 = similarity.topk(x, y, 3, block_size=4, mesh=mesh)
  np.testing.assert_array_equal(np.asarray(i0), np.asarray(i1))
  np.testing.assert_allclose(np.asarray(v0), np.asarray(v1), rtol=1e-5)
  r0 = similarity.positive_ranks(x, y, x_ids=x_ids, y_ids=y_ids, block_size=4)
  r1 = similarity.positive_ranks(x, y, x_ids=x_ids, y_ids=y_ids, block_size=4, mesh=mesh)
  np.testing.assert_array_equal(np.asarray(r0), np.asarray(r1))
  u0 = similarity.log_mean_gaussian_potential(x, x, exclude_diagonal=True, block_size=4)
  u1 = similarity.log_mean_gaussian_potential(x, x, exclude_diagonal=True, block_size=4, mesh=mesh)
  np.testing.assert_allclose(float(u0), float(u1), rtol=1e-5)


def test_sharded_accepts_global_arrays():
  mesh = parallel.make_mesh()
  x, y = _data(n=16, m=16)
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  xg = jax.device_put(x, sharding)
  v, _ = similarity.topk(xg, y, 2, mesh=mesh)
  np.testing.assert_allclose(np.asarray(v), np.sort(x @ y.T, axis=1)[:, ::-1][:, :2], rtol=1e-5)


def test_errors_name_the_bad_value():
  x, y = _data()
  with pytest.raises(ValueError, match=r"Embedding dimensions differ.*'y': 4"):
    similarity.topk(x, y[:, :4], 2)
  with pytest.raises(ValueError, match=r"k must be in \[1, 23\].*99"):
    similarity.topk(x, y, 99)
  with pytest.raises(ValueError, match=r"x_ids must have length 37, got 3"):
    similarity.positive_ranks(x, y, x_ids=np.arange(3), y_ids=np.arange(23))
  with pytest.raises(ValueError, match=r"\[num, dim\].*\(37,\)"):
    similarity.topk(x[:, 0], y, 1)
