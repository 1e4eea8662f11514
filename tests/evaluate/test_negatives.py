"""contrastive.evaluate.negatives against the formulas, written out with explicit loops."""

import numpy as np
import pytest

from contrastive.evaluate import negatives


def _unit(rng, n, d):
  z = rng.normal(size=(n, d))
  return z / np.linalg.norm(z, axis=1, keepdims=True)


def test_hardest_negative_share_matches_the_relative_penalty():
  rng = np.random.default_rng(0)
  x, y = _unit(rng, 7, 5), _unit(rng, 7, 5)
  scale, k = 4.0, 2
  shares = []
  for i in range(7):
    s = np.array([x[i] @ y[j] for j in range(7) if j != i])
    r = np.exp(scale * s) / np.exp(scale * s).sum()
    shares.append(np.sort(r)[::-1][:k].sum())
  got = negatives.hardest_negative_share(x, y, scale=scale, k=k)
  np.testing.assert_allclose(got, np.mean(shares), rtol=1e-6)


def test_hardest_negative_share_grows_with_the_scale_from_k_over_n_minus_1():
  rng = np.random.default_rng(1)
  x, y = _unit(rng, 11, 8), _unit(rng, 11, 8)
  shares = [
    negatives.hardest_negative_share(x, y, scale=s, k=1) for s in (1e-6, 1.0, 10.0, 100.0, 1e4)
  ]
  np.testing.assert_allclose(shares[0], 1 / 10, rtol=1e-4)
  assert all(a < b for a, b in zip(shares, shares[1:]))
  np.testing.assert_allclose(shares[-1], 1.0, rtol=1e-6)


def test_hardest_negative_share_ignores_the_positive():
  x = np.eye(3)
  # The positive (diagonal) is by far the most similar; a share over negatives must not see it.
  y = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
  np.testing.assert_allclose(negatives.hardest_negative_share(x, y, scale=50.0, k=1), 0.5)


def test_tolerance_is_the_mean_same_label_cosine():
  rng = np.random.default_rng(2)
  z = _unit(rng, 9, 4) * rng.uniform(0.5, 2.0, size=(9, 1))  # normalized inside
  labels = np.array([0, 1, 0, 2, 1, 0, 2, 2, 1])
  u = z / np.linalg.norm(z, axis=1, keepdims=True)
  pairs = [u[i] @ u[j] for i in range(9) for j in range(9) if i != j and labels[i] == labels[j]]
  np.testing.assert_allclose(negatives.tolerance(z, labels), np.mean(pairs), rtol=1e-6)


def test_tolerance_of_collapsed_classes_is_one():
  z = np.repeat(np.eye(3), 4, axis=0)
  labels = np.repeat(np.arange(3), 4)
  np.testing.assert_allclose(negatives.tolerance(z, labels), 1.0)


def test_errors():
  x = np.ones((4, 3))
  with pytest.raises(ValueError, match="k must be in"):
    negatives.hardest_negative_share(x, x, scale=1.0, k=4)
  with pytest.raises(ValueError, match="scale must be positive"):
    negatives.hardest_negative_share(x, x, scale=0.0)
  with pytest.raises(ValueError, match="at least 2 pairs"):
    negatives.hardest_negative_share(x[:1], x[:1], scale=1.0)
  with pytest.raises(ValueError, match="No two samples share a label"):
    negatives.tolerance(x, np.arange(4))
  with pytest.raises(ValueError, match="labels"):
    negatives.tolerance(x, np.arange(3))
