"""Binding: hand-computed wins, ties at one half, per-image averaging, per type."""

import numpy as np
import pytest

from contrastive.evaluate import binding


def test_hand_computed_case():
  x = np.eye(2, dtype=np.float32)
  y = np.array([[0.8, 0.0], [0.0, 0.5]], np.float32)  # true scores: 0.8 and 0.5
  negatives = np.array(
    [
      [0.9, 0.0],  # image 0, swap:   0.9 > 0.8, a loss
      [0.1, 0.0],  # image 0, swap:   a win  -> image 0 swap share 1/2
      [0.8, 0.0],  # image 0, change: a tie  -> 1/2
      [0.0, 0.2],  # image 1, swap:   a win  -> image 1 swap share 1
      [0.0, 0.6],
    ],  # image 1, change: a loss -> 0
    np.float32,
  )
  m = binding.binding_metrics(
    x,
    y,
    negatives,
    negative_of=np.array([0, 0, 0, 1, 1]),
    negative_types=["swap", "swap", "change", "swap", "change"],
  )
  assert m["swap"] == pytest.approx((0.5 + 1.0) / 2)  # per image first, then over images
  assert m["change"] == pytest.approx((0.5 + 0.0) / 2)
  assert m["mean"] == pytest.approx((0.75 + 0.25) / 2)
  assert m["count/swap"] == 3 and m["count/change"] == 2


def test_collapsed_model_is_at_chance():
  x = np.ones((4, 3), np.float32)
  m = binding.binding_metrics(
    x, x, np.ones((8, 3), np.float32), negative_of=np.arange(8) % 4, negative_types=["a"] * 8
  )
  assert m["a"] == 0.5


def test_errors():
  x = np.eye(2, dtype=np.float32)
  with pytest.raises(ValueError, match=r"1 negative types for 2 negatives"):
    binding.binding_metrics(x, x, x, negative_of=np.array([0, 1]), negative_types=["a"])
  with pytest.raises(ValueError, match=r"index into the 2 images.*\[0, 2\]"):
    binding.binding_metrics(x, x, x, negative_of=np.array([0, 2]), negative_types=["a", "a"])
  with pytest.raises(ValueError, match=r"Leading sizes differ"):
    binding.binding_metrics(x, x[:1], x, negative_of=np.array([0, 1]), negative_types="ab")
