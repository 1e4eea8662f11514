"""Zero-shot: prompts, prototypes, top-k, per-class and multi-label accuracy."""

import numpy as np
import pytest

from contrastive.evaluate import zeroshot


def test_prompts_are_class_major():
  assert zeroshot.prompts(["cat", "dog"], ["a {}", "the {}!"]) == [
      "a cat", "the cat!", "a dog", "the dog!"]
  with pytest.raises(ValueError, match=r"no class name.*\['a photo'\]|none: \['a photo'\]"):
    zeroshot.prompts(["cat"], ["a {}", "a photo"])


def test_prototypes_average_normalized_templates():
  e = np.array([[[3.0, 0.0], [0.0, 0.5]],      # class 0: templates along x and y
                [[0.0, -2.0], [0.0, -1.0]]])   # class 1: both along -y
  p = zeroshot.class_prototypes(e)
  np.testing.assert_allclose(p, [[2 ** -0.5, 2 ** -0.5], [0.0, -1.0]], atol=1e-6)


def test_identical_embeddings_give_accuracy_one():
  rng = np.random.default_rng(0)
  protos = rng.normal(size=(10, 32)).astype(np.float32)
  protos /= np.linalg.norm(protos, axis=1, keepdims=True)
  labels = rng.integers(0, 10, 200)
  m = zeroshot.zeroshot_metrics(protos[labels], protos, labels=labels, block_size=16)
  assert m["top1"] == 1.0 and m["top5"] == 1.0 and m["mean_per_class"] == 1.0


def test_hand_computed_topk_and_per_class():
  protos = np.eye(3, dtype=np.float32)
  x = np.array([[0.9, 0.5, 0.0],    # label 0: top1 0           -> right
                [0.9, 0.5, 0.0],    # label 1: top1 0, top2 1   -> wrong at 1, right at 2
                [0.1, 0.2, 0.7],    # label 2: right
                [0.5, 0.1, 0.3]],   # label 2: top1 0, top2 2
               np.float32)
  labels = np.array([0, 1, 2, 2])
  m = zeroshot.zeroshot_metrics(x, protos, labels=labels, ks=(1, 2, 5),
                                class_names=["a", "b", "c"])
  assert m["top1"] == 0.5
  assert m["top2"] == 1.0
  assert "top5" not in m                  # more than the 3 classes
  assert m["per_class/a"] == 1.0 and m["per_class/b"] == 0.0 and m["per_class/c"] == 0.5
  assert m["mean_per_class"] == pytest.approx(0.5)


def test_multi_label():
  protos = np.eye(3, dtype=np.float32)
  x = np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.5]], np.float32)
  multi_hot = np.array([[0, 1, 1], [0, 1, 0]], bool)   # example 0: top1 is 0, not a label
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
  with pytest.raises(ValueError, match=r"2 class names for 3 prototypes"):
    zeroshot.zeroshot_metrics(protos, protos, labels=np.arange(3), class_names=["a", "b"])
