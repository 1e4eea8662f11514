"""Zero-shot classification with prompt-template ensembles.

Two ways to turn `[num_classes, num_templates]` prompt embeddings into a prediction:

- `class_prototypes` (the CLIP protocol): average each class's prompt embeddings into one
  prototype, predict the nearest prototype.
- `marginal_log_probs`: score every prompt with the model's own softmax and sum each class's
  probabilities. When the templates name nuisance attributes (every size and colour of a shape),
  this marginalizes them out; averaging embeddings instead blurs a class whose direction depends
  on them.
"""

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
    raise ValueError(
      f"Need at least one class name and one template, got {len(class_names)} and {len(templates)}."
    )
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
  e = _common.to_host(template_embeddings)
  return _common.normalize(_templates(e[:, None] if e.ndim == 2 else e).mean(axis=1))


def _templates(template_embeddings) -> np.ndarray:
  """`[num_classes, num_templates, dim]` unit-norm float32 prompt embeddings, checked."""
  e = _common.to_host(template_embeddings)
  if e.ndim != 3:
    raise ValueError(
      f"template_embeddings must be [num_classes, num_templates, dim], got shape {e.shape}."
    )
  return _common.normalize(e)


def marginal_log_probs(
  x: jax.typing.ArrayLike,
  template_embeddings: jax.typing.ArrayLike,
  *,
  scale: float,
  block_size: int = similarity.DEFAULT_BLOCK_SIZE,
) -> np.ndarray:
  """Class log-probabilities as the sum over each class's prompts of the prompt probabilities.

  With unit-norm prompt embeddings :math:`w_{ct}` (class `c`, template `t`) and the model's
  logit scale :math:`s`:

  .. math::
    \\log p(c \\mid x) = \\log \\sum_t \\exp(s \\langle x, w_{ct} \\rangle)
      - \\log \\sum_{c', t'} \\exp(s \\langle x, w_{c't'} \\rangle)

  As `s` grows this scores a class by its best prompt; as `s` shrinks, by its mean similarity.

  Args:
    x: `[num, dim]` embeddings (images).
    template_embeddings: `[num_classes, num_templates, dim]` prompt embeddings (each prompt
      normalized here).
    scale: the logit scale the model was trained with (`exp(log_scale)`), > 0.
    block_size: the side of the largest score tile: `block_size**2` scores are computed at once.

  Returns:
    `[num, num_classes]` float32 log-probabilities (each row sums to 1 in probability).
  """
  x = _common.to_host(_common.matrix("x", x)).astype(np.float32)
  w = _templates(template_embeddings)
  _common.same_dim(x=x, template_embeddings=w)
  if not scale > 0:
    raise ValueError(f"scale must be positive, got {scale!r}.")
  rows = max(1, block_size**2 // (w.shape[0] * w.shape[1]))
  out = []
  for start in range(0, len(x), rows):
    logits = float(scale) * np.einsum("nd,ctd->nct", x[start : start + rows], w)
    per_class = jax.nn.logsumexp(logits, axis=-1)
    out.append(np.asarray(per_class - jax.nn.logsumexp(per_class, axis=-1, keepdims=True)))
  return np.concatenate(out).astype(np.float32)


def zeroshot_metrics(
  x: jax.typing.ArrayLike,
  prototypes: jax.typing.ArrayLike,
  *,
  labels: jax.typing.ArrayLike,
  ks: Sequence[int] = (1, 5),
  class_names: Sequence[str] | None = None,
  block_size: int = similarity.DEFAULT_BLOCK_SIZE,
  mesh: Mesh | None = None,
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
  num_classes = prototypes.shape[0]
  ks = tuple(k for k in _common.positive_ints("ks", ks) if k <= num_classes)
  _, top = similarity.topk(x, prototypes, max(ks, default=1), block_size=block_size, mesh=mesh)
  return _metrics(
    _common.to_host(top), labels, ks=ks, num_classes=num_classes, class_names=class_names
  )


def score_metrics(
  scores: jax.typing.ArrayLike,
  *,
  labels: jax.typing.ArrayLike,
  ks: Sequence[int] = (1, 5),
  class_names: Sequence[str] | None = None,
) -> dict[str, float]:
  """`zeroshot_metrics` of a prediction given as a `[num, num_classes]` score matrix (e.g.
  `marginal_log_probs`): the classes ranked by score, ties to the lower index."""
  scores = _common.to_host(_common.matrix("scores", scores))
  num_classes = scores.shape[1]
  ks = tuple(k for k in _common.positive_ints("ks", ks) if k <= num_classes)
  top = np.argsort(-scores, axis=1, kind="stable")[:, : max(ks, default=1)]
  return _metrics(top, labels, ks=ks, num_classes=num_classes, class_names=class_names)


def _metrics(
  top: np.ndarray,
  labels,
  *,
  ks: tuple[int, ...],
  num_classes: int,
  class_names: Sequence[str] | None,
) -> dict[str, float]:
  """The metrics of `zeroshot_metrics` from each row's best classes `top` `[num, k_max]`."""
  multi_hot = _multi_hot(labels, num=len(top), num_classes=num_classes)
  if class_names is None:
    class_names = [str(c) for c in range(num_classes)]
  if len(class_names) != num_classes:
    raise ValueError(f"Got {len(class_names)} class names for {num_classes} classes.")
  hits = np.take_along_axis(multi_hot, top, axis=1)  # [num, k_max]
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
      raise ValueError(
        f"Labels must lie in [0, {num_classes}), got values in [{labels.min()}, {labels.max()}]."
      )
    return np.eye(num_classes, dtype=bool)[labels]
  if labels.shape != (num, num_classes):
    raise ValueError(f"Multi-hot labels must have shape {(num, num_classes)}, got {labels.shape}.")
  return labels.astype(bool)
