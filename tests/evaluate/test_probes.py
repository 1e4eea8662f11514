"""Linear probe and k-NN on tasks with known answers."""

import numpy as np
import pytest

from contrastive.evaluate import probes


def _separable(n, d=6, classes=4, seed=0):
  """Clusters far apart: any reasonable linear classifier gets them all right."""
  rng = np.random.default_rng(seed)
  centres = np.eye(classes, d) * 6.0
  labels = rng.integers(0, classes, n)
  return (centres[labels] + rng.normal(size=(n, d))).astype(np.float32), labels


def test_linear_probe_solves_a_separable_task_and_picks_l2_on_validation():
  x, y = _separable(240)
  tx, ty = _separable(120, seed=1)
  # 1e6 squashes the weights (majority class only); the two others tie at 1.0 on validation,
  # and the tie goes to the stronger one.
  m = probes.linear_probe(x, y, tx, ty, l2_grid=(1e6, 1e-4, 1e-2), steps=50)
  assert m["accuracy"] == 1.0 and m["val_accuracy"] == 1.0
  assert m["l2"] == pytest.approx(1e-2)


def test_logistic_regression_reaches_the_optimum():
  # The shapes of the probe test above (240 x 6, 4 classes, 6 models), so one compilation serves
  # both.
  x, y = _separable(240)
  l2s = [0.1, 0.3, 1.0, 3.0, 10.0, 30.0]
  weights, biases = probes.fit_logistic_regression(x, y, num_classes=4, l2=l2s, steps=50)
  for l2, w, b in zip(l2s, np.asarray(weights, np.float64), np.asarray(biases, np.float64)):
    logits = x @ w + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    err = (p - np.eye(4)[y]) / len(x)
    np.testing.assert_allclose(x.T @ err + l2 * w, 0, atol=1e-3)  # the gradient vanishes
    np.testing.assert_allclose(err.sum(0), 0, atol=1e-3)


def test_knn():
  x, y = _separable(200)
  assert probes.knn_classifier(x, y, x, y, k=1)["accuracy"] == 1.0
  tx, ty = _separable(80, seed=2)
  for weighting in ("uniform", "similarity"):
    assert (
      probes.knn_classifier(x, y, tx, ty, k=5, weighting=weighting, block_size=32)["accuracy"]
      == 1.0
    )


def test_knn_hand_computed_vote():
  train = np.array([[1, 0], [1, 0.1], [0, 1]], np.float32)
  labels = np.array([0, 0, 1])
  test = np.array([[0.1, 1]], np.float32)
  # k=3, uniform: two votes for 0 beat one for 1; similarity-weighted with small tau: 1 wins.
  assert (
    probes.knn_classifier(train, labels, test, np.array([0]), k=3, weighting="uniform")["accuracy"]
    == 1.0
  )
  assert (
    probes.knn_classifier(train, labels, test, np.array([1]), k=3, temperature=0.05)["accuracy"]
    == 1.0
  )


def test_errors():
  x, y = _separable(20)
  with pytest.raises(ValueError, match=r"Unknown weighting 'cosine'"):
    probes.knn_classifier(x, y, x, y, weighting="cosine")
  with pytest.raises(ValueError, match=r"val_fraction must be in \(0, 1\).*1.5"):
    probes.linear_probe(x, y, x, y, val_fraction=1.5)
  with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
    probes.fit_logistic_regression(x, y, num_classes=2, l2=0.1)
