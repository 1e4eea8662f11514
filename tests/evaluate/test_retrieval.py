"""Retrieval: hand-computed ranks, several captions per image, meaning ids, subsets."""

import numpy as np
import pytest

from contrastive import parallel
from contrastive.evaluate import retrieval

# Scores of 3 images (rows) against 4 captions (columns); image 0 owns captions 0 and 1.
S = np.array([[0.9, 0.2, 0.5, 0.1], [0.3, 0.4, 0.8, 0.7], [0.6, 0.1, 0.2, 0.3]], np.float32)
Y_TO_X = np.array([0, 0, 1, 2])


def _embeddings(scores):
  """x, y with x @ y.T == scores exactly: x the identity, y the columns of the scores."""
  n, m = scores.shape
  x = np.eye(n, dtype=np.float32)
  return x, scores.T.copy()


def test_hand_computed_case():
  x, y = _embeddings(S)
  image_ranks, text_ranks = retrieval.retrieval_ranks(x, y, y_to_x=Y_TO_X, block_size=2)
  np.testing.assert_array_equal(image_ranks, [1, 1, 2])
  np.testing.assert_array_equal(text_ranks, [1, 2, 1, 2])
  m = retrieval.retrieval_metrics(x, y, y_to_x=Y_TO_X, ks=(1, 5), block_size=2)
  assert m["image_to_text/recall@1"] == pytest.approx(2 / 3)
  assert m["image_to_text/recall@5"] == 1.0
  assert m["image_to_text/median_rank"] == 1.0
  assert m["image_to_text/mean_rank"] == pytest.approx(4 / 3)
  assert m["image_to_text/mrr"] == pytest.approx(5 / 6)
  assert m["text_to_image/recall@1"] == 0.5
  assert m["text_to_image/median_rank"] == 1.5
  assert m["text_to_image/mrr"] == pytest.approx(0.75)
  assert m["rsum"] == pytest.approx(100 * (2 / 3 + 1 + 0.5 + 1))


def test_meaning_ids_count_hits_of_the_same_meaning():
  x, y = _embeddings(S)
  image_ranks, text_ranks = retrieval.retrieval_ranks(
    x, y, y_to_x=Y_TO_X, meaning_ids=np.array([0, 1, 0])
  )
  np.testing.assert_array_equal(image_ranks, [1, 1, 1])
  np.testing.assert_array_equal(text_ranks, [1, 2, 1, 2])


def test_subsets_rank_against_the_whole_gallery():
  x, y = _embeddings(S)
  m = retrieval.retrieval_metrics(
    x, y, y_to_x=Y_TO_X, ks=(1,), subsets={"a": np.array([True, False, True])}
  )
  assert m["a/image_to_text/recall@1"] == 0.5  # ranks [1, 2]
  assert m["a/text_to_image/recall@1"] == pytest.approx(1 / 3)  # captions 0, 1, 3: [1, 2, 2]
  assert m["a/text_to_image/mean_rank"] == pytest.approx(5 / 3)


def test_rank_metrics():
  m = retrieval.rank_metrics(np.array([1, 3, 10, 2]), ks=(1, 5, 10))
  assert m == pytest.approx(
    {
      "recall@1": 0.25,
      "recall@5": 0.75,
      "recall@10": 1.0,
      "median_rank": 2.5,
      "mean_rank": 4.0,
      "mrr": (1 + 1 / 3 + 1 / 10 + 1 / 2) / 4,
    }
  )


def test_identical_embeddings_give_recall_one():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(50, 16)).astype(np.float32)
  x /= np.linalg.norm(x, axis=1, keepdims=True)
  y_to_x = np.repeat(np.arange(50), 3)  # three identical captions per image
  m = retrieval.retrieval_metrics(
    x, x[y_to_x], y_to_x=y_to_x, block_size=16, mesh=parallel.make_mesh()
  )
  for direction in ("image_to_text", "text_to_image"):
    assert m[f"{direction}/recall@1"] == 1.0
    assert m[f"{direction}/median_rank"] == 1.0
    assert m[f"{direction}/mrr"] == 1.0


def test_errors():
  x, y = _embeddings(S)
  with pytest.raises(ValueError, match=r"ids without one: \[2\]"):
    retrieval.retrieval_metrics(x, y, y_to_x=np.array([0, 0, 1, 1]))
  with pytest.raises(ValueError, match=r"index into the 3 rows.*\[0, 7\]"):
    retrieval.retrieval_metrics(x, y, y_to_x=np.array([0, 0, 1, 7]))
  with pytest.raises(ValueError, match=r"Subset 'a' must be a bool mask of shape \(3,\)"):
    retrieval.retrieval_metrics(x, y, y_to_x=Y_TO_X, subsets={"a": np.ones(4, bool)})
