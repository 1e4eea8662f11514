"""CACR: the ring against the dense reference, the weights' limits, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from contrastive import losses
from contrastive.losses import reference
from tests.losses import loss_testing as lt

B, D = 24, 8
CONFIGS = [(1, 5, {}), (2, 7, {"tau_neg": 3.0}), (4, None, {"alpha": 0.5}), (8, 2, {"beta": 2.0})]


@pytest.mark.parametrize("n_devices, block_size, options", CONFIGS)
def test_matches_reference(n_devices, block_size, options):
  x, y = lt.unit_embeddings(0, B, D)
  lt.assert_matches_reference(
    losses.cacr_loss,
    reference.cacr_loss,
    (x, y),
    n_devices=n_devices,
    block_size=block_size,
    **options,
  )


def test_weights_limits():
  """tau_neg -> 0: uniform weights (mean distance to the negatives); large tau_neg: the closest
  negative only. Off the sphere (x 3, tau_neg 5): the reference's value and gradient."""
  x, y = lt.unit_embeddings(1, B, D)
  x64, y64 = np.asarray(x, np.float64), np.asarray(y, np.float64)
  d = ((x64[:, None] - y64[None]) ** 2).sum(-1)
  off = ~np.eye(B, dtype=bool)
  align = np.mean(np.diag(d))
  uniform = align - (d[off].mean() + d.T[off].mean()) / 2
  closest = np.where(off, d, np.inf)
  nearest = align - (closest.min(1).mean() + closest.min(0).mean()) / 2
  limits = jax.jit(
    lambda x, y: [losses.cacr_loss(x, y, tau_neg=tau, block_size=5) for tau in (1e-6, 1e4)]
  )
  np.testing.assert_allclose(limits(x, y), [uniform, nearest], atol=1e-5)
  value, grads = lt.grad_fn(losses.cacr_loss, (0, 1), tau_neg=5.0, block_size=5)(3 * x, 3 * y)
  want = jax.value_and_grad(lambda x, y: reference.cacr_loss(x, y, tau_neg=5.0), (0, 1))(
    3 * x, 3 * y
  )
  lt.assert_close((value, grads), want, rtol=1e-4)  # float32 exponents tau_neg d ~ 100


def test_identical_embeddings_stay_finite():
  same, apart = lt.extreme_cases(B, D)
  lt.assert_finite_losses(lambda x, y: losses.cacr_loss(x, y, block_size=5), same, apart)


def test_registry():
  x, y = lt.unit_embeddings(2, B, D)
  objective = losses.get("cacr")
  lt.assert_close(objective([x, y], 3.0, tau_neg=2.0), losses.cacr_loss(x, y, tau_neg=2.0))
  lt.assert_close(objective.dense([x, y], 3.0, tau_neg=2.0), reference.cacr_loss(x, y, tau_neg=2.0))


def test_errors():
  x, y = lt.unit_embeddings(3, B, D)
  with pytest.raises(ValueError, match="tau_neg"):
    losses.cacr_loss(x, y, tau_neg=0.0)
  with pytest.raises(ValueError, match="beta"):
    losses.cacr_loss(x, y, beta=-1.0)
  with pytest.raises(ValueError, match="global batch of at least 2"):
    losses.cacr_loss(x[:1], y[:1])
  with pytest.raises(ValueError, match="same"):
    losses.cacr_loss(x, y[:, :4])
  with pytest.raises(TypeError, match="floating"):
    losses.cacr_loss(jnp.ones((4, 3), jnp.int32), jnp.ones((4, 3), jnp.int32))
