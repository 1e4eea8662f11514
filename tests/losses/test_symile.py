"""symile_loss: the ring against the dense reference, the CLIP case k = 2, the batch roll."""

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from contrastive import losses
from contrastive import parallel
from contrastive.losses import reference
from contrastive.losses import registry
from contrastive.losses._modalities import roll_batch
from tests.losses import loss_testing as lt


@pytest.mark.parametrize("negatives", ["shifted", "aligned"])
@pytest.mark.parametrize("n_devices,block_size", lt.CONFIGS, ids=lt.CONFIG_IDS)
def test_matches_reference(negatives, n_devices, block_size):
  lt.assert_matches_reference(
    losses.symile_loss,
    reference.symile_loss,
    (lt.modalities(3), 4.0),
    n_devices=n_devices,
    block_size=block_size,
    rtol=lt.RTOL,
    atol=lt.ATOL,
    relative_to="element",
    negatives=negatives,
  )


@pytest.mark.parametrize("n_devices", [1, 2, 4, 8])
def test_n_squared_matches_reference(n_devices):
  lt.assert_matches_reference(
    losses.symile_loss,
    reference.symile_loss,
    (lt.modalities(3, seed=6), 4.0),
    n_devices=n_devices,
    block_size=None,
    rtol=lt.RTOL,
    atol=lt.ATOL,
    relative_to="element",
    negatives="n_squared",
  )


def test_n_squared_reference_is_the_authors_logits():
  """The reference against rajesh-lab/symile's compute_logits (the B x B^2 matrix built by
  rolling c), written out in numpy."""
  a, b, c = (np.asarray(e, np.float64) for e in lt.modalities(3, seed=7, batch=5))
  t = 3.0

  def logits(x, y, z):  # compute_logits(x, y, z): column block s holds y * roll(z, s)
    return x @ np.concatenate([y * np.roll(z, s, axis=0) for s in range(len(x))]).T

  def cross_entropy(l):
    l = t * l
    lse = np.log(np.exp(l - l.max(1, keepdims=True)).sum(1)) + l.max(1)
    return np.mean(lse - l[np.arange(len(l)), np.arange(len(l))])

  want = (cross_entropy(logits(a, b, c)) + cross_entropy(logits(b, a, c))) / 3
  want += cross_entropy(logits(c, a, b)) / 3
  got = reference.symile_loss([a, b, c], t, negatives="n_squared")
  np.testing.assert_allclose(got, want, rtol=1e-5)
  assert got > reference.symile_loss([a, b, c], t, negatives="aligned")  # more negatives


def test_four_modalities_on_the_mesh():
  lt.assert_matches_reference(
    losses.symile_loss,
    reference.symile_loss,
    (lt.modalities(4, seed=1, dim=16), 3.0),
    n_devices=8,
    block_size=2,
    rtol=lt.RTOL,
    atol=lt.ATOL,
    relative_to="element",
  )


@pytest.mark.parametrize("negatives", ["shifted", "aligned"])
def test_two_modalities_is_clip(negatives):
  """Symile with k = 2 is the CLIP loss: MIP of two vectors is the dot product, and the mean of the
  two anchors' cross-entropies is CLIP's normalisation."""
  x, y = lt.modalities(2, seed=2)
  objective = registry.get("symile")
  want = reference.softmax_loss(x, y, 7.0)
  np.testing.assert_allclose(
    objective([x, y], 7.0, negatives=negatives, block_size=5), want, rtol=1e-5
  )
  np.testing.assert_allclose(objective.dense([x, y], 7.0, negatives=negatives), want, rtol=1e-5)


def test_roll_batch_crosses_devices():
  """roll_batch on 8 devices (local batch 3) equals jnp.roll of the global batch, for shifts
  within a block, of whole blocks, across several blocks and past the batch."""
  x = jnp.arange(24 * 2, dtype=jnp.float32).reshape(24, 2)
  shifts = (1, 3, 4, 25)
  rolled = jax.jit(
    jax.shard_map(
      lambda a: jnp.stack([roll_batch(a, s, "data") for s in shifts]),
      mesh=parallel.make_mesh(),
      in_specs=P("data"),
      out_specs=P(None, "data"),
    )
  )(x)
  for i, s in enumerate(shifts):
    np.testing.assert_array_equal(rolled[i], jnp.roll(x, -s, axis=0))


def test_extreme_inputs_stay_finite():
  same = [jnp.ones((24, 8)) / jnp.sqrt(8.0)] * 3
  big = [100.0 * e for e in lt.modalities(3, seed=4)]
  lt.assert_finite_losses(losses.symile_loss, (same, 1e4), (big, 100.0))
  lt.assert_finite_losses(losses.symile_loss, (same, 1e4), (big, 100.0), negatives="n_squared")


def test_bfloat16_inputs():
  emb = lt.modalities(3, seed=5)
  got = losses.symile_loss([e.astype(jnp.bfloat16) for e in emb], 4.0)
  assert got.dtype == jnp.float32
  want = reference.symile_loss([e.astype(jnp.bfloat16) for e in emb], 4.0)
  np.testing.assert_allclose(got, want, rtol=1e-4)


@pytest.mark.parametrize(
  "embeddings,error,match",
  [
    (lambda e: e[:1], ValueError, "at least 2 modalities"),
    (lambda e: [e[0], e[1][:, :4]], ValueError, "same"),
    (lambda e: [e[0], e[1][:12]], ValueError, "same"),
    (lambda e: jnp.stack(e), TypeError, "sequence"),
    (lambda e: [e[0], e[1].astype(jnp.int32)], TypeError, "floating"),
  ],
)
def test_bad_embeddings(embeddings, error, match):
  with pytest.raises(error, match=match):
    losses.symile_loss(embeddings(lt.modalities(2)), 1.0)


def test_bad_options():
  with pytest.raises(ValueError, match="negatives"):
    losses.symile_loss(lt.modalities(2), 1.0, negatives="random")
  with pytest.raises(ValueError, match="n_squared' needs exactly 3 modalities, got 4"):
    losses.symile_loss(lt.modalities(4), 1.0, negatives="n_squared")
  with pytest.raises(ValueError, match="scalar"):
    losses.symile_loss(lt.modalities(2), jnp.ones(1))
  with pytest.raises(ValueError, match="block_size"):
    losses.symile_loss(lt.modalities(2), 1.0, block_size=0)
