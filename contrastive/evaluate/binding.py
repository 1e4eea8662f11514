"""Compositional binding: does the true caption beat its hard negatives (swapped attributes...)?"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np

from contrastive.evaluate import _common


def binding_metrics(
  x: jax.typing.ArrayLike,
  y: jax.typing.ArrayLike,
  negatives: jax.typing.ArrayLike,
  *,
  negative_of: jax.typing.ArrayLike,
  negative_types: Sequence[str],
) -> dict[str, float]:
  """The share of hard negatives that score below the true caption, per negative type.

  Each hard negative `n_k` (a caption of image `negative_of[k]` with, say, two attributes
  swapped) is compared with the true caption of that image. A win counts 1, a tie 1/2, a loss 0,
  so a model that cannot tell them apart (or has collapsed) sits at chance, 0.5. For each type
  the wins are averaged per image first, then over the images that have negatives of that type:

  .. math::
    \\mathrm{acc}_\\tau = \\frac{1}{|I_\\tau|} \\sum_{i \\in I_\\tau} \\frac{1}{|K_{i\\tau}|}
      \\sum_{k \\in K_{i\\tau}} \\Big( \\mathbb{1}[\\langle x_i, y_i\\rangle >
      \\langle x_i, n_k\\rangle] + \\tfrac12 \\mathbb{1}[\\langle x_i, y_i\\rangle =
      \\langle x_i, n_k\\rangle] \\Big)

  Args:
    x: `[num, dim]` image embeddings.
    y: `[num, dim]` true-caption embeddings, row `i` for image `i`.
    negatives: `[num_negatives, dim]` hard-negative caption embeddings.
    negative_of: `[num_negatives]` index into `x` of each negative's image.
    negative_types: `num_negatives` type names (e.g. `"attribute_swap"`, `"relation_swap"`,
      `"attribute_change"`).

  Returns:
    Plain floats keyed `"<type>"` (accuracy, chance 0.5) and `"mean"` (the mean over types),
    plus `"count/<type>"`, the number of negatives of each type.

  References:
    Thrush et al., "Winoground", CVPR 2022, https://arxiv.org/abs/2204.03162; Yuksekgonul et
    al., "When and why vision-language models behave like bags-of-words", ICLR 2023,
    https://arxiv.org/abs/2210.01936 (ARO: attribute and relation swaps)
  """
  x, y = _common.matrix("x", x), _common.matrix("y", y)
  negatives = _common.matrix("negatives", negatives)
  _common.same_dim(x=x, y=y, negatives=negatives)
  _common.same_len(x=x, y=y)
  negative_of = _common.int_vector("negative_of", negative_of, length=negatives.shape[0])
  negative_types = np.asarray([str(t) for t in negative_types])
  if len(negative_types) != negatives.shape[0]:
    raise ValueError(
      f"Got {len(negative_types)} negative types for {negatives.shape[0]} negatives."
    )
  if len(negative_of) and (negative_of.min() < 0 or negative_of.max() >= x.shape[0]):
    raise ValueError(
      f"negative_of must index into the {x.shape[0]} images, got values in "
      f"[{negative_of.min()}, {negative_of.max()}]."
    )
  x, y, negatives = (_common.to_host(a).astype(np.float32) for a in (x, y, negatives))
  positive = np.einsum("nd,nd->n", x, y)[negative_of]
  negative = np.einsum("kd,kd->k", x[negative_of], negatives)
  wins = (positive > negative) + 0.5 * (positive == negative)
  out = {}
  for kind in sorted(set(negative_types.tolist())):
    sel = negative_types == kind
    _, inverse = np.unique(negative_of[sel], return_inverse=True)
    per_image = np.bincount(inverse, wins[sel]) / np.bincount(inverse)
    out[kind] = float(per_image.mean())
    out[f"count/{kind}"] = float(sel.sum())
  kinds = [k for k in out if not k.startswith("count/")]
  out["mean"] = float(np.mean([out[k] for k in kinds])) if kinds else 0.5
  return out
