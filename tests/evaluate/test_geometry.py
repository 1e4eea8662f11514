"""Geometry metrics against closed-form answers."""

import numpy as np
import pytest

from contrastive import parallel
from contrastive.evaluate import geometry


def _sphere(n, d, seed=0):
  x = np.random.default_rng(seed).normal(size=(n, d))
  return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_constant_shift_gives_gap_equal_to_its_norm():
  x = _sphere(300, 8)
  shift = np.array([0.3, -0.4, 0, 0, 1.2, 0, 0, 0], np.float32)
  assert geometry.modality_gap(x, x + shift) == pytest.approx(np.linalg.norm(shift), rel=1e-5)
  assert geometry.modality_gap(x, x) == pytest.approx(0.0, abs=1e-6)


def test_separability():
  x = _sphere(400, 8)
  shifted = x + np.r_[3.0, np.zeros(7)].astype(np.float32)
  assert geometry.modality_separability(x[:200], shifted[200:]) == 1.0
  # Two samples of one distribution cannot be told apart.
  assert abs(geometry.modality_separability(x[:200], x[200:]) - 0.5) < 0.15


@pytest.mark.parametrize(
  "d, want",
  [
    (2, -4.0 + np.log(np.i0(4.0))),  # u = cos(theta): E exp(4u) = I0(4)
    (3, -4.0 + np.log(np.sinh(4.0) / 4.0)),  # u uniform on [-1, 1]
  ],
)
def test_uniform_points_on_the_sphere(d, want):
  # L_unif = log E exp(-2 |x - y|^2) = -4 + log E exp(4 u), u the cosine of two random points.
  x = _sphere(1500, d, seed=d)
  got = geometry.uniformity(x, block_size=256, mesh=parallel.make_mesh())
  assert got == pytest.approx(want, abs=0.03)


def test_uniformity_of_collapsed_points_is_zero():
  assert geometry.uniformity(np.ones((10, 3), np.float32)) == pytest.approx(0.0, abs=1e-6)


def test_alignment_and_cosines_hand_computed():
  x = np.array([[1, 0], [0, 1], [1, 0]], np.float32)
  y = np.array([[0, 1], [0, 1], [1, 0]], np.float32)
  assert geometry.alignment(x, y) == pytest.approx(2 / 3)  # |x-y|^2 = 2, 0, 0
  assert geometry.alignment(x, y, alpha=1) == pytest.approx(2**0.5 / 3)
  c = geometry.mean_cosines(x, y)
  s = x @ y.T
  assert c["positive"] == pytest.approx(np.trace(s) / 3)
  assert c["negative"] == pytest.approx((s.sum() - np.trace(s)) / 6)


@pytest.mark.parametrize("k", [1, 3, 7])
def test_rank_k_data_has_effective_rank_near_k(k):
  rng = np.random.default_rng(k)
  z = rng.normal(size=(2000, k)) @ np.linalg.qr(rng.normal(size=(32, k)))[0].T
  assert geometry.effective_rank(z) == pytest.approx(k, rel=0.05)
  assert geometry.variance_dims(z) <= k
  # Exactly k for k orthonormal directions of equal energy.
  q = np.linalg.qr(rng.normal(size=(50, k)))[0]
  assert geometry.effective_rank(q, center=False) == pytest.approx(k, rel=1e-6)


def test_singular_values_sorted():
  s = geometry.singular_values(np.diag([1.0, 3.0, 2.0]), center=False)
  np.testing.assert_allclose(s, [3, 2, 1])


def test_geometry_metrics_keys():
  x = _sphere(64, 8)
  m = geometry.geometry_metrics(x, _sphere(64, 8, seed=1), separability=False, block_size=16)
  assert set(m) == {
    "gap",
    "alignment",
    "uniformity/image",
    "uniformity/text",
    "uniformity/union",
    "uniformity/cross",
    "cosine/positive",
    "cosine/negative",
    "effective_rank/image",
    "effective_rank/text",
    "dims99/image",
    "dims99/text",
  }
  assert all(isinstance(v, float) for v in m.values())


def test_errors():
  with pytest.raises(ValueError, match=r"Leading sizes differ"):
    geometry.alignment(np.ones((3, 2), np.float32), np.ones((4, 2), np.float32))
  with pytest.raises(ValueError, match=r"Embedding dimensions differ"):
    geometry.modality_gap(np.ones((3, 2), np.float32), np.ones((3, 5), np.float32))
