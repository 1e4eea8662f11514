"""The evaluation report in a directory: `metrics.json`, a history, and PNG plots.

Files written by `write_report` (those whose inputs were given):

- `metrics.json`: the flat dict of float metrics (plus `"step"` when known), sorted keys.
- `history.jsonl`: one JSON line per evaluation (`append_history`), read back for the curves.
- `pca.png`: both modalities on the top two principal axes of their union, pairs joined,
  centroids marked; the modality gap is visible as two separated clouds.
- `similarity_histogram.png`: cosines of positive pairs and of random negative pairs.
- `spectrum.png`: the log singular-value spectrum of each modality (dimensional collapse).
- `curves.png`: the metrics against training step (from the history).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import json
import math
import os

from absl import logging
import jax
import numpy as np

from contrastive.evaluate import _common
from contrastive.evaluate import geometry
from contrastive.evaluate import plots

METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.jsonl"


def _clean(metrics: Mapping[str, float]) -> dict[str, float | None]:
  """Floats for JSON; NaN and infinities become None (strict JSON has no NaN)."""
  out = {}
  for k, v in metrics.items():
    v = float(v)
    out[str(k)] = v if math.isfinite(v) else None
  return out


def write_metrics(
  workdir: str | os.PathLike, metrics: Mapping[str, float], *, step: int | None = None
) -> str:
  """Writes `metrics.json` (flat, sorted keys; `"step"` added when given)."""
  os.makedirs(workdir, exist_ok=True)
  data = _clean(metrics)
  if step is not None:
    data["step"] = int(step)
  path = os.path.join(workdir, METRICS_FILE)
  with open(path, "w") as f:
    json.dump(data, f, indent=1, sort_keys=True)
  return path


def append_history(workdir: str | os.PathLike, step: int, metrics: Mapping[str, float]) -> str:
  """Appends `{"step": step, **metrics}` as one line of `history.jsonl`."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, HISTORY_FILE)
  with open(path, "a") as f:
    f.write(json.dumps({"step": int(step), **_clean(metrics)}, sort_keys=True) + "\n")
  return path


def read_history(workdir: str | os.PathLike) -> list[dict[str, float]]:
  """The lines of `history.jsonl`, oldest first (empty when there is none)."""
  path = os.path.join(workdir, HISTORY_FILE)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def write_report(
  workdir: str | os.PathLike,
  metrics: Mapping[str, float],
  *,
  x: jax.typing.ArrayLike | None = None,
  y: jax.typing.ArrayLike | None = None,
  names: Sequence[str] = ("image", "text"),
  history: Sequence[Mapping[str, float]] | None = None,
  step: int | None = None,
  max_points: int = 2000,
  seed: int = 0,
) -> dict[str, str]:
  """Writes `metrics.json` and the plots whose inputs are given; returns their paths by name.

  Args:
    workdir: the directory (created if needed).
    metrics: flat metrics.
    x, y: optional paired `[num, dim]` embeddings (images and captions); they give the PCA,
      similarity-histogram and spectrum plots. At most `max_points` pairs (a seeded subset) are
      drawn in the PCA plot; the spectra use all.
    names: the two modalities' names, for legends.
    history: a list of `{"step": ..., metric: ...}` (e.g. `read_history(workdir)`); with two or
      more entries, `curves.png` is drawn.
    step: stored in `metrics.json`.
    max_points: the most pairs drawn in the scatter.
    seed: for the subsets.

  Returns:
    `{"metrics": path, "pca": path, ...}` for the files written.
  """
  out = {"metrics": write_metrics(workdir, metrics, step=step)}
  if (x is None) != (y is None):
    raise ValueError("Give both x and y, or neither.")
  if x is not None:
    x = _common.to_host(_common.matrix("x", x)).astype(np.float32)
    y = _common.to_host(_common.matrix("y", y)).astype(np.float32)
    _common.same_dim(x=x, y=y)
    rng = np.random.default_rng(seed)
    if len(x) == len(y) and len(x) > max_points:
      sub = rng.choice(len(x), max_points, replace=False)
      px, py = x[sub], y[sub]
    else:
      px, py = x[:max_points], y[:max_points]
    out["pca"] = plots.plot_pca(os.path.join(workdir, "pca.png"), px, py, names=names)
    if len(x) == len(y) and len(x) >= 2:
      pos, neg = geometry.similarity_samples(x, y, seed=seed)
      out["similarity_histogram"] = plots.plot_similarity_histogram(
        os.path.join(workdir, "similarity_histogram.png"), pos, neg
      )
    out["spectrum"] = plots.plot_spectrum(
      os.path.join(workdir, "spectrum.png"),
      {names[0]: geometry.singular_values(x), names[1]: geometry.singular_values(y)},
    )
  if history is not None and len(history) >= 2:
    out["curves"] = plots.plot_curves(os.path.join(workdir, "curves.png"), history)
  logging.info("Wrote the evaluation report to %s: %s", workdir, ", ".join(sorted(out)))
  return out
