"""Sigmoid (RO-ViT) and softmax focal losses: ring against the dense reference, gamma = 0."""

import jax
import numpy as np
import pytest

from contrastive import losses
from contrastive.losses import reference
from tests.losses import loss_testing as lt

B, D, SCALE, BIAS = 24, 8, 7.0, -3.0


@pytest.mark.parametrize(
  "name, options, n_devices, block_size",
  [
    ("sigmoid_focal_loss", {}, 1, 5),
    ("sigmoid_focal_loss", {"gamma": 2.0, "alpha": 0.25}, 8, 2),
    ("softmax_focal_loss", {}, 8, 2),
    ("softmax_focal_loss", {"gamma": 0.5}, 1, 7),
  ],
)
def test_matches_reference(name, options, n_devices, block_size):
  x, y = lt.unit_embeddings(0, B, D)
  sigmoid = name.startswith("sigmoid")
  args = (x, y, SCALE, BIAS) if sigmoid else (x, y, SCALE)
  lt.assert_matches_reference(
    getattr(losses, name),
    getattr(reference, name),
    args,
    n_devices=n_devices,
    block_size=block_size,
    **options,
  )


def test_gamma_zero_is_the_plain_loss():
  x, y = lt.unit_embeddings(1, B, D)

  @jax.jit
  def pairs(x, y):
    return (
      (
        losses.sigmoid_focal_loss(x, y, SCALE, BIAS, gamma=0.0, block_size=5),
        losses.sigmoid_loss(x, y, SCALE, BIAS),
      ),
      (
        losses.softmax_focal_loss(x, y, SCALE, gamma=0.0, block_size=5),
        losses.softmax_loss(x, y, SCALE),
      ),
    )

  for focal, plain in pairs(x, y):
    np.testing.assert_allclose(focal, plain, rtol=1e-5)


def test_extreme_inputs_stay_finite():
  """At scale 100 a separated batch has P_ii = 1 in float32: the focal weight stays finite."""
  values_and_grads = lt.grad_fn(
    lambda x, y, s: (
      losses.sigmoid_focal_loss(x, y, s, -10.0, gamma=0.5, block_size=5)
      + losses.softmax_focal_loss(x, y, s, gamma=0.5, block_size=5)
    ),
    (0, 1, 2),
  )
  for x, y in lt.extreme_cases(B, D):
    lt.assert_finite(values_and_grads(x, y, 100.0))


def test_registry():
  x, y = lt.unit_embeddings(2, B, D)
  assert losses.get("sigmoid_focal").uses_bias
  both = jax.jit(
    lambda x, y: (
      losses.get("sigmoid_focal")([x, y], SCALE, BIAS, {}, gamma=2.0),
      losses.sigmoid_focal_loss(x, y, SCALE, BIAS, gamma=2.0),
    )
  )
  lt.assert_close(*both(x, y))


def test_errors():
  x, y = lt.unit_embeddings(3, B, D)
  with pytest.raises(ValueError, match="gamma"):
    losses.softmax_focal_loss(x, y, SCALE, gamma=-1.0)
  with pytest.raises(ValueError, match="alpha"):
    losses.sigmoid_focal_loss(x, y, SCALE, BIAS, alpha=1.5)
  with pytest.raises(ValueError, match="scalar"):
    losses.sigmoid_focal_loss(x, y, SCALE, np.zeros(2))
