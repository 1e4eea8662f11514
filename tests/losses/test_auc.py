"""The Mann-Whitney (AUC) loss: ring against the dense reference, a hand-computed case."""

import jax
import numpy as np
import pytest

from contrastive import losses
from contrastive.losses import reference
from tests.losses import loss_testing as lt

B, D, SCALE = 24, 8, 7.0


@pytest.mark.parametrize("n_devices, block_size", [(1, 5), (8, 2)])
def test_matches_reference(n_devices, block_size):
  x, y = lt.unit_embeddings(0, B, D)
  lt.assert_matches_reference(
    losses.auc_mw_loss,
    reference.auc_mw_loss,
    (x, y, SCALE),
    n_devices=n_devices,
    block_size=block_size,
  )


def test_orthonormal_batch():
  """s = I: every (positive, negative) difference is 1, so the loss is softplus(-t)."""
  eye = np.eye(4, dtype=np.float32)
  loss = jax.jit(lambda x: losses.auc_mw_loss(x, x, SCALE, block_size=3))(eye)
  np.testing.assert_allclose(loss, np.log1p(np.exp(-SCALE)), rtol=1e-5)


def test_extreme_inputs_stay_finite():
  values_and_grads = lt.grad_fn(
    lambda x, y, s: losses.auc_mw_loss(x, y, s, block_size=5), (0, 1, 2)
  )
  for x, y in lt.extreme_cases(B, D):
    lt.assert_finite(values_and_grads(x, y, 100.0))


def test_registry():
  x, y = lt.unit_embeddings(1, B, D)
  both = jax.jit(
    lambda x, y: (losses.get("auc_mw")([x, y], SCALE, None, {}), losses.auc_mw_loss(x, y, SCALE))
  )
  lt.assert_close(*both(x, y))


def test_errors():
  x, y = lt.unit_embeddings(2, B, D)
  with pytest.raises(ValueError, match="global batch of at least 2"):
    losses.auc_mw_loss(x[:1], y[:1], SCALE)
  with pytest.raises(TypeError, match="floating"):
    losses.auc_mw_loss(np.ones((B, D), np.int32), y, SCALE)
