"""The test kit of the losses: inputs, meshes, value-and-gradient runners, and comparisons.

Import as `from tests.losses import loss_testing as lt`.

Float32 results computed in different orders (tile sizes, device counts, ring against dense)
agree to about 1e-6 of the magnitude of what they sum, so `assert_close` compares each leaf
relative to its largest magnitude by default; `relative_to="element"` compares element by
element (with an `atol` for the elements near 0).
"""

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from contrastive import parallel

# The n-modal and queue tests: a batch of 24 of dim 8, and (devices, block_size) in which 5 does
# not divide the batch of 24 on one device, 2 does not divide the local batch of 3 on eight, and
# None takes the whole local batch as one tile.
RTOL, ATOL = 1e-5, 1e-6
BATCH, DIM = 24, 8
CONFIGS = [(1, 5), (8, None), (8, 2)]
CONFIG_IDS = ["1dev-bs5", "8dev-bsNone", "8dev-bs2"]


# ----------------------------------------------------------------------------------------------
# Inputs and meshes.


def unit_embeddings(seed: int, batch: int, dim: int, n: int = 2, dtype=jnp.float32):
  """`n` arrays of [batch, dim] L2-normalized random embeddings, positives correlated."""
  keys = jax.random.split(jax.random.key(seed), n + 1)
  shared = jax.random.normal(keys[0], (batch, dim))
  out = []
  for k in keys[1:]:
    e = shared + 0.8 * jax.random.normal(k, (batch, dim))
    out.append((e / jnp.linalg.norm(e, axis=-1, keepdims=True)).astype(dtype))
  return out


def unit_rows(seed: int, shape) -> jax.Array:
  """Independent L2-normalized random rows."""
  x = jax.random.normal(jax.random.key(seed), shape, jnp.float32)
  return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def modalities(k: int, seed: int = 0, batch: int = BATCH, dim: int = DIM) -> list[jax.Array]:
  """`k` independent [batch, dim] arrays of unit rows."""
  return [unit_rows(seed * 100 + m, (batch, dim)) for m in range(k)]


def extreme_cases(batch: int, dim: int):
  """(x, y) pairs a loss must survive at scale 100: all embeddings identical; well separated."""
  same = np.ones((batch, dim), np.float32) / np.sqrt(dim)
  rng = np.random.default_rng(0)
  apart = rng.normal(size=(batch, dim)).astype(np.float32)
  apart /= np.linalg.norm(apart, axis=1, keepdims=True)
  return [(same, same), (apart, apart)]


def sub_mesh(n_devices: int):
  return parallel.make_mesh(devices=jax.devices()[:n_devices])


# ----------------------------------------------------------------------------------------------
# Values and gradients.


def ring_fn(loss_fn, n_devices: int):
  """`loss_fn` on one device (axis_name=None) or wrapped by shard_loss over `n_devices`."""
  return loss_fn if n_devices == 1 else parallel.shard_loss(loss_fn, sub_mesh(n_devices))


def grad_fn(fn, argnums, **kwargs):
  """jit(value_and_grad) of `fn(*args, **kwargs)` in the positions `argnums`: compile once, call
  on several inputs of one shape. Integer leaves (labels, ids) get float0 cotangents, which the
  comparisons skip."""
  return jax.jit(jax.value_and_grad(lambda *a: fn(*a, **kwargs), argnums=argnums, allow_int=True))


def ring_value_and_grads(loss_fn, args, *, n_devices: int, block_size, argnums=None, **options):
  """Value and gradients in `argnums` (every argument by default) of
  `loss_fn(*args, block_size=block_size, **options)` under jit, on one device or as a ring over the
  first `n_devices` (`ring_fn`)."""
  argnums = tuple(range(len(args))) if argnums is None else argnums
  return grad_fn(ring_fn(loss_fn, n_devices), argnums, block_size=block_size, **options)(*args)


def reference_value_and_grads(ref_fn, args, argnums=None, **options):
  """Value and gradients in `argnums` (every argument by default) of a dense reference, eagerly
  (tiny batches: cheaper than compiling)."""
  argnums = tuple(range(len(args))) if argnums is None else argnums
  return jax.value_and_grad(lambda *a: ref_fn(*a, **options), argnums=argnums, allow_int=True)(
    *args
  )


# ----------------------------------------------------------------------------------------------
# Comparisons.


def assert_close(
  actual,
  expected,
  *,
  rtol: float = 1e-5,
  atol: float = 0.0,
  relative_to: Literal["leaf", "element"] = "leaf",
):
  """The trees have the same leaves, each finite and close to the expected one.

  ``relative_to="leaf"``: ``|a - e| <= atol + rtol * s`` with ``s`` the leaf's largest ``|e|``
  (at least 1 for a scalar, a loss value); ``"element"``: ``s = |e|`` element by element
  (``np.testing.assert_allclose``). float0 leaves (the cotangents of integer inputs) are skipped.
  """
  a_leaves, e_leaves = jax.tree.leaves(actual), jax.tree.leaves(expected)
  assert len(a_leaves) == len(e_leaves), (len(a_leaves), len(e_leaves))
  for a, e in zip(a_leaves, e_leaves):
    if np.asarray(a).dtype == jax.dtypes.float0:
      continue
    a, e = np.asarray(a, np.float64), np.asarray(e, np.float64)
    assert a.shape == e.shape, (a.shape, e.shape)
    assert np.all(np.isfinite(a)), "non-finite values"
    if relative_to == "element":
      np.testing.assert_allclose(a, e, rtol=rtol, atol=atol)
    else:
      scale = max(np.max(np.abs(e)), 1.0 if e.ndim == 0 else 1e-30)
      np.testing.assert_allclose(a, e, rtol=0, atol=rtol * scale + atol)


def assert_finite(tree):
  """Every float leaf of ``tree`` is finite (float0 leaves are skipped)."""
  for leaf in jax.tree.leaves(tree):
    if np.asarray(leaf).dtype == jax.dtypes.float0:
      continue
    assert np.all(np.isfinite(np.asarray(leaf))), leaf


def assert_finite_losses(loss_fn, *cases, **options):
  """Asserts the loss and its gradients in every argument are finite for every argument tuple in
  ``cases`` (of one shape: one compilation); returns the loss values."""
  fn = jax.jit(
    jax.value_and_grad(lambda *a: loss_fn(*a, **options), argnums=tuple(range(len(cases[0]))))
  )
  values = []
  for args in cases:
    value, grads = fn(*args)
    assert np.isfinite(float(value)), (value, args)
    assert_finite(grads)
    values.append(value)
  return values


def assert_matches_reference(
  loss_fn,
  reference_fn,
  args,
  *,
  n_devices: int,
  block_size,
  argnums=None,
  rtol: float = 1e-5,
  atol: float = 0.0,
  relative_to: Literal["leaf", "element"] = "leaf",
  **options,
):
  """The ring loss equals its dense reference: `loss_fn(*args, block_size=block_size, **options)`
  on `n_devices` devices (`ring_value_and_grads`) and `reference_fn(*args, **options)` have the
  same value, a float32 scalar, and the same gradients in `argnums` (every argument by default),
  to `assert_close(..., rtol=rtol, atol=atol, relative_to=relative_to)`.

  Returns the ring's `(value, grads)`.
  """
  argnums = tuple(range(len(args))) if argnums is None else argnums
  expected = reference_value_and_grads(reference_fn, args, argnums, **options)
  value, grads = ring_value_and_grads(
    loss_fn, args, n_devices=n_devices, block_size=block_size, argnums=argnums, **options
  )
  assert value.dtype == jnp.float32 and value.shape == (), (value.dtype, value.shape)
  assert_close((value, grads), expected, rtol=rtol, atol=atol, relative_to=relative_to)
  return value, grads
