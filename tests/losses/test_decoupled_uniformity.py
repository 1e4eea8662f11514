"""Decoupled uniformity on the ring, and its dense kernel-prior variant, against the references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from contrastive import losses
from contrastive.losses import reference
from tests.losses import loss_testing as lt

CONFIGS = [(1, 5, 2), (2, 7, 3), (4, None, 2), (8, 2, 4)]


@pytest.mark.parametrize("n_devices, block_size, views", CONFIGS)
def test_matches_reference(n_devices, block_size, views):
  lt.assert_matches_reference(
    losses.decoupled_uniformity_loss,
    reference.decoupled_uniformity_loss,
    (lt.modalities(views),),
    n_devices=n_devices,
    block_size=block_size,
    t=3.0 if views == 3 else 2.0,
  )


def test_two_views_by_hand():
  """V = 2: the centroids are (x + y) / 2; the log-mean potential over ordered pairs i != j."""
  x, y = lt.unit_embeddings(1, lt.BATCH, lt.DIM)
  mu = (np.asarray(x, np.float64) + np.asarray(y, np.float64)) / 2
  d2 = ((mu[:, None] - mu[None]) ** 2).sum(-1)
  want = np.log(np.exp(-2 * d2)[~np.eye(lt.BATCH, dtype=bool)].mean())
  got = jax.jit(lambda e: losses.get("decoupled_uniformity")(e, 1.0, block_size=5))([x, y])
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_kernel_matches_reference():
  """Value and gradients through the solve; a prior that sees everything apart (K = I) gives
  mu / (1 + lam); a prior that sees every sample alike pulls all centroids to their mean."""
  views = lt.modalities(2, seed=2)
  prior = lt.unit_rows(5, (lt.BATCH, 4))
  fn = lambda e, p: losses.kernel_decoupled_uniformity_loss(e, p, lam=0.1, sigma=0.7)
  got = jax.jit(jax.value_and_grad(fn))(views, prior)
  want = jax.jit(
    jax.value_and_grad(
      lambda e, p: reference.kernel_decoupled_uniformity_loss(e, p, lam=0.1, sigma=0.7)
    )
  )(views, prior)
  lt.assert_close(got, want, rtol=1e-4)
  apart = 100.0 * jnp.eye(lt.BATCH)
  scaled = [v / 2.0 for v in views]  # K = I, lam = 1: mu_hat = mu / 2
  pair = jax.jit(
    lambda e, s, p: (
      losses.kernel_decoupled_uniformity_loss(e, p, lam=1.0),
      losses.decoupled_uniformity_loss(s),
    )
  )
  np.testing.assert_allclose(*pair(views, scaled, apart), rtol=1e-5)


def test_errors():
  views = lt.modalities(2)
  with pytest.raises(ValueError, match="at least 2 modalities"):
    losses.decoupled_uniformity_loss(views[:1])
  with pytest.raises(TypeError, match="sequence"):
    losses.decoupled_uniformity_loss(jnp.stack(views))
  with pytest.raises(ValueError, match="`t`"):
    losses.decoupled_uniformity_loss(views, t=0.0)
  with pytest.raises(ValueError, match="global B x B solve"):
    losses.kernel_decoupled_uniformity_loss(views, views[0], axis_name="data")
  with pytest.raises(ValueError, match="prior"):
    losses.kernel_decoupled_uniformity_loss(views, views[0][:5])
  with pytest.raises(ValueError, match="lam"):
    losses.kernel_decoupled_uniformity_loss(views, views[0], lam=0.0)
