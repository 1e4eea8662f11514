"""mochi_loss: the ring over a sharded queue (top-N by the engine's top-k, the N fetched from
the devices holding them) against the paper's dense loss, with a fixed rng."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from contrastive import losses
from contrastive import parallel
from contrastive.losses import reference
from contrastive.losses import registry
from tests.losses import loss_testing as lt

B, D = 24, 8
OPTIONS = {"num_hard": 6, "num_mix": 5, "num_query_mix": 3}


def _batch(seed=0, queue_size=40):
  return (
    lt.unit_rows(seed, (B, D)),
    lt.unit_rows(seed + 1, (B, D)),
    lt.unit_rows(seed + 2, (queue_size, D)),
  )


@pytest.mark.parametrize("n_devices,block_size", [(1, 5), (2, 5), (4, None), (8, None), (8, 2)])
def test_matches_reference(n_devices, block_size):
  """A queue of 40 is 5 rows per device on 8 against a local batch of 3: folded to [3, 2, d] with
  one padded row, which must be neither a negative nor among the hardest."""
  q, k, queue = _batch()
  lt.assert_matches_reference(
    losses.mochi_loss,
    reference.mochi_loss,
    (q, k, queue, 5.0, jax.random.key(7)),
    argnums=(0, 1, 2, 3),
    n_devices=n_devices,
    block_size=block_size,
    rtol=lt.RTOL,
    atol=lt.ATOL,
    relative_to="element",
    **OPTIONS,
  )


def test_mixing_adds_to_moco_and_depends_on_the_rng():
  q, k, queue = _batch(seed=1)
  fn = jax.jit(
    lambda key, s: losses.mochi_loss(q, k, queue, 5.0, key, **{**OPTIONS, "num_mix": s}),
    static_argnums=1,
  )
  moco = losses.moco_loss(q, k, queue, 5.0)
  plain = losses.mochi_loss(
    q, k, queue, 5.0, jax.random.key(0), num_hard=3, num_mix=0, num_query_mix=0
  )
  np.testing.assert_allclose(plain, moco, rtol=1e-6)
  a, b = fn(jax.random.key(0), 5), fn(jax.random.key(1), 5)
  assert float(a) > float(moco) and float(b) > float(moco) and float(a) != float(b)


def test_registry_with_the_queue_on_the_mesh():
  q, k, queue = _batch(seed=4, queue_size=64)
  objective = registry.get("mochi")
  assert objective.momentum_queue
  fn = parallel.shard_loss(
    lambda emb, scale, side, axis_name: objective(
      emb, scale, None, side, axis_name=axis_name, block_size=2, **OPTIONS
    ),
    parallel.make_mesh(),
  )
  side = {"queue": queue, "rng": jax.random.key(3)}
  got = jax.jit(fn)((q, k), 5.0, side)
  want = reference.mochi_loss(q, k, queue, 5.0, jax.random.key(3), **OPTIONS)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  np.testing.assert_allclose(objective.dense((q, k), 5.0, side=side, **OPTIONS), want, rtol=1e-5)
  with pytest.raises(KeyError, match="rng"):
    objective((q, k), 5.0, side={"queue": queue})


def test_extreme_inputs_stay_finite():
  q, k, queue = _batch(seed=5)
  key = jax.random.key(0)
  lt.assert_finite_losses(
    lambda q, k, queue, s: losses.mochi_loss(q, k, queue, s, key, **OPTIONS),
    (q, k, queue, 1e4),
    (q, q, jnp.tile(q, (2, 1))[:40], 1e4),
    (100.0 * q, k, queue, 10.0),
  )


def test_bad_input():
  q, k, queue = _batch()
  key = jax.random.key(0)
  with pytest.raises(ValueError, match=r"num_hard=41 must be in \[1, 40\]"):
    losses.mochi_loss(q, k, queue, 1.0, key, num_hard=41)
  with pytest.raises(ValueError, match="num_mix must be a non-negative int"):
    losses.mochi_loss(q, k, queue, 1.0, key, num_hard=4, num_mix=-1)
  with pytest.raises(TypeError, match="PRNG key"):
    losses.mochi_loss(q, k, queue, 1.0, 0, num_hard=4)
  with pytest.raises(ValueError, match="dim 8"):
    losses.mochi_loss(q, k, queue[:, :4], 1.0, key)
