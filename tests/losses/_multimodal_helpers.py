"""Shared checks for the n-modal and queue loss tests: the ring against the dense reference."""

import jax
import jax.numpy as jnp
import numpy as np

from contrastive import parallel

RTOL, ATOL = 1e-5, 1e-6
BATCH, DIM = 24, 8
# (devices, block_size): 5 does not divide the batch of 24 on one device, 2 does not divide the
# local batch of 3 on eight; None takes the whole local batch as one tile.
CONFIGS = [(1, 5), (8, None), (8, 2)]
CONFIG_IDS = ["1dev-bs5", "8dev-bsNone", "8dev-bs2"]


def unit_rows(seed: int, shape) -> jax.Array:
  x = jax.random.normal(jax.random.key(seed), shape, jnp.float32)
  return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def modalities(k: int, seed: int = 0, batch: int = BATCH, dim: int = DIM) -> list[jax.Array]:
  return [unit_rows(seed * 100 + m, (batch, dim)) for m in range(k)]


def ring_value_and_grad(loss_fn, args, n_devices: int, block_size, **options):
  """jit(value_and_grad) of ``loss_fn(*args)`` in every argument, on one device or a mesh."""
  if n_devices == 1:
    fn = lambda *a: loss_fn(*a, block_size=block_size, **options)
  else:
    assert n_devices == jax.device_count(), "the mesh takes every (simulated) device"
    fn = parallel.shard_loss(
        lambda *a, axis_name: loss_fn(*a, axis_name=axis_name, block_size=block_size, **options),
        parallel.make_mesh())
  return jax.jit(jax.value_and_grad(fn, argnums=tuple(range(len(args)))))(*args)


def assert_close(got, want, rtol=RTOL, atol=ATOL):
  got_leaves, want_leaves = jax.tree.leaves(got), jax.tree.leaves(want)
  assert len(got_leaves) == len(want_leaves)
  for g, w in zip(got_leaves, want_leaves):
    np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(w, np.float32), rtol=rtol,
                               atol=atol)


def assert_matches_reference(loss_fn, reference_fn, args, n_devices, block_size, **options):
  """Value and every gradient of the ring loss equal the dense reference's."""
  value, grads = ring_value_and_grad(loss_fn, args, n_devices, block_size, **options)
  want, want_grads = jax.value_and_grad(lambda *a: reference_fn(*a, **options),
                                        argnums=tuple(range(len(args))))(*args)
  assert value.dtype == jnp.float32 and value.shape == ()
  assert_close(value, want)
  assert_close(grads, want_grads)


def assert_finite(loss_fn, *cases, **options):
  """Loss and gradients are finite for every argument tuple in ``cases`` (of one shape: one
  compilation); returns the values."""
  fn = jax.jit(jax.value_and_grad(lambda *a: loss_fn(*a, **options),
                                  argnums=tuple(range(len(cases[0])))))
  values = []
  for args in cases:
    value, grads = fn(*args)
    assert np.isfinite(float(value)), (value, args)
    for g in jax.tree.leaves(grads):
      assert np.all(np.isfinite(np.asarray(g))), g
    values.append(value)
  return values
