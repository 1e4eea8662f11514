r"""The captioning term of CoCa: token cross-entropy of a decoder, teacher-forced.

A captioning decoder predicts token :math:`l+1` of a caption from the image and tokens
:math:`0..l`. With logits :math:`z_{il} \in \mathbb{R}^V` for token :math:`y_{i,l+1}`,
label smoothing :math:`\varepsilon` and the padding id :math:`p` (not counted),

.. math::
  L = \frac{1}{|M|} \sum_{(i,l) \in M} \Big[ -(1-\varepsilon) \log \mathrm{softmax}(z_{il})
      [y_{i,l+1}] - \frac{\varepsilon}{V} \sum_v \log \mathrm{softmax}(z_{il})[v] \Big],
  \qquad M = \{(i, l) : y_{i,l+1} \ne p\},

the mean over the tokens that are not padding of the whole batch, as open_clip's `CoCaLoss`
(`CrossEntropyLoss(ignore_index=pad_id, label_smoothing=eps)`) computes it.

This is a per-example term: it needs no negatives, so it is computed on the global batch-sharded
arrays as they are (no ring). `caption_sums` gives the numerator and the token count
separately, so a step can add micro-batches' sums and divide once (GradCache accumulation
stays exact: the mean over the whole batch, not a mean of micro-batch means).

Reference: Yu et al., CoCa: Contrastive Captioners are Image-Text Foundation Models, 2022,
https://arxiv.org/abs/2205.01917.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
import numpy as np


def _check(logits: ArrayLike, labels: ArrayLike, label_smoothing: float) -> None:
  fn = "caption_loss"
  if np.ndim(logits) != 3:
    raise ValueError(f"{fn}: logits must be [batch, length, vocab], got shape {np.shape(logits)}.")
  if np.shape(labels) != np.shape(logits)[:2]:
    raise ValueError(
      f"{fn}: labels must be [batch, length] = {np.shape(logits)[:2]} (the caption's tokens "
      f"1..L, one per logit row), got shape {np.shape(labels)}."
    )
  if not jnp.issubdtype(jnp.asarray(labels).dtype, jnp.integer):
    raise ValueError(f"{fn}: labels must be integer token ids, got {jnp.asarray(labels).dtype}.")
  if not 0.0 <= float(label_smoothing) < 1.0:
    raise ValueError(f"{fn}: label_smoothing must be in [0, 1), got {label_smoothing!r}.")


def caption_sums(
  logits: ArrayLike, labels: ArrayLike, *, pad_id: int = 0, label_smoothing: float = 0.0
) -> tuple[jax.Array, jax.Array]:
  """`(sum of the token losses, number of tokens counted)`, both float32 scalars.

  Args:
    logits: `[batch, length, vocab]`, any float dtype (computed in float32).
    labels: `[batch, length]` int, the token each row of logits predicts (`text[:, 1:]`).
    pad_id: the padding id; its positions do not count.
    label_smoothing: `eps` in [0, 1).
  """
  _check(logits, labels, label_smoothing)
  logp = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1)
  labels = jnp.asarray(labels)
  nll = -jnp.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]
  token_loss = (1.0 - label_smoothing) * nll - label_smoothing * jnp.mean(logp, axis=-1)
  counted = (labels != pad_id).astype(jnp.float32)
  return jnp.sum(token_loss * counted), jnp.sum(counted)


def caption_loss(
  logits: ArrayLike, labels: ArrayLike, *, pad_id: int = 0, label_smoothing: float = 0.0
) -> jax.Array:
  """The mean token cross-entropy over the tokens that are not padding (the module's `L`).

  A batch with no token to count gives 0.

  Example:
    >>> logits = jnp.zeros((1, 2, 4))  # uniform over a vocabulary of 4
    >>> print(f"{caption_loss(logits, jnp.array([[3, 0]])):.4f}")  # one token counted: log 4
    1.3863
  """
  total, count = caption_sums(logits, labels, pad_id=pad_id, label_smoothing=label_smoothing)
  return total / jnp.maximum(count, 1.0)
