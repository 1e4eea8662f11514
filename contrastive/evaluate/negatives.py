"""How a trained space treats its negatives: where the loss's push goes, and what it spares.

Wang & Liu (CVPR 2021) read the temperature of the contrastive loss through two quantities,
both computed here from embeddings:

- the *hardness* of the loss: the share of the gradient on negatives that falls on the most
  similar ones (`hardest_negative_share`); a low temperature concentrates it there;
- the *tolerance* of the space: how similar samples of the same class stay
  (`tolerance`); pushing hard negatives apart also pushes apart semantically close samples.

References:
  Wang & Liu, "Understanding the Behaviour of Contrastive Loss", CVPR 2021,
  https://arxiv.org/abs/2012.09740
"""

from __future__ import annotations

import jax
import numpy as np

from contrastive.evaluate import _common


def hardest_negative_share(
  x: jax.typing.ArrayLike, y: jax.typing.ArrayLike, *, scale: float, k: int = 1
) -> float:
  """The share of the softmax loss's gradient on negatives that goes to the `k` hardest.

  For the `x -> y` InfoNCE loss at logit scale `s = 1 / tau`, the gradient with respect to the
  negative similarity `s_ij = x_i . y_j` (`j != i`) is proportional to the relative penalty

  .. math::
    r_{ij} = \\frac{\\exp(s\\, s_{ij})}{\\sum_{l \\ne i} \\exp(s\\, s_{il})},

  and this returns its mass on each row's `k` most similar negatives, averaged over rows:
  `mean_i sum_{j in top_k(i)} r_ij`. It is `k / (n - 1)` when every negative is pushed alike
  (`s -> 0`) and tends to 1 as `s` grows (Wang & Liu, section 3.1).

  Args:
    x: `[n, dim]` anchors (image embeddings); row `i` pairs with `y[i]`.
    y: `[n, dim]` candidates (text embeddings); the negatives of `x[i]` are `y[j], j != i`.
    scale: the logit scale `s` (the inverse temperature), > 0.
    k: how many hardest negatives per row, `1 <= k <= n - 1`.

  Returns:
    The mean share, a float in `[k / (n - 1), 1]`.
  """
  x, y = _common.pairs(x, y, dtype=np.float64)
  n = x.shape[0]
  if n < 2:
    raise ValueError(f"Need at least 2 pairs, got {n}.")
  if not 1 <= k <= n - 1:
    raise ValueError(f"k must be in [1, {n - 1}] for {n} pairs, got {k}.")
  if not scale > 0:
    raise ValueError(f"scale must be positive, got {scale}.")
  logits = scale * (x @ y.T)
  np.fill_diagonal(logits, -np.inf)  # the positive is not a negative
  logits -= logits.max(axis=1, keepdims=True)
  penalty = np.exp(logits)
  penalty /= penalty.sum(axis=1, keepdims=True)
  hardest = -np.partition(-penalty, k - 1, axis=1)[:, :k]
  return float(hardest.sum(axis=1).mean())


def tolerance(z: jax.typing.ArrayLike, labels: jax.typing.ArrayLike) -> float:
  """The mean cosine similarity of distinct samples that share a label.

  .. math::
    T = \\frac{1}{|P|} \\sum_{(i, j) \\in P} \\hat z_i^\\top \\hat z_j, \\qquad
    P = \\{(i, j) : i \\ne j,\\ l_i = l_j\\}

  Wang & Liu's tolerance to potential positives: high when samples of one class stay close,
  low when the loss has pushed them apart as negatives of each other. Computed per class from
  the sum of its unit vectors, with no `[n, n]` matrix.

  Args:
    z: `[n, dim]` embeddings (normalized here).
    labels: `[n]` integer class labels.

  Returns:
    T, a float in `[-1, 1]`.
  """
  z = _common.matrix("z", z)
  labels = _common.int_vector("labels", labels, length=z.shape[0])
  z = _common.normalize(_common.to_host(z).astype(np.float64))
  total, pairs = 0.0, 0
  for label in np.unique(labels):
    members = z[labels == label]
    m = len(members)
    s = members.sum(axis=0)
    total += s @ s - m  # every ordered pair, less the m self-similarities of 1
    pairs += m * (m - 1)
  if pairs == 0:
    raise ValueError("No two samples share a label: tolerance is undefined.")
  return float(total / pairs)
