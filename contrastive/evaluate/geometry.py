"""The geometry of a paired embedding space: modality gap, alignment, uniformity, effective rank.

Inputs are used as given (the model normalizes; nothing here does), so a constant shift between
modalities shows up as a gap of exactly its norm.
"""

from __future__ import annotations

import jax
from jax.sharding import Mesh
import numpy as np

from contrastive.evaluate import _common
from contrastive.evaluate import probes
from contrastive.evaluate import similarity


def modality_gap(x: jax.typing.ArrayLike, y: jax.typing.ArrayLike) -> float:
  """The distance between the modality centroids.

  .. math::
    \\Delta = \\frac{1}{N}\\sum_i x_i - \\frac{1}{M}\\sum_j y_j, \\qquad
    \\mathrm{gap} = \\lVert \\Delta \\rVert_2

  Args:
    x: `[num_x, dim]` embeddings of one modality.
    y: `[num_y, dim]` of the other.

  Returns:
    The gap, a float.

  References:
    Liang et al., "Mind the Gap: Understanding the Modality Gap in Multi-modal Contrastive
    Representation Learning", NeurIPS 2022, https://arxiv.org/abs/2203.02053
  """
  x, y = _common.matrix("x", x), _common.matrix("y", y)
  _common.same_dim(x=x, y=y)
  delta = _common.to_host(x).astype(np.float64).mean(0) - _common.to_host(y).astype(
    np.float64
  ).mean(0)
  return float(np.linalg.norm(delta))


def modality_separability(
  x: jax.typing.ArrayLike,
  y: jax.typing.ArrayLike,
  *,
  test_fraction: float = 0.5,
  l2: float = 1e-4,
  steps: int = 50,
  seed: int = 0,
) -> float:
  """Held-out accuracy of a logistic regression that tells the two modalities apart.

  Both sets are split (seeded) into train and test parts; a linear classifier
  (`probes.fit_logistic_regression`) is fitted on the train parts and scored on the test parts.
  0.5 means the modalities overlap; 1.0 means a hyperplane separates them (a gap).

  Args:
    x: `[num_x, dim]` embeddings of one modality.
    y: `[num_y, dim]` of the other.
    test_fraction: the share of each set held out.
    l2: the classifier's L2 strength.
    steps: L-BFGS iterations.
    seed: for the split.

  Returns:
    The test accuracy, a float.

  References:
    Liang et al. 2022 (above); the seed catalogue's metric M3 (`LOSSES.md`, section 2).
  """
  x, y = _common.matrix("x", x), _common.matrix("y", y)
  _common.same_dim(x=x, y=y)
  if min(x.shape[0], y.shape[0]) < 2:
    raise ValueError(f"Need at least 2 embeddings per modality, got {x.shape[0]} and {y.shape[0]}.")
  z = np.concatenate([_common.to_host(x), _common.to_host(y)]).astype(np.float32)
  labels = np.repeat(np.int32([0, 1]), [x.shape[0], y.shape[0]])
  rng = np.random.default_rng(seed)
  test = np.zeros(len(z), bool)
  for side in (0, 1):
    idx = rng.permutation(np.flatnonzero(labels == side))
    n_test = min(len(idx) - 1, max(1, round(test_fraction * len(idx))))
    test[idx[:n_test]] = True
  w, b = probes.fit_logistic_regression(z[~test], labels[~test], num_classes=2, l2=l2, steps=steps)
  pred = np.argmax(z[test] @ np.asarray(w) + np.asarray(b), axis=1)
  return float(np.mean(pred == labels[test]))


def alignment(x: jax.typing.ArrayLike, y: jax.typing.ArrayLike, *, alpha: float = 2.0) -> float:
  """The mean distance between positives (lower is better).

  .. math::
    \\mathcal{L}_{\\mathrm{align}} = \\frac{1}{N}\\sum_i \\lVert x_i - y_i \\rVert_2^{\\alpha}

  Args:
    x: `[num, dim]`; row `i` is the positive of `y[i]`.
    y: `[num, dim]`.
    alpha: the exponent (2 in the paper).

  Returns:
    A float.

  References:
    Wang & Isola, "Understanding Contrastive Representation Learning through Alignment and
    Uniformity on the Hypersphere", ICML 2020, https://arxiv.org/abs/2005.10242
  """
  x, y = _common.pairs(x, y)
  return float(np.mean(np.linalg.norm(x - y, axis=1) ** alpha))


def uniformity(
  x: jax.typing.ArrayLike,
  y: jax.typing.ArrayLike | None = None,
  *,
  t: float = 2.0,
  block_size: int = similarity.DEFAULT_BLOCK_SIZE,
  mesh: Mesh | None = None,
) -> float:
  """Log of the mean Gaussian potential between distinct points (lower is more uniform).

  .. math::
    \\mathcal{L}_{\\mathrm{unif}}(x) = \\log \\frac{1}{N(N-1)} \\sum_{i \\ne j}
      e^{-t\\lVert x_i - x_j\\rVert_2^2}, \\qquad
    \\mathcal{L}_{\\mathrm{xunif}}(x, y) = \\log \\frac{1}{N(N-1)} \\sum_{i \\ne j}
      e^{-t\\lVert x_i - y_j\\rVert_2^2}

  With `y`, the cross-modal version (CUAXU's :math:`\\mathcal{L}_{\\mathrm{xunif}}`, over the
  non-paired `i != j`). Computed in blocks (`similarity.log_mean_gaussian_potential`). For points
  uniform on :math:`S^{d-1}` the value tends to
  :math:`\\log \\mathbb{E}\\, e^{-2t(1 - u)}` with `u` the cosine of two random points (for
  `d = 3`, `t = 2`: :math:`-4 + \\log(\\sinh 4 / 4) \\approx -2.0798`).

  Args:
    x: `[num, dim]`.
    y: optional `[num, dim]`, paired with `x`.
    t: the potential's sharpness (2 in the paper).
    block_size: the largest tile.
    mesh: when given, the rows are split over its devices.

  Returns:
    A float.

  References:
    Wang & Isola 2020 (above); Fahim et al., "It's Not a Modality Gap: Characterizing and
    Addressing the Contrastive Gap", 2024 (the cross-modal term of CUAXU)
  """
  if y is None:
    y = x
  else:
    _common.same_len(x=x, y=y)
  return float(
    similarity.log_mean_gaussian_potential(
      x, y, t=t, exclude_diagonal=True, block_size=block_size, mesh=mesh
    )
  )


def mean_cosines(x: jax.typing.ArrayLike, y: jax.typing.ArrayLike) -> dict[str, float]:
  """Mean cosine similarity of positives (`i == j`) and of negatives (`i != j`).

  The negatives' mean comes from the sums of the unit vectors, with no `[N, N]` matrix:

  .. math::
    \\bar s_+ = \\frac{1}{N}\\sum_i \\hat x_i^\\top \\hat y_i, \\qquad
    \\bar s_- = \\frac{(\\sum_i \\hat x_i)^\\top(\\sum_j \\hat y_j) - N \\bar s_+}{N(N-1)}

  Args:
    x: `[num, dim]`; row `i` is the positive of `y[i]`.
    y: `[num, dim]`.

  Returns:
    `{"positive": ..., "negative": ...}`.

  References:
    Liang et al. 2022 (above), the paired-cosine view of the gap.
  """
  x, y = _common.pairs(x, y)
  if len(x) < 2:
    raise ValueError(f"Need at least 2 pairs, got {len(x)}.")
  x, y = _common.normalize(x).astype(np.float64), _common.normalize(y).astype(np.float64)
  pos = np.einsum("nd,nd->n", x, y).sum()
  neg = (x.sum(0) @ y.sum(0) - pos) / (len(x) * (len(x) - 1))
  return {"positive": float(pos / len(x)), "negative": float(neg)}


def similarity_samples(
  x: jax.typing.ArrayLike, y: jax.typing.ArrayLike, *, num_negatives: int = 10_000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
  """Cosines of every positive pair and of random negative pairs (for histograms).

  Returns:
    `([num] positive cosines, [num_negatives] cosines of random pairs i != j)`.
  """
  x, y = _common.pairs(x, y)
  if len(x) < 2:
    raise ValueError(f"Need at least 2 pairs, got {len(x)}.")
  x, y = _common.normalize(x), _common.normalize(y)
  rng = np.random.default_rng(seed)
  i = rng.integers(0, len(x), num_negatives)
  j = (i + rng.integers(1, len(x), num_negatives)) % len(x)
  return np.einsum("nd,nd->n", x, y), np.einsum("nd,nd->n", x[i], y[j])


def singular_values(z: jax.typing.ArrayLike, *, center: bool = True) -> np.ndarray:
  """The singular values of the (centered) embedding matrix, largest first.

  Args:
    z: `[num, dim]`.
    center: subtract the mean row first.

  Returns:
    `[min(num, dim)]` float64 singular values.
  """
  z = _common.to_host(_common.matrix("z", z)).astype(np.float64)
  if center:
    z = z - z.mean(0)
  return np.linalg.svd(z, compute_uv=False)


def effective_rank(z: jax.typing.ArrayLike, *, center: bool = True) -> float:
  """Roy & Vetterli's effective rank: exp of the entropy of the normalized singular values.

  .. math::
    p_k = \\frac{\\sigma_k}{\\sum_l \\sigma_l}, \\qquad
    \\mathrm{erank}(Z) = \\exp\\Big(-\\sum_k p_k \\log p_k\\Big)

  It is `k` for data spread equally over `k` orthogonal directions, 1 for a collapsed line.

  Args:
    z: `[num, dim]` embeddings.
    center: subtract the mean row first (the dimensional-collapse convention).

  Returns:
    A float in `[1, min(num, dim)]`.

  References:
    Roy & Vetterli, "The effective rank: A measure of effective dimensionality", EUSIPCO 2007;
    Jing et al., "Understanding Dimensional Collapse in Contrastive Self-supervised Learning",
    ICLR 2022, https://arxiv.org/abs/2110.09348
  """
  s = singular_values(z, center=center)
  if s.sum() <= 0:
    return 1.0
  p = s / s.sum()
  p = p[p > 0]
  return float(np.exp(-np.sum(p * np.log(p))))


def variance_dims(z: jax.typing.ArrayLike, *, share: float = 0.99, center: bool = True) -> int:
  """The number of principal directions that hold `share` of the variance."""
  s2 = singular_values(z, center=center) ** 2
  if s2.sum() <= 0:
    return 0
  return int(np.searchsorted(np.cumsum(s2) / s2.sum(), share) + 1)


def geometry_metrics(
  x: jax.typing.ArrayLike,
  y: jax.typing.ArrayLike,
  *,
  x_name: str = "image",
  y_name: str = "text",
  t: float = 2.0,
  separability: bool = True,
  block_size: int = similarity.DEFAULT_BLOCK_SIZE,
  mesh: Mesh | None = None,
) -> dict[str, float]:
  """All of the above for a paired set, as one flat dict of floats.

  Keys: `gap`, `separability` (when asked), `alignment`, `uniformity/{x_name}`,
  `uniformity/{y_name}`, `uniformity/union` (both sets pooled), `uniformity/cross`,
  `cosine/positive`, `cosine/negative`,
  `effective_rank/{x_name}`, `effective_rank/{y_name}`, `dims99/{x_name}`, `dims99/{y_name}`.
  """
  x, y = _common.pairs(x, y)
  kw = dict(t=t, block_size=block_size, mesh=mesh)
  out = {"gap": modality_gap(x, y)}
  if separability:
    out["separability"] = modality_separability(x, y)
  out["alignment"] = alignment(x, y)
  out[f"uniformity/{x_name}"] = uniformity(x, **kw)
  out[f"uniformity/{y_name}"] = uniformity(y, **kw)
  out["uniformity/union"] = uniformity(np.concatenate([x, y]), **kw)
  out["uniformity/cross"] = uniformity(x, y, **kw)
  out.update({f"cosine/{k}": v for k, v in mean_cosines(x, y).items()})
  for name, z in ((x_name, x), (y_name, y)):
    out[f"effective_rank/{name}"] = effective_rank(z)
    out[f"dims99/{name}"] = float(variance_dims(z))
  return out
