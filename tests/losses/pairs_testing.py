"""Checks shared by the tests of the pairwise zoo losses: ring against dense reference.

Import as `from pairs_testing import ...` (pytest puts this folder on the path)."""

import jax
import numpy as np

from contrastive import parallel
from tests.losses.loss_testing import sub_mesh


def ring_fn(loss_fn, n_devices: int):
  """`loss_fn` on one device (axis_name=None) or wrapped by shard_loss over `n_devices`."""
  return loss_fn if n_devices == 1 else parallel.shard_loss(loss_fn, sub_mesh(n_devices))


def grad_fn(fn, argnums, **kwargs):
  """jit(value_and_grad) of `fn(*args, **kwargs)` in the positions `argnums`: compile once, call
  on several inputs of one shape. Integer leaves (labels, ids) get float0 cotangents, which the
  comparisons skip."""
  return jax.jit(jax.value_and_grad(lambda *a: fn(*a, **kwargs), argnums=argnums,
                                    allow_int=True))


def value_and_grads(fn, args, argnums, **kwargs):
  """`grad_fn(fn, argnums, **kwargs)(*args)`."""
  return grad_fn(fn, argnums, **kwargs)(*args)


def reference_value_and_grads(ref_fn, args, argnums, **kwargs):
  """Value and gradients of a dense reference, eagerly (tiny batches: cheaper than compiling)."""
  return jax.value_and_grad(lambda *a: ref_fn(*a, **kwargs), argnums=argnums,
                            allow_int=True)(*args)


def assert_close(actual, expected, rtol=1e-5):
  """Leaves agree to `rtol` of the leaf's largest magnitude (at least 1 for a scalar loss)."""
  a_leaves, e_leaves = jax.tree.leaves(actual), jax.tree.leaves(expected)
  assert len(a_leaves) == len(e_leaves)
  for a, e in zip(a_leaves, e_leaves):
    if a.dtype == jax.dtypes.float0:
      continue
    a, e = np.asarray(a, np.float64), np.asarray(e, np.float64)
    assert a.shape == e.shape, (a.shape, e.shape)
    assert np.all(np.isfinite(a)), "non-finite values"
    scale = max(np.max(np.abs(e)), 1.0 if e.ndim == 0 else 1e-30)
    np.testing.assert_allclose(a, e, rtol=0, atol=rtol * scale)


def check_ring_matches_reference(loss_fn, ref_fn, args, argnums, *, n_devices, block_size,
                                 rtol=1e-5, **kwargs):
  """Value and gradients (in `argnums`) of the ring loss equal the dense reference's."""
  expected = reference_value_and_grads(ref_fn, args, argnums, **kwargs)
  actual = value_and_grads(ring_fn(loss_fn, n_devices), args, argnums, block_size=block_size,
                           **kwargs)
  assert_close(actual, expected, rtol)
  return actual


def assert_finite(tree):
  for leaf in jax.tree.leaves(tree):
    if leaf.dtype == jax.dtypes.float0:
      continue
    assert np.all(np.isfinite(np.asarray(leaf))), leaf


def extreme_cases(batch: int, dim: int):
  """(x, y) pairs a loss must survive at scale 100: all embeddings identical; well separated."""
  same = np.ones((batch, dim), np.float32) / np.sqrt(dim)
  rng = np.random.default_rng(0)
  apart = rng.normal(size=(batch, dim)).astype(np.float32)
  apart /= np.linalg.norm(apart, axis=1, keepdims=True)
  return [(same, same), (apart, apart)]
