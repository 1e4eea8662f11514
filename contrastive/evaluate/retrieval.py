"""Cross-modal retrieval in both directions, with several captions per image."""

from __future__ import annotations

from collections.abc import Sequence

import jax
from jax.sharding import Mesh
import numpy as np

from contrastive.evaluate import _common
from contrastive.evaluate import similarity


def rank_metrics(ranks: jax.typing.ArrayLike, *, ks: Sequence[int] = (1, 5, 10)
                 ) -> dict[str, float]:
  """Recall@K, median and mean rank and mean reciprocal rank from the ranks of the first hits.

  .. math::
    R@K = \\frac{1}{N}\\sum_q \\mathbb{1}[r_q \\le K], \\qquad
    \\mathrm{MRR} = \\frac{1}{N}\\sum_q \\frac{1}{r_q}

  Args:
    ranks: `[num_queries]` 1-based ranks of each query's best-ranked ground truth.
    ks: the cut-offs K.

  Returns:
    `{"recall@K": ..., "median_rank": ..., "mean_rank": ..., "mrr": ...}`, plain floats.
  """
  ks = _common.positive_ints("ks", ks)
  ranks = _common.to_host(ranks).astype(np.float64)
  if ranks.ndim != 1 or not len(ranks) or (ranks < 1).any():
    raise ValueError(f"ranks must be a non-empty vector of ranks >= 1, got shape {ranks.shape}.")
  out = {f"recall@{k}": float(np.mean(ranks <= k)) for k in ks}
  out["median_rank"] = float(np.median(ranks))
  out["mean_rank"] = float(np.mean(ranks))
  out["mrr"] = float(np.mean(1.0 / ranks))
  return out


def retrieval_metrics(x: jax.typing.ArrayLike, y: jax.typing.ArrayLike, *,
                      y_to_x: jax.typing.ArrayLike,
                      meaning_ids: jax.typing.ArrayLike | None = None,
                      ks: Sequence[int] = (1, 5, 10), x_name: str = "image", y_name: str = "text",
                      block_size: int = similarity.DEFAULT_BLOCK_SIZE, mesh: Mesh | None = None
                      ) -> dict[str, float]:
  """Retrieval from `x` to `y` and from `y` to `x` (Recall@K, median rank, MRR, RSUM).

  Item `y_j` (a caption) belongs to `x_{y\\_to\\_x[j]}` (its image); an image may own several
  captions. In the `x -> y` direction a query's ground truths are all of its captions and its
  rank is that of the best-ranked one (the COCO / Flickr protocol); in `y -> x` each caption has
  one image. With `meaning_ids` (one per `x`), any item of the same meaning counts as a hit:
  caption `j` matches image `i` when `meaning_ids[i] == meaning_ids[y_to_x[j]]` (for datasets in
  which different images share one description). Ranks are computed in blocks
  (`similarity.positive_ranks`); ties count against the query.

  .. math::
    r_q = 1 + \\#\\{ j \\notin G_q : s_{qj} \\ge \\max_{g \\in G_q} s_{qg} \\}, \\qquad
    R@K = \\frac{1}{N}\\sum_q \\mathbb{1}[r_q \\le K], \\qquad
    \\mathrm{RSUM} = \\sum_{K, \\mathrm{dir}} 100 \\cdot R@K

  Args:
    x: `[num_x, dim]` embeddings (images).
    y: `[num_y, dim]` embeddings (captions).
    y_to_x: `[num_y]` index into `x` of each `y`'s owner.
    meaning_ids: optional `[num_x]` integer meaning of each `x`.
    ks: the cut-offs K.
    x_name, y_name: used in the keys.
    block_size: the largest similarity tile.
    mesh: when given, the query rows are split over its devices.

  Returns:
    Plain floats keyed `"{x_name}_to_{y_name}/recall@K"`, `.../median_rank`, `.../mean_rank`,
    `.../mrr`, the same for `"{y_name}_to_{x_name}"`, and `"rsum"`.

  References:
    Karpathy & Fei-Fei, "Deep Visual-Semantic Alignments for Generating Image Descriptions",
    CVPR 2015 (the R@K / median-rank protocol); Radford et al., "Learning Transferable Visual
    Models From Natural Language Supervision", 2021, https://arxiv.org/abs/2103.00020
  """
  x, y = _common.matrix("x", x), _common.matrix("y", y)
  _common.same_dim(x=x, y=y)
  y_to_x = _common.int_vector("y_to_x", y_to_x, length=y.shape[0])
  if len(y_to_x) and (y_to_x.min() < 0 or y_to_x.max() >= x.shape[0]):
    raise ValueError(f"y_to_x must index into the {x.shape[0]} rows of x, got values in "
                     f"[{y_to_x.min()}, {y_to_x.max()}].")
  x_ids = np.arange(x.shape[0], dtype=np.int32)
  if meaning_ids is not None:
    x_ids = _common.int_vector("meaning_ids", meaning_ids, length=x.shape[0])
  y_ids = x_ids[y_to_x]
  orphans = np.setdiff1d(x_ids, y_ids)
  if len(orphans):
    raise ValueError(f"Every x needs at least one y; ids without one: {orphans[:10].tolist()}"
                     f"{' ...' if len(orphans) > 10 else ''}.")
  out = {}
  for name, (q, q_ids, k, k_ids) in {f"{x_name}_to_{y_name}": (x, x_ids, y, y_ids),
                                     f"{y_name}_to_{x_name}": (y, y_ids, x, x_ids)}.items():
    ranks = similarity.positive_ranks(q, k, x_ids=q_ids, y_ids=k_ids, block_size=block_size,
                                      mesh=mesh)
    out.update({f"{name}/{key}": v for key, v in rank_metrics(ranks, ks=ks).items()})
  out["rsum"] = float(100 * sum(v for key, v in out.items() if "/recall@" in key))
  return out
