"""The caption term: token cross-entropy against its formula, padding, label smoothing, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from contrastive import losses


def _data(seed=0, b=3, length=5, vocab=7):
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=(b, length, vocab)).astype(np.float32)
  labels = rng.integers(1, vocab, size=(b, length)).astype(np.int32)
  labels[0, 3:] = 0  # padding
  labels[2, 1:] = 0
  return logits, labels


def _formula(logits, labels, eps, pad_id=0):
  """The module's L, one token at a time in float64."""
  total, count = 0.0, 0
  for i in range(labels.shape[0]):
    for t in range(labels.shape[1]):
      if labels[i, t] == pad_id:
        continue
      z = logits[i, t].astype(np.float64)
      logp = z - np.log(np.sum(np.exp(z - z.max()))) - z.max()
      total += -(1 - eps) * logp[labels[i, t]] - eps * logp.mean()
      count += 1
  return total / count


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_caption_loss_is_the_formula(eps):
  logits, labels = _data()
  got = losses.caption_loss(logits, labels, label_smoothing=eps)
  np.testing.assert_allclose(got, _formula(logits, labels, eps), rtol=1e-5)


def test_padding_does_not_count():
  """Logits at padded positions change nothing, value or gradient; sums and count add up."""
  logits, labels = _data()
  other = logits.copy()
  other[labels == 0] += 100.0
  np.testing.assert_allclose(
    losses.caption_loss(other, labels), losses.caption_loss(logits, labels)
  )
  grad = jax.grad(lambda z: losses.caption_loss(z, labels))(jnp.asarray(logits))
  assert np.all(np.asarray(grad)[labels == 0] == 0)
  total, count = losses.caption_sums(logits, labels)
  assert count == np.sum(labels != 0)
  np.testing.assert_allclose(total / count, losses.caption_loss(logits, labels), rtol=1e-6)


def test_another_pad_id_and_an_empty_batch():
  logits, labels = _data()
  np.testing.assert_allclose(
    losses.caption_loss(logits, labels, pad_id=1),
    _formula(logits, labels, 0.0, pad_id=1),
    rtol=1e-5,
  )
  assert float(losses.caption_loss(logits, np.zeros_like(labels))) == 0.0


def test_bad_input_says_what_is_wrong():
  logits, labels = _data()
  with pytest.raises(ValueError, match=r"logits must be \[batch, length, vocab\]"):
    losses.caption_loss(logits[0], labels)
  with pytest.raises(ValueError, match=r"labels must be \[batch, length\] = \(3, 5\)"):
    losses.caption_loss(logits, labels[:, 1:])
  with pytest.raises(ValueError, match="labels must be integer token ids"):
    losses.caption_loss(logits, labels.astype(np.float32))
  with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\)"):
    losses.caption_loss(logits, labels, label_smoothing=1.0)
