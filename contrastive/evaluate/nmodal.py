"""Zero-shot prediction across n modalities: score every candidate completion of a partial tuple.

A trained n-tower model predicts a missing modality (or several) from the ones it is given: each
candidate completion is scored against each query by the similarity its own loss family trains,
and the highest score wins. With known embeddings :math:`q^1_i, \\dots, q^p_i` of query ``i`` and
candidate embeddings :math:`c^1_j, \\dots, c^r_j` of candidate ``j`` (``k = p + r`` vectors in all,
:math:`v_1, \\dots, v_k` the whole tuple), the score of the pair ``(i, j)`` is, per ``rule``:

* ``"mip"`` (Symile): the multilinear inner product
  :math:`\\sum_d \\prod_{m=1}^k v_{m,d} = (\\bigodot_m q^m_i) \\cdot (\\bigodot_m c^m_j)`;
* ``"volume"`` (GRAM): minus the volume of the parallelotope the tuple spans,
  :math:`-\\sqrt{|\\det G|}`, :math:`G_{mn} = v_m \\cdot v_n` (the volume GRAM's loss trains,
  floored as in `contrastive.losses.gram`);
* ``"pairwise"`` (CLIP, ``cmc`` and other pairwise losses): the sum of every pair's dot product,
  :math:`\\sum_{m < n} v_m \\cdot v_n` (pairs inside the query are the same for every candidate
  and so never change a prediction; pairs inside a candidate do).

``LOSS_RULES`` names the rule of each registry loss that trains n towers jointly.
"""

from __future__ import annotations

from collections.abc import Sequence
import math

import numpy as np

from contrastive.losses.gram import DET_FLOOR

RULES = ("mip", "volume", "pairwise")
LOSS_RULES = {"symile": "mip", "gram": "volume", "cmc": "pairwise", "softmax": "pairwise"}


def tuple_scores(queries: Sequence, candidates: Sequence, rule: str) -> np.ndarray:
  """``[n, V]`` scores of every query's known modalities completed by every candidate.

  Args:
    queries: ``p >= 1`` arrays ``[n, dim]``, the known modalities of ``n`` queries (row ``i`` of
      each is query ``i``); unit vectors as the towers emit them.
    candidates: ``r >= 1`` arrays ``[V, dim]``, the missing modalities of ``V`` candidates.
    rule: ``"mip"``, ``"volume"`` or ``"pairwise"`` (see the module docstring), or the name of a
      loss in ``LOSS_RULES``.

  Returns:
    float64 ``[n, V]``; higher is more likely.

  Example:
    >>> a = b = np.eye(2)
    >>> cands = np.eye(2)
    >>> tuple_scores([a, b], [cands], "mip")  # MIP of (e_i, e_i, e_j): 1 where i = j
    array([[1., 0.],
           [0., 1.]])
  """
  rule = LOSS_RULES.get(rule, rule)
  if rule not in RULES:
    raise ValueError(
      f"tuple_scores: unknown rule {rule!r}; known: {RULES} or a loss in {sorted(LOSS_RULES)}."
    )
  q = _check("queries", queries)
  c = _check("candidates", candidates)
  if q[0].shape[1] != c[0].shape[1]:
    raise ValueError(
      f"tuple_scores: queries have dim {q[0].shape[1]}, candidates {c[0].shape[1]}: must match."
    )
  if rule == "mip":
    return math.prod(q) @ math.prod(c).T
  vectors = [(v, "q") for v in q] + [(v, "c") for v in c]

  def dot(m, n):
    (u, su), (v, sv) = vectors[m], vectors[n]
    if su == sv == "q":
      return np.sum(u * v, axis=-1)[:, None]
    if su == sv == "c":
      return np.sum(u * v, axis=-1)[None, :]
    return u @ v.T if su == "q" else (v @ u.T)

  k = len(vectors)
  if rule == "pairwise":
    total = sum(dot(m, n) for m in range(k) for n in range(m + 1, k))
    return np.broadcast_to(total, (len(q[0]), len(c[0]))).copy()
  shape = (len(q[0]), len(c[0]))
  gram = np.stack(
    [np.stack([np.broadcast_to(dot(m, n), shape) for n in range(k)], -1) for m in range(k)], -2
  )  # [n, V, k, k], in float64: the determinant of near-parallel vectors cancels
  return -np.sqrt(np.maximum(np.abs(np.linalg.det(gram)), DET_FLOOR))


def predict_accuracy(queries: Sequence, candidates: Sequence, truth, rule: str) -> dict[str, float]:
  """Accuracy of picking candidate ``truth[i]`` for query ``i`` by the highest ``tuple_scores``.

  Args:
    queries, candidates, rule: as `tuple_scores`.
    truth: int ``[n]``, the index of each query's correct candidate.

  Returns:
    ``{"accuracy", "chance"}``: the share of queries whose top candidate is the true one (ties
    go to the lowest index), and ``1 / V``.

  Example:
    >>> a = b = np.eye(3)
    >>> predict_accuracy([a, b], [np.eye(3)], [0, 1, 2], "symile")["accuracy"]
    1.0
  """
  scores = tuple_scores(queries, candidates, rule)
  truth = np.asarray(truth)
  if truth.shape != (scores.shape[0],):
    raise ValueError(f"predict_accuracy: truth must be [{scores.shape[0]}], got {truth.shape}.")
  return {
    "accuracy": float((scores.argmax(axis=1) == truth).mean()),
    "chance": 1.0 / scores.shape[1],
  }


def _check(name: str, arrays) -> list[np.ndarray]:
  if isinstance(arrays, np.ndarray) or not isinstance(arrays, Sequence) or not arrays:
    raise TypeError(f"tuple_scores: {name} must be a non-empty list of [n, dim] arrays.")
  out = [np.asarray(a, np.float64) for a in arrays]
  if any(a.ndim != 2 or a.shape != out[0].shape for a in out):
    raise ValueError(
      f"tuple_scores: {name} must be [n, dim] arrays of one shape, got {[a.shape for a in out]}."
    )
  return out
