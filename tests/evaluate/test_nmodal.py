"""n-modal zero-shot scores against a hand computation, one tuple at a time."""

import doctest
import itertools

import numpy as np
import pytest

from contrastive.evaluate import nmodal


def unit(rng, shape):
  v = rng.normal(size=shape)
  return v / np.linalg.norm(v, axis=-1, keepdims=True)


def by_hand(rule, tuple_):
  """The score of one tuple of vectors, written out."""
  if rule == "mip":
    return sum(np.prod([v[d] for v in tuple_]) for d in range(len(tuple_[0])))
  if rule == "pairwise":
    return sum(u @ v for u, v in itertools.combinations(tuple_, 2))
  g = np.array([[u @ v for v in tuple_] for u in tuple_])
  return -np.sqrt(abs(np.linalg.det(g)))


@pytest.mark.parametrize("rule", nmodal.RULES)
@pytest.mark.parametrize("p,r", [(2, 1), (1, 2), (1, 1), (2, 2)])
def test_scores_match_hand_computation(rule, p, r):
  rng = np.random.default_rng(0)
  queries = [unit(rng, (5, 6)) for _ in range(p)]
  cands = [unit(rng, (4, 6)) for _ in range(r)]
  got = nmodal.tuple_scores(queries, cands, rule)
  want = [
    [by_hand(rule, [q[i] for q in queries] + [c[j] for c in cands]) for j in range(4)]
    for i in range(5)
  ]
  np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_volume_of_orthonormal_and_parallel_tuples():
  e = np.eye(3)
  # (e0, e1) with candidates e2 (a unit cube: volume 1) and e0 (flat: volume floored to 1e-6).
  got = nmodal.tuple_scores([e[:1], e[1:2]], [e[[2, 0]]], "gram")
  np.testing.assert_allclose(got, [[-1.0, -1e-6]])


def test_prediction_picks_each_rules_best_candidate():
  # XOR along one axis: a, b in {-1, +1} and c = a * b. The MIP a b c is 1 for the true c and
  # -1 for the other; summed pairwise cosines a.c + b.c tie (0) where a != b (the lower index
  # wins) and pick the wrong sign where a = b = -1.
  signs = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]], float)
  axis = np.array([[1.0, 0.0]])
  a, b = signs[:, :1] * axis, signs[:, 1:] * axis
  c = np.array([[1.0, 0.0], [-1.0, 0.0]])  # candidate 0: +1, candidate 1: -1
  truth = (signs[:, 0] != signs[:, 1]).astype(int)
  assert nmodal.predict_accuracy([a, b], [c], truth, "symile") == {"accuracy": 1.0, "chance": 0.5}
  assert nmodal.predict_accuracy([a, b], [c], truth, "cmc")["accuracy"] == 0.25


def test_bad_input_names_the_problem():
  x = np.ones((3, 4))
  with pytest.raises(ValueError, match="unknown rule 'cosine'"):
    nmodal.tuple_scores([x], [x], "cosine")
  with pytest.raises(ValueError, match="dim 4, candidates 5"):
    nmodal.tuple_scores([x], [np.ones((2, 5))], "mip")
  with pytest.raises(TypeError, match="non-empty list"):
    nmodal.tuple_scores(x, [x], "mip")
  with pytest.raises(ValueError, match="one shape"):
    nmodal.tuple_scores([x, np.ones((2, 4))], [x], "mip")
  with pytest.raises(ValueError, match=r"truth must be \[3\]"):
    nmodal.predict_accuracy([x], [x], [0, 1], "mip")


def test_docstring_examples_run():
  result = doctest.testmod(nmodal, optionflags=doctest.NORMALIZE_WHITESPACE)
  assert result.attempted >= 2 and result.failed == 0
