"""sigmoid_loss against the dense SigLIP reference: values, gradients, devices, blocks, dtypes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from contrastive import losses
from contrastive import parallel
from tests.losses import loss_testing as lt

B, D = 48, 16


@pytest.mark.parametrize(
  "n_devices, block_size",
  [
    (1, None),
    (2, None),
    (4, 5),
    (8, None),
    (8, 5),
    (1, 7),
  ],
)
def test_matches_dense_reference(n_devices, block_size):
  x, y = lt.unit_embeddings(0, B, D)
  lt.assert_matches_reference(
    losses.sigmoid_loss,
    losses.reference.sigmoid_loss,
    (x, y, 10.0, -4.0),
    n_devices=n_devices,
    block_size=block_size,
    rtol=1e-5,
  )


def test_hand_computed_value():
  # Orthogonal pairs: positives have logit t + b, negatives b.
  x = jnp.eye(3)
  t, b = 2.0, -1.0
  softplus = lambda z: np.log1p(np.exp(z))
  want = (3 * softplus(-(t + b)) + 6 * softplus(b)) / 3
  np.testing.assert_allclose(losses.sigmoid_loss(x, x, t, b), want, rtol=1e-5)


def test_block_size_does_not_change_the_result():
  x, y = lt.unit_embeddings(1, B, D)
  results = [losses.sigmoid_loss(x, y, 10.0, -10.0, block_size=bs) for bs in (1, 5, 16, 48)]
  # Block sizes change the order of the float32 sums: agreement to their rounding error.
  np.testing.assert_allclose(results, results[0], rtol=1e-5)


def test_bfloat16_inputs():
  x, y = lt.unit_embeddings(2, B, D, dtype=jnp.bfloat16)
  value, grads = lt.ring_value_and_grads(
    losses.sigmoid_loss, (x, y, 10.0, -4.0), n_devices=8, block_size=5
  )
  want_value, want_grads = lt.reference_value_and_grads(
    losses.reference.sigmoid_loss, (x.astype(jnp.float32), y.astype(jnp.float32), 10.0, -4.0)
  )
  np.testing.assert_allclose(value, want_value, rtol=1e-5)
  assert grads[0].dtype == jnp.bfloat16
  lt.assert_close(grads, want_grads, rtol=1e-2)


@pytest.mark.parametrize("case", ["identical", "all_equal", "large_logits"])
def test_extreme_inputs_stay_finite(case):
  x, y = lt.unit_embeddings(3, B, D)
  scale, bias = 100.0, -10.0
  if case == "identical":
    y = x
  elif case == "all_equal":
    x = y = jnp.tile(x[:1], (B, 1))
  else:
    x, y = 5 * x, 5 * y
  lt.assert_matches_reference(
    losses.sigmoid_loss,
    losses.reference.sigmoid_loss,
    (x, y, scale, bias),
    n_devices=8,
    block_size=5,
    rtol=1e-4,
    atol=1e-5,
  )


def test_backward_scales_the_fused_gradient_by_the_cotangent():
  x, y = lt.unit_embeddings(4, B, D)
  fn = lambda x: losses.sigmoid_loss(x, y, 10.0, -4.0, block_size=7)
  g1 = jax.grad(fn)(x)
  g3 = jax.grad(lambda x: 3.0 * fn(x))(x)
  lt.assert_close(g3, 3.0 * g1, rtol=1e-5)
  lt.assert_close(jax.jit(jax.grad(fn))(x), g1, rtol=1e-5)


def test_the_ring_runs_without_gathering_the_batch():
  mesh = parallel.make_mesh()
  x, y = lt.unit_embeddings(5, 64, D)
  fn = jax.jit(
    jax.grad(lambda x, y: parallel.shard_loss(losses.sigmoid_loss, mesh)(x, y, 10.0, -10.0))
  )
  hlo = fn.lower(x, y).compile().as_text()
  assert "collective-permute" in hlo
  assert "all-gather" not in hlo


def test_bad_bias_is_named():
  with pytest.raises(ValueError, match="bias"):
    losses.sigmoid_loss(jnp.ones((4, 3)), jnp.ones((4, 3)), 1.0, jnp.zeros((2,)))
