"""cmc_loss: full graph and core view against the dense reference; k = 2 is the CLIP loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from contrastive import losses
from contrastive.losses import reference
from contrastive.losses import registry
from tests.losses import loss_testing as lt


@pytest.mark.parametrize("mode", ["all_pairs", "core"])
@pytest.mark.parametrize("n_devices,block_size", lt.CONFIGS, ids=lt.CONFIG_IDS)
def test_matches_reference(mode, n_devices, block_size):
  lt.assert_matches_reference(
    losses.cmc_loss,
    reference.cmc_loss,
    (lt.modalities(3), 5.0),
    n_devices=n_devices,
    block_size=block_size,
    rtol=lt.RTOL,
    atol=lt.ATOL,
    relative_to="element",
    mode=mode,
  )


@pytest.mark.parametrize("mode", ["all_pairs", "core"])
def test_two_views_is_clip(mode):
  x, y = lt.modalities(2, seed=1)
  want = reference.softmax_loss(x, y, 5.0, label_smoothing=0.1)
  objective = registry.get("cmc")
  np.testing.assert_allclose(
    objective([x, y], 5.0, mode=mode, label_smoothing=0.1, block_size=5), want, rtol=1e-5
  )
  np.testing.assert_allclose(
    objective.dense([x, y], 5.0, mode=mode, label_smoothing=0.1), want, rtol=1e-5
  )


def test_full_graph_and_core_view():
  """All pairs of 4 views: 6 CLIP terms; the core view: the 3 terms with view 0."""
  views = lt.modalities(4, seed=2)
  pair = lambda p, q: reference.softmax_loss(views[p], views[q], 5.0)
  all_pairs, core = jax.jit(
    lambda v: (losses.cmc_loss(v, 5.0, mode="all_pairs"), losses.cmc_loss(v, 5.0, mode="core"))
  )(views)
  np.testing.assert_allclose(
    all_pairs, sum(pair(p, q) for p in range(4) for q in range(p + 1, 4)), rtol=1e-5
  )
  np.testing.assert_allclose(core, pair(0, 1) + pair(0, 2) + pair(0, 3), rtol=1e-5)


def test_extreme_inputs_stay_finite():
  lt.assert_finite_losses(losses.cmc_loss, ([jnp.ones((24, 8)) / jnp.sqrt(8.0)] * 3, 1e4))


def test_bad_input():
  with pytest.raises(ValueError, match="mode"):
    losses.cmc_loss(lt.modalities(3), 1.0, mode="star")
  with pytest.raises(ValueError, match="at least 2 modalities"):
    losses.cmc_loss(lt.modalities(1), 1.0)
  with pytest.raises(ValueError, match="same"):
    losses.cmc_loss([lt.modalities(1)[0], lt.modalities(1)[0][:12]], 1.0)
