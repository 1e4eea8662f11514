"""Kernel InfoNCE: ring against the dense reference, the Gaussian kernel as InfoNCE, extremes."""

import jax
import numpy as np
import pytest

from contrastive import losses
from contrastive.losses import reference
from tests.losses import loss_testing as lt

B, D, SCALE = 24, 8, 3.0


@pytest.mark.parametrize(
  "options, n_devices, block_size",
  [
    ({"gamma": 1.0}, 1, 5),
    ({"gamma": 1.0, "mix_weight": 0.5}, 8, 2),
    ({"gamma": 0.5, "mix_weight": 0.3, "mixture": "concat"}, 8, 3),
  ],
)
def test_matches_reference(options, n_devices, block_size):
  x, y = lt.unit_embeddings(0, B, D)
  lt.assert_matches_reference(
    losses.kernel_infonce_loss,
    reference.kernel_infonce_loss,
    (x, y, SCALE),
    n_devices=n_devices,
    block_size=block_size,
    **options,
  )


def test_gaussian_kernel_on_the_sphere_is_infonce_at_twice_the_scale():
  """-t ||x - y||^2 = 2t x.y - 4t for unit vectors; the constant cancels in the softmax."""
  x, y = lt.unit_embeddings(1, B, D)
  both = jax.jit(
    lambda x, y: (
      losses.kernel_infonce_loss(x, y, SCALE, gamma=2.0, block_size=5),
      losses.softmax_loss(x, y, 2 * SCALE),
    )
  )
  np.testing.assert_allclose(*both(x, y), rtol=1e-5)


def test_extreme_inputs_stay_finite():
  """Zero distances (identical embeddings) under the Laplacian kernel, at scale 100."""
  values_and_grads = lt.grad_fn(
    lambda x, y, s: losses.kernel_infonce_loss(x, y, s, gamma=1.0, mix_weight=0.5, block_size=5),
    (0, 1, 2),
  )
  for x, y in lt.extreme_cases(B, D):
    lt.assert_finite(values_and_grads(x, y, 100.0))


def test_registry():
  x, y = lt.unit_embeddings(2, B, D)
  both = jax.jit(
    lambda x, y: (
      losses.get("kernel_infonce")([x, y], SCALE, None, {}, gamma=1.0),
      losses.kernel_infonce_loss(x, y, SCALE, gamma=1.0),
    )
  )
  lt.assert_close(*both(x, y))


def test_errors():
  x, y = lt.unit_embeddings(3, B, D)
  with pytest.raises(ValueError, match="gamma"):
    losses.kernel_infonce_loss(x, y, SCALE, gamma=0.0)
  with pytest.raises(ValueError, match="mix_weight"):
    losses.kernel_infonce_loss(x, y, SCALE, mix_weight=2.0)
  with pytest.raises(ValueError, match="mixture"):
    losses.kernel_infonce_loss(x, y, SCALE, mixture="product")
  with pytest.raises(ValueError, match="even"):
    losses.kernel_infonce_loss(x[:, :7], y[:, :7], SCALE, mixture="concat")
