"""MACL: the global, stop-gradient alignment; ring against the dense reference; extremes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from contrastive import losses
from contrastive.losses import reference
from tests.losses import loss_testing as lt

B, D, SCALE = 24, 8, 7.0


def uneven_alignment():
  """Rows 0..B/2 are aligned pairs, the rest are not: each device of a mesh sees a different
  mean positive similarity, so a per-device A would give a different loss."""
  x, y = lt.unit_embeddings(0, B, D)
  return x, jnp.concatenate([x[: B // 2], y[B // 2 :]])


@pytest.mark.parametrize(
  "options, n_devices, block_size",
  [
    ({}, 1, 5),
    ({}, 8, 2),
    ({"alpha": 1.0, "a0": 0.2}, 8, 3),
  ],
)
def test_matches_reference(options, n_devices, block_size):
  """Value and gradients (x, y, scale); A is the global mean and is stop-gradient."""
  lt.assert_matches_reference(
    losses.macl_loss,
    reference.macl_loss,
    (*uneven_alignment(), SCALE),
    n_devices=n_devices,
    block_size=block_size,
    **options,
  )


def test_alpha_zero_is_reweighted_infonce():
  """alpha = 0: tau = tau_0 and each anchor's loss is -log P / (1 - P)."""
  x, y = lt.unit_embeddings(1, B, D)
  logits = SCALE * np.asarray(x, np.float64) @ np.asarray(y, np.float64).T

  def one_way(l):
    p = np.diag(
      np.exp(l - l.max(1, keepdims=True))
      / np.exp(l - l.max(1, keepdims=True)).sum(1, keepdims=True)
    )
    return -np.log(p) / (1 - p)

  expected = np.mean(one_way(logits) + one_way(logits.T)) / 2
  actual = jax.jit(lambda x, y: losses.macl_loss(x, y, SCALE, alpha=0.0, block_size=5))(x, y)
  np.testing.assert_allclose(actual, expected, rtol=1e-5)


def test_extreme_inputs_stay_finite():
  """At scale 100 a separated batch has P_ii -> 1: weight 1/(1-P) times -log P tends to 1."""
  values_and_grads = lt.grad_fn(lambda x, y, s: losses.macl_loss(x, y, s, block_size=5), (0, 1, 2))
  (same, _), (apart, _) = lt.extreme_cases(B, D)
  lt.assert_finite(values_and_grads(same, same, 100.0))
  value, grads = values_and_grads(apart, apart, 100.0)
  lt.assert_finite(grads)
  np.testing.assert_allclose(value, 1.0, atol=1e-3)


def test_registry():
  x, y = lt.unit_embeddings(2, B, D)
  both = jax.jit(
    lambda x, y: (
      losses.get("macl")([x, y], SCALE, None, {}, alpha=0.3),
      losses.macl_loss(x, y, SCALE, alpha=0.3),
    )
  )
  lt.assert_close(*both(x, y))


def test_errors():
  x, y = lt.unit_embeddings(3, B, D)
  with pytest.raises(ValueError, match="alpha"):
    losses.macl_loss(x, y, SCALE, alpha=-0.5)
  with pytest.raises(ValueError, match="global batch of at least 2"):
    losses.macl_loss(x[:1], y[:1], SCALE)
