"""softmax_loss against the dense CLIP reference: values, gradients, devices, blocks, dtypes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from contrastive import losses
from contrastive import parallel
from tests.losses import loss_testing as lt

B, D = 48, 16


@pytest.mark.parametrize(
  "n_devices, block_size, label_smoothing",
  [
    (1, None, 0.0),
    (2, None, 0.0),
    (4, 5, 0.0),
    (8, None, 0.0),
    (8, 5, 0.1),
    (1, 7, 0.1),
  ],
)
def test_matches_dense_reference(n_devices, block_size, label_smoothing):
  x, y = lt.unit_embeddings(0, B, D)
  lt.assert_matches_reference(
    losses.softmax_loss,
    losses.reference.softmax_loss,
    (x, y, 14.0),
    n_devices=n_devices,
    block_size=block_size,
    rtol=1e-5,
    label_smoothing=label_smoothing,
  )


def test_hand_computed_value():
  # Two orthogonal pairs: every row is softmax over logits (t, 0), so L = log(1 + e^-t).
  x = jnp.eye(2)
  t = 3.0
  np.testing.assert_allclose(losses.softmax_loss(x, x, t), np.log1p(np.exp(-t)), rtol=1e-5)


def test_block_size_does_not_change_the_result():
  x, y = lt.unit_embeddings(1, B, D)
  results = [losses.softmax_loss(x, y, 20.0, block_size=bs) for bs in (1, 3, 16, 48, 1000)]
  # Block sizes change the order of the float32 sums: agreement to their rounding error.
  np.testing.assert_allclose(results, results[0], rtol=1e-5)


def test_bfloat16_inputs():
  # Tiles are upcast to float32, so the value matches the float32 loss of the rounded inputs to
  # float32 accuracy; gradients come back in bfloat16 (8 bits of mantissa: 1e-2 relative).
  x, y = lt.unit_embeddings(2, B, D, dtype=jnp.bfloat16)
  value, grads = lt.ring_value_and_grads(
    losses.softmax_loss, (x, y, 14.0), n_devices=8, block_size=5
  )
  want_value, want_grads = lt.reference_value_and_grads(
    losses.reference.softmax_loss, (x.astype(jnp.float32), y.astype(jnp.float32), 14.0)
  )
  assert value.dtype == jnp.float32
  assert grads[0].dtype == grads[1].dtype == jnp.bfloat16
  np.testing.assert_allclose(value, want_value, rtol=1e-5)
  lt.assert_close(grads, want_grads, rtol=1e-2)


@pytest.mark.parametrize("case", ["identical", "all_equal", "large_scale"])
def test_extreme_inputs_stay_finite(case):
  x, y = lt.unit_embeddings(3, B, D)
  scale = 100.0
  if case == "identical":
    y = x
  elif case == "all_equal":
    x = y = jnp.tile(x[:1], (B, 1))
  else:
    x, y, scale = 5 * x, 5 * y, 100.0  # logits up to 2,500
  value, _ = lt.assert_matches_reference(
    losses.softmax_loss,
    losses.reference.softmax_loss,
    (x, y, scale),
    n_devices=8,
    block_size=5,
    rtol=1e-4,
    atol=1e-5,
  )
  if case == "all_equal":  # every logit equal: L = log B exactly
    np.testing.assert_allclose(value, np.log(B), rtol=1e-5)


def test_jit_and_grad_compose():
  x, y = lt.unit_embeddings(4, B, D)
  fn = lambda x, y: losses.softmax_loss(x, y, 10.0, block_size=7)
  eager = jax.grad(fn)(x, y)
  lt.assert_close(jax.jit(jax.grad(fn))(x, y), eager, rtol=1e-5)
  lt.assert_close(jax.grad(jax.jit(fn))(x, y), eager, rtol=1e-5)
  # Second use of the gradient inside a larger jitted program (a train step's shape).
  step = jax.jit(lambda x, y: x - 0.1 * jax.grad(fn)(x, y))
  lt.assert_close(step(x, y), x - 0.1 * eager, rtol=1e-5)


def test_the_ring_runs_without_gathering_the_batch():
  mesh = parallel.make_mesh()
  x, y = lt.unit_embeddings(5, 64, D)
  fn = jax.jit(jax.grad(lambda x, y: parallel.shard_loss(losses.softmax_loss, mesh)(x, y, 10.0)))
  hlo = fn.lower(x, y).compile().as_text()
  assert "collective-permute" in hlo
  assert "all-gather" not in hlo


@pytest.mark.parametrize(
  "args, kwargs, error, match",
  [
    ((jnp.ones((4, 3)), jnp.ones((5, 3)), 1.0), {}, ValueError, "same"),
    ((jnp.ones((4,)), jnp.ones((4,)), 1.0), {}, ValueError, r"\[batch, dim\]"),
    ((jnp.ones((4, 3), jnp.int32), jnp.ones((4, 3), jnp.int32), 1.0), {}, TypeError, "floating"),
    ((jnp.ones((4, 3)), jnp.ones((4, 3)), jnp.ones((1,))), {}, ValueError, "scalar"),
    ((jnp.ones((4, 3)), jnp.ones((4, 3)), 1.0), {"block_size": 0}, ValueError, "block_size"),
    (
      (jnp.ones((4, 3)), jnp.ones((4, 3)), 1.0),
      {"label_smoothing": 1.0},
      ValueError,
      "label_smoothing",
    ),
    ((jnp.ones((4, 3)), jnp.ones((4, 3)), 1.0), {"axis_name": "data"}, ValueError, "shard_map"),
  ],
)
def test_bad_input_is_named(args, kwargs, error, match):
  with pytest.raises(error, match=match):
    losses.softmax_loss(*args, **kwargs)
