"""mv_infonce_loss and mv_dhel_loss: the ring against the dense references, the two-view DHEL."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from contrastive import losses
from contrastive.losses import reference
from contrastive.losses import registry
from tests.losses import loss_testing as lt

LOSSES = {
  "mv_infonce": (losses.mv_infonce_loss, reference.mv_infonce_loss),
  "mv_dhel": (losses.mv_dhel_loss, reference.mv_dhel_loss),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("n_devices,block_size", lt.CONFIGS, ids=lt.CONFIG_IDS)
def test_matches_reference(name, n_devices, block_size):
  ring, dense = LOSSES[name]
  lt.assert_matches_reference(
    ring,
    dense,
    (lt.modalities(3), 5.0),
    n_devices=n_devices,
    block_size=block_size,
    rtol=lt.RTOL,
    atol=lt.ATOL,
    relative_to="element",
  )


def test_two_view_dhel():
  """MV-DHEL with k = 2 is DHEL: -t u1_i.u2_i + LSE_{j!=i} t u1_i.u1_j + LSE_{j!=i} t u2_i.u2_j."""
  u, v = lt.modalities(2, seed=1)
  t, n = 5.0, u.shape[0]
  off = ~jnp.eye(n, dtype=bool)
  energy = lambda a: jax.nn.logsumexp(jnp.where(off, t * a @ a.T, -jnp.inf), axis=1)
  want = jnp.mean(-t * jnp.sum(u * v, axis=1) + energy(u) + energy(v))
  np.testing.assert_allclose(registry.get("mv_dhel")([u, v], t, block_size=5), want, rtol=1e-5)
  np.testing.assert_allclose(registry.get("mv_dhel").dense([u, v], t), want, rtol=1e-5)


def test_two_view_infonce_by_hand():
  """MV-InfoNCE with k = 2: -log(2 e^{t u1_i.u2_i}) + log of the sum over the 4B - 2 other pairs
  of sample i's two views, written out as in the paper's SimCLR-style stacked matrix."""
  u, v = lt.modalities(2, seed=2)
  t, n = 5.0, u.shape[0]
  z = jnp.concatenate([u, v])  # [2B, d]: rows i and B + i are the views of sample i
  sims = jnp.exp(t * z @ z.T) * (1 - jnp.eye(2 * n))
  denominator = sims.sum(1)[:n] + sims.sum(1)[n:]
  want = jnp.mean(-jnp.log(2 * jnp.exp(t * jnp.sum(u * v, axis=1)) / denominator))
  np.testing.assert_allclose(registry.get("mv_infonce")([u, v], t, block_size=5), want, rtol=1e-5)
  np.testing.assert_allclose(registry.get("mv_infonce").dense([u, v], t), want, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_view_order_does_not_matter(name):
  ring, _ = LOSSES[name]
  fn = jax.jit(lambda e: ring(e, 5.0, block_size=7))
  views = lt.modalities(3, seed=3)
  first = fn(views)
  for order in itertools.permutations(range(3)):
    np.testing.assert_allclose(fn([views[i] for i in order]), first, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_extreme_inputs_stay_finite(name):
  ring, _ = LOSSES[name]
  lt.assert_finite_losses(
    ring,
    ([jnp.ones((24, 8)) / jnp.sqrt(8.0)] * 3, 1e4),
    ([100.0 * e for e in lt.modalities(3, seed=4)], 10.0),
  )


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_bad_embeddings(name):
  ring, _ = LOSSES[name]
  with pytest.raises(ValueError, match="at least 2 modalities"):
    ring(lt.modalities(1), 1.0)
  with pytest.raises(ValueError, match="same"):
    ring([lt.modalities(1)[0], lt.modalities(1)[0][:, :4]], 1.0)
  with pytest.raises(TypeError, match="sequence"):
    ring(jnp.stack(lt.modalities(2)), 1.0)
