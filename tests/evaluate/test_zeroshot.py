"""Zero-shot: prompts, prototypes, top-k, per-class and multi-label accuracy."""

import numpy as np
import pytest

from contrastive.evaluate import zeroshot


def test_prompts_are_class_major():
  assert zeroshot.prompts(["cat", "dog"], ["a {}", "the {}!"]) == [
    "a cat",
    "the cat!",
    "a dog",
    "the dog!",
  ]
  with pytest.raises(ValueError, match=r"no class name.*\['a photo'\]|none: \['a photo'\]"):
    zeroshot.prompts(["cat"], ["a {}", "a photo"])


def test_prototypes_average_normalized_templates():
  e = np.array(
    [
      [[3.0, 0.0], [0.0, 0.5]],  # class 0: templates along x and y
      [[0.0, -2.0], [0.0, -1.0]],
    ]
  )  # class 1: both along -y
  p = zeroshot.class_prototypes(e)
  np.testing.assert_allclose(p, [[2**-0.5, 2**-0.5], [0.0, -1.0]], atol=1e-6)


def test_identical_embeddings_give_accuracy_one():
  rng = np.random.default_rng(0)
  protos = rng.normal(size=(10, 32)).astype(np.float32)
  protos /= np.linalg.norm(protos, axis=1, keepdims=True)
  labels = rng.integers(0, 10, 200)
  m = zeroshot.zeroshot_metrics(protos[labels], protos, labels=labels, block_size=16)
  assert m["top1"] == 1.0 and m["top5"] == 1.0 and m["mean_per_class"] == 1.0


def test_hand_computed_topk_and_per_class():
  protos = np.eye(3, dtype=np.float32)
  x = np.array(
    [
      [0.9, 0.5, 0.0],  # label 0: top1 0           -> right
      [0.9, 0.5, 0.0],  # label 1: top1 0, top2 1   -> wrong at 1, right at 2
      [0.1, 0.2, 0.7],  # label 2: right
      [0.5, 0.1, 0.3],
    ],  # label 2: top1 0, top2 2
    np.float32,
  )
  labels = np.array([0, 1, 2, 2])
  m = zeroshot.zeroshot_metrics(x, protos, labels=labels, ks=(1, 2, 5), class_names=["a", "b", "c"])
  assert m["top1"] == 0.5
  assert m["top2"] == 1.0
  assert "top5" not in m  # more than the 3 classes
  assert m["per_class/a"] == 1.0 and m["per_class/b"] == 0.0 and m["per_class/c"] == 0.5
  assert m["mean_per_class"] == pytest.approx(0.5)


def test_multi_label():
  protos = np.eye(3, dtype=np.float32)
  x = np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.5]], np.float32)
  multi_hot = np.array([[0, 1, 1], [0, 1, 0]], bool)  # example 0: top1 is 0, not a label
  m = zeroshot.zeroshot_metrics(x, protos, labels=multi_hot, ks=(1, 2))
  assert m["top1"] == 0.5 and m["top2"] == 1.0
  assert m["per_class/1"] == 0.5 and m["per_class/2"] == 0.0
  assert "per_class/0" not in m


def test_errors():
  protos = np.eye(3, dtype=np.float32)
  with pytest.raises(ValueError, match=r"Labels must lie in \[0, 3\).*\[0, 5\]"):
    zeroshot.zeroshot_metrics(protos, protos, labels=np.array([0, 1, 5]))
  with pytest.raises(ValueError, match=r"shape \(3, 3\), got \(3, 2\)"):
    zeroshot.zeroshot_metrics(protos, protos, labels=np.zeros((3, 2), bool))
  with pytest.raises(ValueError, match=r"2 class names for 3 classes"):
    zeroshot.zeroshot_metrics(protos, protos, labels=np.arange(3), class_names=["a", "b"])


def test_marginal_log_probs_sum_prompt_probabilities():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(7, 5)).astype(np.float32)
  x /= np.linalg.norm(x, axis=1, keepdims=True)
  e = rng.normal(size=(3, 4, 5)).astype(np.float32) * 3.0  # not normalized: the function does
  w = e / np.linalg.norm(e, axis=-1, keepdims=True)
  logits = 20.0 * np.einsum("nd,ctd->nct", x, w).reshape(7, -1)
  p = np.exp(logits - logits.max(1, keepdims=True))
  p = (p / p.sum(1, keepdims=True)).reshape(7, 3, 4).sum(-1)  # softmax over all 12 prompts
  for block_size in (1, 4, 1024):  # 1 and 4: a row at a time
    got = zeroshot.marginal_log_probs(x, e, scale=20.0, block_size=block_size)
    np.testing.assert_allclose(np.exp(got), p, rtol=1e-4, atol=1e-6)


def test_marginal_beats_the_mean_when_the_class_direction_depends_on_a_nuisance():
  # Class 0's prompts point along +x or +y (two nuisance values), class 1's along the
  # diagonal. Averaging class 0's embeddings lands on the diagonal too: the mean ensemble cannot
  # tell an image of class 0 at +x from class 1, the marginal ensemble can.
  e = np.array([[[1.0, 0.0], [0.0, 1.0]], [[0.7, 0.7], [0.7, 0.71]]], np.float32)
  x = np.array([[1.0, 0.0], [0.0, 1.0], [0.71, 0.7]], np.float32)
  x /= np.linalg.norm(x, axis=1, keepdims=True)
  labels = np.array([0, 0, 1])
  marginal = zeroshot.score_metrics(zeroshot.marginal_log_probs(x, e, scale=50.0), labels=labels)
  mean = zeroshot.zeroshot_metrics(x, zeroshot.class_prototypes(e), labels=labels)
  assert marginal["top1"] == 1.0 and mean["top1"] < 1.0


def test_score_metrics_match_zeroshot_metrics_on_similarities():
  rng = np.random.default_rng(1)
  protos = rng.normal(size=(6, 8)).astype(np.float32)
  x = rng.normal(size=(40, 8)).astype(np.float32)
  labels = rng.integers(0, 6, 40)
  assert zeroshot.score_metrics(x @ protos.T, labels=labels, ks=(1, 3)) == pytest.approx(
    zeroshot.zeroshot_metrics(x, protos, labels=labels, ks=(1, 3))
  )


def test_marginal_errors():
  x = np.ones((2, 4), np.float32)
  with pytest.raises(ValueError, match=r"\[num_classes, num_templates, dim\]"):
    zeroshot.marginal_log_probs(x, np.ones((3, 4), np.float32), scale=1.0)
  with pytest.raises(ValueError, match="scale must be positive"):
    zeroshot.marginal_log_probs(x, np.ones((3, 2, 4), np.float32), scale=0.0)
  with pytest.raises(ValueError, match="dimensions differ"):
    zeroshot.marginal_log_probs(x, np.ones((3, 2, 5), np.float32), scale=1.0)
  with pytest.raises(ValueError, match="3 class names for 2 classes"):
    zeroshot.score_metrics(
      np.ones((2, 2), np.float32), labels=np.array([0, 1]), class_names=["a", "b", "c"]
    )
