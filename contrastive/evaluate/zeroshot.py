"""Zero-shot classification with prompt-template ensembles (the CLIP protocol)."""

from __future__ import annotations

from collections.abc import Sequence

import jax
from jax.sharding import Mesh
import numpy as np

from contrastive.evaluate import _common
from contrastive.evaluate import similarity


def prompts(class_names: Sequence[str], templates: Sequence[str]) -> list[str]:
  """Every template filled with every class name, class-major.

  Args:
    class_names: `num_classes` names.
    templates: `num_templates` strings with one `{}` (e.g. `"a photo of a {}."`).

  Returns:
    `num_classes * num_templates` prompts; prompt `c * num_templates + t` is template `t` of class
    `c`, so their embeddings reshape to `[num_classes, num_templates, dim]`.
  """
  if not class_names or not templates:
    raise ValueError(f"Need at least one class name and one template, got {len(class_names)} "
                     f"and {len(templates)}.")
  bad = [t for t in templates if "{}" not in t]
  if bad:
    raise ValueError(f"Every template needs a '{{}}' for the class name; these have none: {bad}.")
  return [t.format(c) for c in class_names for t in templates]


def class_prototypes(template_embeddings: jax.typing.ArrayLike) -> np.ndarray:
  """Class prototypes: per-template embeddings normalized, averaged and normalized again.

  .. math::
    w_c = \\frac{\\bar w_c}{\\lVert \\bar w_c \\rVert}, \\qquad
    \\bar w_c = \\frac{1}{T}\\sum_{t=1}^{T} \\frac{g(\\mathrm{template}_t(c))}
      {\\lVert g(\\mathrm{template}_t(c)) \\rVert}

  Args:
    template_embeddings: `[num_classes, num_templates, dim]` (or `[num_classes, dim]` for one
      template).

  Returns:
    `[num_classes, dim]` unit-norm float32 prototypes.

  References:
    Radford et al., "Learning Transferable Visual Models From Natural Language Supervision",
    2021, https://arxiv.org/abs/2103.00020 (section 3.1.4, prompt ensembling)
  """
  e = _common.to_host(template_embeddings).astype(np.float32)
  if e.ndim == 2:
    e = e[:, None]
  if e.ndim != 3:
    raise ValueError("template_embeddings must be [num_classes, num_templates, dim], got shape "
                     f"{e.shape}.")
  return _common.normalize(_common.normalize(e).mean(axis=1))


def zeroshot_metrics(x: jax.typing.ArrayLike, prototypes: jax.typing.ArrayLike, *,
                     labels: jax.typing.ArrayLike, ks: Sequence[int] = (1, 5),
                     class_names: Sequence[str] | None = None,
                     block_size: int = similarity.DEFAULT_BLOCK_SIZE, mesh: Mesh | None = None
                     ) -> dict[str, float]:
  """Top-K accuracy, mean per-class accuracy and per-class accuracy of zero-shot prediction.

  The prediction is :math:`\\hat c(x) = \\arg\\max_c \\langle x, w_c\\rangle`; an example counts
  as correct at K when one of its K best classes is one of its labels:

  .. math::
    \\mathrm{top}K = \\frac{1}{N}\\sum_i \\mathbb{1}\\big[\\mathrm{top}_K(x_i) \\cap L_i \\ne
    \\emptyset\\big]

  With integer labels :math:`L_i = \\{y_i\\}`; with a `[num, num_classes]` multi-hot matrix,
  several classes are correct (the "ReaL" rule). The accuracy of class `c` is the top-1 accuracy
  over the examples whose labels contain `c`; `mean_per_class` averages it over the classes
  that occur. Scores are computed in row blocks (`similarity.topk`).

  Args:
    x: `[num, dim]` embeddings (images).
    prototypes: `[num_classes, dim]` class prototypes (`class_prototypes`).
    labels: `[num]` integer classes or `[num, num_classes]` multi-hot.
    ks: the K of top-K; those above `num_classes` are left out.
    class_names: names for the per-class keys (default: the class index).
    block_size: the largest similarity tile.
    mesh: when given, the rows are split over its devices.

  Returns:
    Plain floats keyed `top1`, `top5`, ..., `mean_per_class`, and `per_class/<name>` for each
    class that has examples.

  References:
    Radford et al., "Learning Transferable Visual Models From Natural Language Supervision",
    2021, https://arxiv.org/abs/2103.00020; Beyer et al., "Are we done with ImageNet?", 2020,
    https://arxiv.org/abs/2006.07159 (multi-label correctness)
  """
  x, prototypes = _common.matrix("x", x), _common.matrix("prototypes", prototypes)
  _common.same_dim(x=x, prototypes=prototypes)
  num, num_classes = x.shape[0], prototypes.shape[0]
  multi_hot = _multi_hot(labels, num=num, num_classes=num_classes)
  if class_names is None:
    class_names = [str(c) for c in range(num_classes)]
  if len(class_names) != num_classes:
    raise ValueError(f"Got {len(class_names)} class names for {num_classes} prototypes.")
  ks = tuple(k for k in _common.positive_ints("ks", ks) if k <= num_classes)
  k_max = max(ks, default=1)
  _, top = similarity.topk(x, prototypes, k_max, block_size=block_size, mesh=mesh)
  hits = np.take_along_axis(multi_hot, _common.to_host(top), axis=1)  # [num, k_max]
  out = {f"top{k}": float(np.mean(hits[:, :k].any(axis=1))) for k in ks}
  top1 = hits[:, 0]
  per_class = {}
  for c, name in enumerate(class_names):
    has = multi_hot[:, c]
    if has.any():
      per_class[name] = float(np.mean(top1[has]))
  out["mean_per_class"] = float(np.mean(list(per_class.values())))
  out.update({f"per_class/{name}": v for name, v in per_class.items()})
  return out


def _multi_hot(labels, *, num: int, num_classes: int) -> np.ndarray:
  labels = _common.to_host(labels)
  if labels.ndim == 1:
    if not np.issubdtype(labels.dtype, np.integer):
      raise ValueError(f"Integer labels expected, got dtype {labels.dtype}.")
    if len(labels) != num:
      raise ValueError(f"Got {len(labels)} labels for {num} embeddings.")
    if labels.min() < 0 or labels.max() >= num_classes:
      raise ValueError(f"Labels must lie in [0, {num_classes}), got values in "
                       f"[{labels.min()}, {labels.max()}].")
    return np.eye(num_classes, dtype=bool)[labels]
  if labels.shape != (num, num_classes):
    raise ValueError(f"Multi-hot labels must have shape {(num, num_classes)}, got "
                     f"{labels.shape}.")
  return labels.astype(bool)
