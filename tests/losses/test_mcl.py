"""MCL: the cluster-restricted loss against its dense reference, its special cases, k-means."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from contrastive import losses
from contrastive.losses import reference
from tests.losses import loss_testing as lt

B, D, SCALE = 24, 8, 7.0
CLUSTERS = jax.random.randint(jax.random.key(1), (B,), 0, 4)  # ~6 pairs per cluster


@pytest.mark.parametrize("n_devices, block_size", [(1, 5), (2, 5), (4, 4), (8, 2), (8, None)])
def test_matches_reference(n_devices, block_size):
  x, y = lt.unit_embeddings(0, B, D)
  lt.assert_matches_reference(
    losses.mcl_loss,
    reference.mcl_loss,
    (x, y, SCALE, CLUSTERS),
    argnums=(0, 1, 2),
    n_devices=n_devices,
    block_size=block_size,
  )


def test_one_cluster_is_softmax_and_singletons_are_zero():
  x, y = lt.unit_embeddings(1, B, D)
  fn = jax.jit(lambda c: losses.mcl_loss(x, y, SCALE, c, block_size=5))
  softmax = losses.softmax_loss(x, y, SCALE)
  np.testing.assert_allclose(fn(jnp.zeros(B, jnp.int32)), softmax, rtol=1e-5)
  np.testing.assert_allclose(fn(jnp.arange(B)), 0.0, atol=1e-6)  # no negatives at all


def test_is_the_clip_loss_within_each_cluster():
  """An anchor sees only its cluster: the loss is each cluster's own CLIP loss, weighted by its
  share of the batch."""
  x, y = lt.unit_embeddings(2, B, D)
  clusters = np.asarray(CLUSTERS)
  expected = sum(
    np.mean(clusters == c) * reference.softmax_loss(x[clusters == c], y[clusters == c], SCALE)
    for c in np.unique(clusters)
  )
  actual = jax.jit(losses.mcl_loss, static_argnames="block_size")(
    x, y, SCALE, CLUSTERS, block_size=5
  )
  np.testing.assert_allclose(actual, expected, rtol=1e-5)


def test_kmeans_finds_separated_clusters_deterministically():
  centres = 5.0 * lt.unit_rows(3, (3, D))
  points = jnp.repeat(centres, 20, axis=0) + 0.1 * jax.random.normal(jax.random.key(4), (60, D))
  ids, found = losses.kmeans_clusters(points, 3, seed=7, iterations=5)
  assert ids.dtype == jnp.int32 and ids.shape == (60,) and found.shape == (3, D)
  truth = np.repeat(np.arange(3), 20)
  # the same partition, up to renaming
  assert len(set(zip(truth.tolist(), np.asarray(ids).tolist()))) == 3
  again, _ = losses.kmeans_clusters(points, 3, seed=7, iterations=5)
  np.testing.assert_array_equal(ids, again)
  np.testing.assert_array_equal(losses.assign_clusters(points, found), ids)


def test_registry_reads_the_cluster_ids_as_labels():
  x, y = lt.unit_embeddings(3, B, D)
  both = jax.jit(
    lambda x, y: (
      losses.get("mcl")([x, y], SCALE, None, {"labels": CLUSTERS}),
      losses.mcl_loss(x, y, SCALE, CLUSTERS),
    )
  )
  lt.assert_close(*both(x, y))
  with pytest.raises(KeyError, match="labels"):
    losses.get("mcl")([x, y], SCALE, None, {})


def test_extreme_inputs_stay_finite():
  values_and_grads = lt.grad_fn(
    lambda x, y, s: losses.mcl_loss(x, y, s, CLUSTERS, block_size=5), (0, 1, 2)
  )
  for x, y in lt.extreme_cases(B, D):
    lt.assert_finite(values_and_grads(x, y, 100.0))


def test_errors():
  x, y = lt.unit_embeddings(4, B, D)
  with pytest.raises(ValueError, match=r"`clusters` must be \[batch\]"):
    losses.mcl_loss(x, y, SCALE, CLUSTERS[:-1])
  with pytest.raises(TypeError, match="integer"):
    losses.mcl_loss(x, y, SCALE, jnp.zeros(B))
  with pytest.raises(ValueError, match=r"num_clusters must be in \[1, 24\]"):
    losses.kmeans_clusters(x, 25)
  with pytest.raises(ValueError, match="centres are"):
    losses.assign_clusters(x, jnp.zeros((3, D + 1)))
