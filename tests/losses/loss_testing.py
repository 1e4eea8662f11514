"""Helpers for loss tests: random embeddings, sub-meshes, and tree comparison.

Import as `from tests.losses.loss_testing import ...`."""

import jax
import jax.numpy as jnp
import numpy as np

from contrastive import parallel


def unit_embeddings(seed: int, batch: int, dim: int, n: int = 2, dtype=jnp.float32):
  """`n` arrays of [batch, dim] L2-normalized random embeddings, positives correlated."""
  keys = jax.random.split(jax.random.key(seed), n + 1)
  shared = jax.random.normal(keys[0], (batch, dim))
  out = []
  for k in keys[1:]:
    e = shared + 0.8 * jax.random.normal(k, (batch, dim))
    out.append((e / jnp.linalg.norm(e, axis=-1, keepdims=True)).astype(dtype))
  return out


def sub_mesh(n_devices: int):
  return parallel.make_mesh(devices=jax.devices()[:n_devices])


def assert_trees_close(actual, expected, rtol=1e-5, atol=0.0):
  """Each leaf agrees to `rtol` relative to the leaf's largest magnitude (plus `atol`)."""
  a_leaves, e_leaves = jax.tree.leaves(actual), jax.tree.leaves(expected)
  assert len(a_leaves) == len(e_leaves)
  for a, e in zip(a_leaves, e_leaves):
    a, e = np.asarray(a, np.float64), np.asarray(e, np.float64)
    assert a.shape == e.shape
    assert np.all(np.isfinite(a)), "non-finite values"
    scale = max(np.max(np.abs(e)), 1e-30)
    np.testing.assert_allclose(a, e, rtol=0, atol=rtol * scale + atol)
