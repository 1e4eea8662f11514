"""PNG plots of an embedding space and of metrics over training (matplotlib, headless).

Figures are built with the object-oriented API on an Agg canvas (`matplotlib.figure.Figure` and
`FigureCanvasAgg`): no pyplot, no global backend switch, no display needed. matplotlib is
imported only when a plot is drawn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import os

import numpy as np


def _figure(width: float = 6.0, height: float = 4.5):
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  fig = Figure(figsize=(width, height), dpi=100)
  FigureCanvasAgg(fig)
  return fig


def _save(fig, path: str | os.PathLike) -> str:
  fig.tight_layout()
  fig.savefig(os.fspath(path), format="png")
  return os.fspath(path)


def pca_projection(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Both sets projected on the top two principal axes of their union.

  Returns:
    `([num_x, 2], [num_y, 2], [2] explained-variance ratios)`.
  """
  z = np.concatenate([x, y]).astype(np.float64)
  z = z - z.mean(0)
  _, s, vt = np.linalg.svd(z, full_matrices=False)
  k = min(2, vt.shape[0])
  p = z @ vt[:k].T
  if k < 2:
    p = np.pad(p, [(0, 0), (0, 2 - k)])
  var = s**2 / max((s**2).sum(), 1e-30)
  return p[: len(x)], p[len(x) :], np.pad(var[:k], (0, 2 - k))


def plot_pca(
  path,
  x: np.ndarray,
  y: np.ndarray,
  *,
  names: Sequence[str] = ("image", "text"),
  max_lines: int = 200,
  seed: int = 0,
) -> str:
  """Scatter of the 2-D PCA of both modalities, a thin line joining each pair, centroids marked."""
  px, py, var = pca_projection(x, y)
  fig = _figure(6, 6)
  ax = fig.add_subplot()
  if len(x) == len(y):
    rng = np.random.default_rng(seed)
    for i in rng.permutation(len(x))[:max_lines]:
      ax.plot([px[i, 0], py[i, 0]], [px[i, 1], py[i, 1]], color="0.8", lw=0.5, zorder=1)
  for p, name, colour in ((px, names[0], "tab:blue"), (py, names[1], "tab:orange")):
    ax.scatter(p[:, 0], p[:, 1], s=6, alpha=0.6, color=colour, label=name, zorder=2)
    ax.scatter(*p.mean(0), s=150, marker="X", color=colour, edgecolor="black", zorder=3)
  gap = np.linalg.norm(x.mean(0) - y.mean(0))
  ax.set_title(f"PCA of both modalities (gap = {gap:.3f})")
  ax.set_xlabel(f"PC1 ({100 * var[0]:.1f}% var)")
  ax.set_ylabel(f"PC2 ({100 * var[1]:.1f}% var)")
  ax.legend(loc="best")
  ax.set_aspect("equal", adjustable="datalim")
  return _save(fig, path)


def plot_similarity_histogram(path, positive: np.ndarray, negative: np.ndarray) -> str:
  """Overlaid histograms of positive-pair and negative-pair cosines."""
  fig = _figure()
  ax = fig.add_subplot()
  bins = np.linspace(-1, 1, 81)
  ax.hist(
    negative,
    bins=bins,
    density=True,
    alpha=0.6,
    color="tab:gray",
    label=f"negatives (mean {np.mean(negative):.3f})",
  )
  ax.hist(
    positive,
    bins=bins,
    density=True,
    alpha=0.6,
    color="tab:green",
    label=f"positives (mean {np.mean(positive):.3f})",
  )
  ax.set_xlabel("cosine similarity")
  ax.set_ylabel("density")
  ax.set_title("Similarity of positive and negative pairs")
  ax.legend(loc="upper left")
  return _save(fig, path)


def plot_spectrum(path, spectra: Mapping[str, np.ndarray]) -> str:
  """Log singular-value spectra (normalized by the largest), one line per embedding set."""
  fig = _figure()
  ax = fig.add_subplot()
  for name, s in spectra.items():
    s = np.asarray(s, np.float64)
    if s.size and s[0] > 0:
      ax.semilogy(np.arange(1, len(s) + 1), np.maximum(s / s[0], 1e-12), label=name)
  ax.set_xlabel("index")
  ax.set_ylabel("singular value / largest")
  ax.set_title("Singular value spectrum (centred embeddings)")
  ax.legend(loc="best")
  return _save(fig, path)


# Metric names shown first in the curves, in this order (matched on the end of the key).
HEADLINE = (
  "top1",
  "image_to_text/recall@1",
  "text_to_image/recall@1",
  "rsum",
  "mean",
  "gap",
  "separability",
  "alignment",
  "uniformity/union",
  "accuracy",
)


def _headline_first(keys) -> list[str]:
  def rank(key):
    ends = [i for i, h in enumerate(HEADLINE) if key.endswith(h) and key.count("/") <= 2]
    subset = key.split("/")[1] in ("seen", "heldout") if "/" in key else False
    return (min(ends) if ends else len(HEADLINE), subset, key)

  return sorted(keys, key=rank)


def plot_curves(
  path,
  history: Sequence[Mapping[str, float]],
  *,
  keys: Sequence[str] | None = None,
  max_panels: int = 12,
) -> str:
  """One panel per metric against `step`; `history` is a list of dicts with a `step` key.

  Without `keys`, the headline metrics (`HEADLINE`) come first, then the others, up to
  `max_panels`; per-class accuracies and counts are left out.
  """
  if keys is None:
    keys = _headline_first(
      {
        k
        for h in history
        for k in h
        if k != "step" and "/per_class/" not in k and "count/" not in k
      }
    )
  keys = list(keys)[:max_panels]
  cols = min(3, max(1, len(keys)))
  rows = max(1, -(-len(keys) // cols))
  fig = _figure(4 * cols, 3 * rows)
  for n, key in enumerate(keys):
    ax = fig.add_subplot(rows, cols, n + 1)
    pts = [(h["step"], h[key]) for h in history if key in h and "step" in h]
    if pts:
      steps, values = zip(*sorted(pts))
      ax.plot(steps, values, marker="o", ms=3)
    ax.set_title(key, fontsize=9)
    ax.set_xlabel("step", fontsize=8)
    ax.tick_params(labelsize=7)
  return _save(fig, path)
