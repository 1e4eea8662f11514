"""gram_loss: the ring against the dense reference, the k = 2 area case, degenerate tuples;
gram_itm_loss: the ring against its reference, its Gumbel-max sampling and its noise keys."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from contrastive import losses
from contrastive.losses import gram_itm
from contrastive.losses import reference
from contrastive.losses import registry
from contrastive.losses.gram import _det
from contrastive.losses.gram import _gram_entries
from contrastive.losses.gram import volume
from tests.losses import loss_testing as lt


@pytest.mark.parametrize("n_devices,block_size", lt.CONFIGS, ids=lt.CONFIG_IDS)
def test_matches_reference(n_devices, block_size):
  lt.assert_matches_reference(
    losses.gram_loss,
    reference.gram_loss,
    (lt.modalities(3), 5.0),
    n_devices=n_devices,
    block_size=block_size,
    rtol=lt.RTOL,
    atol=lt.ATOL,
    relative_to="element",
  )


def test_label_smoothing_on_the_mesh():
  """GRAM's own setting: label smoothing 0.1."""
  lt.assert_matches_reference(
    losses.gram_loss,
    reference.gram_loss,
    (lt.modalities(3, seed=1, dim=16), 5.0),
    n_devices=8,
    block_size=2,
    rtol=lt.RTOL,
    atol=lt.ATOL,
    relative_to="element",
    label_smoothing=0.1,
  )


@pytest.mark.parametrize("k", [2, 3, 4, 5, 6, 7])
def test_determinant(k):
  """Laplace expansion up to k = 5, batched LU beyond."""
  m = np.random.default_rng(k).normal(size=(k, k))
  got = _det([[jnp.asarray(m[r, c]) for c in range(k)] for r in range(k)])
  np.testing.assert_allclose(got, np.linalg.det(m), rtol=1e-5)


@pytest.mark.parametrize("k", [2, 4])
def test_tile_volumes(k):
  """The tile's volumes (pairwise) and the positives' (paired) are sqrt|det| of the Gram matrix
  of [a_i, m^1_j, ..., m^{k-1}_j]."""
  anchor, *others = lt.modalities(k, seed=6, batch=5, dim=6)
  pairwise = np.asarray(volume(_gram_entries(anchor, others, pairwise=True)))
  paired = np.asarray(volume(_gram_entries(anchor, others, pairwise=False)))
  anchor, others = np.asarray(anchor, np.float64), [np.asarray(m, np.float64) for m in others]
  for i in range(5):
    for j in range(5):
      vectors = np.stack([anchor[i]] + [m[j] for m in others])
      want = np.sqrt(abs(np.linalg.det(vectors @ vectors.T)))
      np.testing.assert_allclose(pairwise[i, j], want, rtol=1e-4, atol=1e-6)
      if i == j:
        np.testing.assert_allclose(paired[i], want, rtol=1e-4, atol=1e-6)


def test_two_modalities_is_clip_on_the_area():
  """k = 2, unit vectors: Vol_ij = sqrt(1 - (x_i.y_j)^2) = |sin theta_ij|, the paper's area, in
  place of CLIP's cosine: the CLIP cross-entropies of the logits -t |sin theta|."""
  x, y = lt.modalities(2, seed=3)
  scale = 6.0
  logits = -scale * jnp.sqrt(1 - (x @ y.T) ** 2)
  labels = jnp.arange(x.shape[0])
  ce = lambda l: -jnp.mean(jax.nn.log_softmax(l, axis=1)[labels, labels])
  want = (ce(logits) + ce(logits.T)) / 2
  np.testing.assert_allclose(registry.get("gram")([x, y], scale, block_size=5), want, rtol=1e-5)
  np.testing.assert_allclose(registry.get("gram").dense([x, y], scale), want, rtol=1e-5)


def test_volume_is_zero_for_identical_modalities():
  """Coinciding modalities span no volume: with the other modalities equal, every Vol_ij is 0
  (up to the floor), all logits tie and the loss is log B; loss and gradients stay finite."""
  x = lt.modalities(1, seed=4)[0]
  values = lt.assert_finite_losses(
    losses.gram_loss,
    ([x, x, x], 10.0),
    ([jnp.zeros((24, 8))] * 3, 10.0),
    (lt.modalities(3, seed=5), 1e4),
  )
  np.testing.assert_allclose(values[0], np.log(24.0), rtol=1e-5)


@pytest.mark.parametrize(
  "embeddings,error,match",
  [
    (lambda e: e[:1], ValueError, "at least 2 modalities"),
    (lambda e: [e[0], e[1], e[2][:, :4]], ValueError, "same"),
    (lambda e: [e[0], e[1][None], e[2]], ValueError, r"\[batch, dim\]"),
  ],
)
def test_bad_embeddings(embeddings, error, match):
  with pytest.raises(error, match=match):
    losses.gram_loss(embeddings(lt.modalities(3)), 1.0)


def test_bad_label_smoothing():
  with pytest.raises(ValueError, match="label_smoothing"):
    losses.gram_loss(lt.modalities(2), 1.0, label_smoothing=1.0)


# GRAM's matching (ITM) term: gram_itm_loss.


@pytest.mark.parametrize("n_devices,block_size", [(1, 5), (2, None), (4, 2), (8, 2)])
def test_itm_matches_reference(n_devices, block_size):
  ids = jnp.asarray(np.random.default_rng(0).permutation(100)[:24], jnp.int32)
  lt.assert_matches_reference(
    losses.gram_itm_loss,
    reference.gram_itm_loss,
    (lt.modalities(3, seed=3), 5.0, 1.0),
    n_devices=n_devices,
    block_size=block_size,
    rtol=lt.RTOL,
    atol=lt.ATOL,
    relative_to="element",
    seed=7,
    **({"ids": ids} if n_devices == 1 else {}),
  )


def test_itm_gumbel_max_samples_the_softmax():
  """argmax_j (l_j + g_j) over many anchor keys is distributed as softmax(l)."""
  logits = jnp.array([0.0, 1.0, -1.0, 2.0, 0.5])
  keys = gram_itm.anchor_keys(jnp.arange(40_000), seed=1)
  noise = gram_itm.gumbel(keys[:, None], jnp.arange(5)[None, :], 123)
  picked = np.bincount(np.asarray(jnp.argmax(logits + noise, axis=1)), minlength=5) / 40_000
  np.testing.assert_allclose(picked, jax.nn.softmax(logits), atol=0.01)


def test_itm_negatives_are_keyed_by_seed_and_ids():
  emb = lt.modalities(3, seed=4)
  loss = lambda **kw: float(losses.gram_itm_loss(emb, 8.0, 0.5, **kw))
  assert loss(seed=1) == loss(seed=1) and loss(seed=1) != loss(seed=2)
  ids = jnp.arange(24, dtype=jnp.int32)
  assert loss(ids=ids) == loss() and loss(ids=ids + 24) != loss()
  # A batch of one has no negative: the positive's softplus(-z) over 3.
  one = [e[:1] for e in emb]
  vol = volume(_gram_entries(one[0], one[1:], pairwise=False))
  np.testing.assert_allclose(
    losses.gram_itm_loss(one, 8.0, 0.5), jax.nn.softplus(8.0 * vol[0] - 0.5) / 3, rtol=1e-5
  )


def test_itm_bad_input():
  emb = lt.modalities(3)
  with pytest.raises(ValueError, match=r"ids must be int \[24\]"):
    losses.gram_itm_loss(emb, 1.0, 0.0, ids=jnp.arange(5))
  with pytest.raises(ValueError, match="scalar"):
    losses.gram_itm_loss(emb, 1.0, jnp.ones(2))
