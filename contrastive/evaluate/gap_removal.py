r"""GR-CLIP's gap removal at evaluation: each modality's mean, taken on a reference set, removed.

With :math:`\mu_x, \mu_y` the mean image and text embeddings of a reference set,

.. math::
  \hat x = \frac{x - \mu_x}{\lVert x - \mu_x \rVert}, \qquad
  \hat y = \frac{y - \mu_y}{\lVert y - \mu_y \rVert},

and a task (zero-shot, retrieval, geometry, ...) scores :math:`\hat x, \hat y` instead of
:math:`x, y`. It is C³'s collapse applied post hoc: the two modalities' centroids meet at the
origin, so cross-modal similarities no longer carry the constant offset of the gap.

A config names it as a task of kind `gap_removed` wrapping another task:

```python
{"kind": "gap_removed", "task": {"kind": "retrieval", "source": {...}},
 "reference": {"name": "synthetic", "split": "test", "num_examples": 500, "seed": 1}}
```

The reference set should be other data than the task's (a different seed or split), so the
removal does not peek at the test set.

References:
  "Closing the Modality Gap for Mixed Modality Search" (GR-CLIP), 2025.
  Zhang et al., Connect, Collapse, Corrupt, ICLR 2024 (arXiv:2401.08567).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from contrastive.evaluate.context import Context


def remove_gap(x: np.ndarray, mean: np.ndarray) -> np.ndarray:
  r"""Rows of ``x`` minus ``mean``, re-normalized: :math:`(x_i - \mu)/\lVert x_i - \mu \rVert`.

  Args:
    x: [num, dim] embeddings of one modality.
    mean: [dim] that modality's mean embedding on a reference set.

  Returns:
    [num, dim] float32 unit rows (a row equal to ``mean`` stays zero).

  Example:
    >>> remove_gap(np.array([[1.0, 1.0], [1.0, -1.0]]), np.array([1.0, 0.0]))
    array([[ 0.,  1.],
           [ 0., -1.]], dtype=float32)
  """
  x = np.asarray(x, np.float32)
  mean = np.asarray(mean, np.float32)
  if x.ndim != 2 or mean.shape != x.shape[1:]:
    raise ValueError(
      f"remove_gap takes [num, dim] embeddings and a [dim] mean, got {x.shape} and {mean.shape}."
    )
  d = x - mean
  return d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)


class GapRemoved:
  """A `Context` whose image and text embeddings have their reference means removed
  (`remove_gap`); everything else is the wrapped context's."""

  def __init__(self, ctx: Context, image_mean: np.ndarray, text_mean: np.ndarray):
    self._ctx, self._image_mean, self._text_mean = ctx, image_mean, text_mean

  def __getattr__(self, name):
    return getattr(self._ctx, name)

  def load(self, config, *, image_key: str = "image"):
    x, fields = self._ctx.load(config, image_key=image_key)
    return remove_gap(x, self._image_mean), fields

  def embed_texts(self, texts):
    return remove_gap(self._ctx.embed_texts(texts), self._text_mean)


def gap_removed_task(
  registry: Mapping[str, Callable[..., dict[str, float]]],
  captions: Callable[[Mapping[str, list[Any]], str], tuple[list[str], np.ndarray]],
) -> Callable[..., dict[str, float]]:
  """The task of kind `gap_removed` over the task `registry` (`tasks.TASKS`, which holds it);
  `captions(fields, key) -> (texts, owner)`: a source's captions and the record of each."""

  def gap_removed(
    ctx: Context,
    *,
    task: Mapping[str, Any],
    reference: Mapping[str, Any],
    caption_key: str = "caption",
    image_key: str = "image",
  ) -> dict[str, float]:
    """Runs `task` (`{"kind": ..., **options}`, any kind that reads embeddings through the
    context) with each modality's mean over the `reference` source removed (`remove_gap`;
    the first caption of each reference record). Its metrics are the task's, and `gap_before`:
    the distance between the reference means (the gap that was removed)."""
    options = dict(task)
    kind = options.pop("kind", None)
    if kind not in registry or kind == "gap_removed":
      raise ValueError(
        f"gap_removed's task needs a kind among {sorted(set(registry) - {'gap_removed'})}, "
        f"got {kind!r}."
      )
    x, fields = ctx.load(reference, image_key=image_key)
    texts, owner = captions(fields, caption_key)
    first = np.unique(owner, return_index=True)[1]
    image_mean, text_mean = x.mean(0), ctx.embed_texts([texts[i] for i in first]).mean(0)
    out = dict(registry[kind](GapRemoved(ctx, image_mean, text_mean), **options))
    out["gap_before"] = float(np.linalg.norm(image_mean - text_mean))
    return out

  return gap_removed
