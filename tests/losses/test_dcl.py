"""DCL and DCLW: ring against the dense reference, the softmax relation, extremes, errors."""

import jax
import numpy as np
import pytest

from contrastive import losses
from contrastive.losses import reference
from tests.losses import loss_testing as lt

B, D, SCALE = 24, 8, 7.0


@pytest.mark.parametrize(
  "name, options, n_devices, block_size",
  [
    ("dcl_loss", {}, 1, 5),
    ("dcl_loss", {"intra_modal": True}, 8, 2),
    ("dclw_loss", {"sigma": 0.5}, 8, 2),
    ("dclw_loss", {"sigma": 0.3, "intra_modal": True}, 1, 7),
  ],
)
def test_matches_reference(name, options, n_devices, block_size):
  x, y = lt.unit_embeddings(0, B, D)
  lt.assert_matches_reference(
    getattr(losses, name),
    getattr(reference, name),
    (x, y, SCALE),
    n_devices=n_devices,
    block_size=block_size,
    **options,
  )


def test_is_softmax_without_the_positive_in_the_denominator():
  x, y = lt.unit_embeddings(1, B, D)
  logits = SCALE * np.asarray(x, np.float64) @ np.asarray(y, np.float64).T
  positive = np.diag(logits)

  def one_way(l):  # log(sum_j e^{l_ij} - e^{l_ii}): the softmax denominator less the positive
    return -positive + np.log(np.exp(l).sum(axis=1) - np.exp(positive))

  expected = np.mean(one_way(logits) + one_way(logits.T)) / 2
  actual = jax.jit(losses.dcl_loss, static_argnames="block_size")(x, y, SCALE, block_size=5)
  np.testing.assert_allclose(actual, expected, rtol=1e-5)


def test_dclw_with_flat_weights_is_dcl():
  x, y = lt.unit_embeddings(2, B, D)
  both = jax.jit(
    lambda x, y: (losses.dclw_loss(x, y, SCALE, sigma=1e6), losses.dcl_loss(x, y, SCALE))
  )
  np.testing.assert_allclose(*both(x, y), rtol=1e-5)


def test_extreme_inputs_stay_finite():
  both = lambda x, y, s: (
    losses.dcl_loss(x, y, s, intra_modal=True, block_size=5)
    + losses.dclw_loss(x, y, s, block_size=5)
  )
  values_and_grads = lt.grad_fn(both, (0, 1, 2))
  for x, y in lt.extreme_cases(B, D):
    lt.assert_finite(values_and_grads(x, y, 100.0))


def test_registry():
  x, y = lt.unit_embeddings(3, B, D)
  objective = losses.get("dclw")
  both = jax.jit(
    lambda x, y: (
      objective([x, y], SCALE, None, {}, sigma=0.4),
      losses.dclw_loss(x, y, SCALE, sigma=0.4),
    )
  )
  lt.assert_close(*both(x, y))


def test_errors():
  x, y = lt.unit_embeddings(4, B, D)
  with pytest.raises(ValueError, match="global batch of at least 2"):
    losses.dcl_loss(x[:1], y[:1], SCALE)
  with pytest.raises(ValueError, match="sigma"):
    losses.dclw_loss(x, y, SCALE, sigma=0.0)
  with pytest.raises(ValueError, match="same"):
    losses.dcl_loss(x, y[:, :4], SCALE)
  with pytest.raises(ValueError, match="block_size"):
    losses.dcl_loss(x, y, SCALE, block_size=0)
  with pytest.raises(ValueError, match="not bound"):
    losses.dcl_loss(x, y, SCALE, axis_name="data")
