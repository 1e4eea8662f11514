"""Cross-modal retrieval in both directions, with several captions per image."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
from jax.sharding import Mesh
import numpy as np

from contrastive.evaluate import _common
from contrastive.evaluate import similarity


def rank_metrics(
  ranks: jax.typing.ArrayLike, *, ks: Sequence[int] = (1, 5, 10)
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


def retrieval_ranks(
  x: jax.typing.ArrayLike,
  y: jax.typing.ArrayLike,
  *,
  y_to_x: jax.typing.ArrayLike,
  meaning_ids: jax.typing.ArrayLike | None = None,
  block_size: int = similarity.DEFAULT_BLOCK_SIZE,
  mesh: Mesh | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """The rank of the first hit of every `x` among the `y`s and of every `y` among the `x`s.

  See `retrieval_metrics` for the arguments and the definition.

  Returns:
    `([num_x] ranks of x -> y, [num_y] ranks of y -> x)`, host int arrays.
  """
  x, y = _common.matrix("x", x), _common.matrix("y", y)
  _common.same_dim(x=x, y=y)
  y_to_x = _common.int_vector("y_to_x", y_to_x, length=y.shape[0])
  if len(y_to_x) and (y_to_x.min() < 0 or y_to_x.max() >= x.shape[0]):
    raise ValueError(
      f"y_to_x must index into the {x.shape[0]} rows of x, got values in "
      f"[{y_to_x.min()}, {y_to_x.max()}]."
    )
  x_ids = np.arange(x.shape[0], dtype=np.int32)
  if meaning_ids is not None:
    x_ids = _common.int_vector("meaning_ids", meaning_ids, length=x.shape[0])
  y_ids = x_ids[y_to_x]
  orphans = np.setdiff1d(x_ids, y_ids)
  if len(orphans):
    raise ValueError(
      f"Every x needs at least one y; ids without one: {orphans[:10].tolist()}"
      f"{' ...' if len(orphans) > 10 else ''}."
    )
  kw = dict(block_size=block_size, mesh=mesh)
  return (
    _common.to_host(similarity.positive_ranks(x, y, x_ids=x_ids, y_ids=y_ids, **kw)),
    _common.to_host(similarity.positive_ranks(y, x, x_ids=y_ids, y_ids=x_ids, **kw)),
  )


def retrieval_metrics(
  x: jax.typing.ArrayLike,
  y: jax.typing.ArrayLike,
  *,
  y_to_x: jax.typing.ArrayLike,
  meaning_ids: jax.typing.ArrayLike | None = None,
  subsets: Mapping[str, jax.typing.ArrayLike] | None = None,
  ks: Sequence[int] = (1, 5, 10),
  x_name: str = "image",
  y_name: str = "text",
  block_size: int = similarity.DEFAULT_BLOCK_SIZE,
  mesh: Mesh | None = None,
) -> dict[str, float]:
  """Retrieval from `x` to `y` and from `y` to `x` (Recall@K, median rank, MRR, RSUM).

  Item `y[j]` (a caption) belongs to `x[y_to_x[j]]` (its image); an image may own several
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
    subsets: optional `{name: [num_x] bool}`: the metrics again over the queries of each subset
      of images (and their captions), ranked against the whole gallery, under keys prefixed
      `"{name}/"` (e.g. seen and held-out combinations).
    ks: the cut-offs K.
    x_name, y_name: used in the keys.
    block_size: the largest similarity tile.
    mesh: when given, the query rows are split over its devices.

  Returns:
    Plain floats keyed `"{x_name}_to_{y_name}/recall@K"`, `.../median_rank`, `.../mean_rank`,
    `.../mrr`, the same for `"{y_name}_to_{x_name}"`, and `"rsum"`; then the same per subset.

  References:
    Karpathy & Fei-Fei, "Deep Visual-Semantic Alignments for Generating Image Descriptions",
    CVPR 2015 (the R@K / median-rank protocol); Radford et al., "Learning Transferable Visual
    Models From Natural Language Supervision", 2021, https://arxiv.org/abs/2103.00020
  """
  ks = _common.positive_ints("ks", ks)
  x_ranks, y_ranks = retrieval_ranks(
    x, y, y_to_x=y_to_x, meaning_ids=meaning_ids, block_size=block_size, mesh=mesh
  )
  y_to_x = _common.int_vector("y_to_x", y_to_x)
  groups = {"": np.ones(len(x_ranks), bool)}
  for name, mask in (subsets or {}).items():
    mask = _common.to_host(mask)
    if mask.shape != x_ranks.shape or mask.dtype != bool:
      raise ValueError(
        f"Subset {name!r} must be a bool mask of shape {x_ranks.shape}, got "
        f"{mask.dtype} {mask.shape}."
      )
    groups[f"{name}/"] = mask
  out = {}
  for prefix, mask in groups.items():
    if not mask.any():
      continue
    part = {}
    for direction, ranks in (
      (f"{x_name}_to_{y_name}", x_ranks[mask]),
      (f"{y_name}_to_{x_name}", y_ranks[mask[y_to_x]]),
    ):
      part.update({f"{direction}/{k}": v for k, v in rank_metrics(ranks, ks=ks).items()})
    part["rsum"] = float(100 * sum(v for k, v in part.items() if "/recall@" in k))
    out.update({prefix + k: v for k, v in part.items()})
  return out
