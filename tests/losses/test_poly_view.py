"""Poly-View (G-PVC, A-PVC): ring against the dense reference, SimCLR at M = 2, errors."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from contrastive import losses
from contrastive.losses import reference
from tests.losses import loss_testing as lt

CONFIGS = [
  (1, 5, "geometric", 3),
  (2, 7, "arithmetic", 3),
  (4, None, "geometric", 3),
  (8, 2, "arithmetic", 2),
]


@pytest.mark.parametrize("n_devices, block_size, aggregate, views", CONFIGS)
def test_matches_reference(n_devices, block_size, aggregate, views):
  lt.assert_matches_reference(
    losses.poly_view_loss,
    reference.poly_view_loss,
    (lt.modalities(views), 5.0),
    n_devices=n_devices,
    block_size=block_size,
    aggregate=aggregate,
  )


def test_two_views_are_simclr():
  """M = 2: both aggregates are NT-Xent over the 2B stacked views (each view's denominator: the
  2B - 1 others)."""
  u, v = lt.unit_embeddings(1, lt.BATCH, lt.DIM)
  t, n = 5.0, lt.BATCH
  z = jnp.concatenate([u, v])
  logits = jnp.where(jnp.eye(2 * n, dtype=bool), -jnp.inf, t * z @ z.T)
  log_p = jax.nn.log_softmax(logits, axis=1)
  want = -jnp.mean(jnp.concatenate([jnp.diagonal(log_p[:n, n:]), jnp.diagonal(log_p[n:, :n])]))
  objective = losses.get("poly_view")
  both = jax.jit(
    lambda e: [objective(e, t, aggregate=a, block_size=5) for a in ("geometric", "arithmetic")]
  )
  np.testing.assert_allclose(both([u, v]), [want, want], rtol=1e-5)


def test_arithmetic_is_below_geometric():
  """-log of a mean of probabilities <= the mean of -log (Jensen), equal for identical views."""
  views = lt.modalities(3, seed=2)
  fn = jax.jit(
    lambda e: [losses.poly_view_loss(e, 5.0, aggregate=a) for a in ("geometric", "arithmetic")]
  )
  geometric, arithmetic = fn(views)
  assert arithmetic < geometric
  same = fn([views[0]] * 3)
  np.testing.assert_allclose(same[0], same[1], rtol=1e-5)


def test_view_order_does_not_matter():
  fn = jax.jit(lambda e: losses.poly_view_loss(e, 5.0, aggregate="arithmetic", block_size=7))
  views = lt.modalities(3, seed=3)
  first = fn(views)
  for order in itertools.permutations(range(3)):
    np.testing.assert_allclose(fn([views[i] for i in order]), first, rtol=1e-5)


def test_extreme_inputs_stay_finite():
  lt.assert_finite_losses(
    lambda e, t: losses.poly_view_loss(e, t, block_size=5),
    ([jnp.ones((24, 8)) / jnp.sqrt(8.0)] * 3, 1e4),
    ([100.0 * e for e in lt.modalities(3, seed=4)], 10.0),
  )


def test_errors():
  views = lt.modalities(3)
  with pytest.raises(ValueError, match="aggregate"):
    losses.poly_view_loss(views, 1.0, aggregate="harmonic")
  with pytest.raises(ValueError, match="at least 2 modalities"):
    losses.poly_view_loss(views[:1], 1.0)
  with pytest.raises(ValueError, match="same"):
    losses.poly_view_loss([views[0], views[1][:, :4]], 1.0)
  with pytest.raises(ValueError, match="global batch of at least 2"):
    losses.poly_view_loss([v[:1] for v in views], 1.0)
  with pytest.raises(ValueError, match="scalar"):
    losses.poly_view_loss(views, jnp.ones(2))
