"""Captioning metrics of a model with a decoder (CoCa): generated captions against references.

Both sides are token ids of the run's own tokenizer framing (`[start] words [end] padding`, at
the data's `max_len`), so two captions are equal when their ids are. Per image `i` with the
reference `r_i` (its tokens after the start id, up to and with the end id: `n_i` of them) and the
generated `g_i`:

- `exact_match`: the share of images with `g_i = r_i` (any of its references, if several);
- `token_accuracy`: `sum_i #{t : g_it = r_it} / sum_i n_i`, position by position over the
  reference's tokens (teacher-free: a wrong early word shifts nothing, it only counts wrong);

each also over a subset of the images (e.g. held-out (colour, shape) combinations).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def caption_metrics(
  generated: np.ndarray,
  references: np.ndarray,
  *,
  pad_id: int = 0,
  subsets: Mapping[str, np.ndarray] | None = None,
) -> dict[str, float]:
  """`exact_match` and `token_accuracy` (module docstring), overall and per subset.

  Args:
    generated: `[n, L]` int ids, each row starting with the start id.
    references: `[n, L]` or `[n, k, L]` (k references per image) int ids, the same framing.
    pad_id: the padding id (not counted).
    subsets: `{name: [n] bool}`; each adds `{name}/exact_match` and `{name}/token_accuracy`
      (a subset with no image is left out).

  Returns:
    Floats in [0, 1]. Token accuracy is taken against the first reference.

  Raises:
    ValueError: shapes that do not match.
  """
  generated = np.asarray(generated)
  references = np.asarray(references)
  if references.ndim == 2:
    references = references[:, None, :]
  if generated.ndim != 2 or references.ndim != 3 or references.shape[::2] != generated.shape:
    raise ValueError(
      f"caption_metrics: generated must be [n, L] and references [n, L] or [n, k, L] with the "
      f"same n and L, got {generated.shape} and {references.shape}."
    )
  exact = np.any(np.all(references == generated[:, None, :], axis=-1), axis=1)
  first = references[:, 0, 1:]  # after the start id
  counted = first != pad_id
  hits = np.sum((generated[:, 1:] == first) & counted, axis=1)
  totals = np.sum(counted, axis=1)

  def metrics(mask: np.ndarray, prefix: str) -> dict[str, float]:
    return {
      f"{prefix}exact_match": float(np.mean(exact[mask])),
      f"{prefix}token_accuracy": float(np.sum(hits[mask]) / max(np.sum(totals[mask]), 1)),
    }

  out = metrics(np.ones(len(generated), bool), "")
  for name, mask in (subsets or {}).items():
    mask = np.asarray(mask, bool)
    if mask.any():
      out.update(metrics(mask, f"{name}/"))
  return out


def padded_batches(n: int, batch_size: int) -> Sequence[np.ndarray]:
  """Index batches of exactly `batch_size` covering `range(n)`; the last repeats its final index
  to fill up (the caller drops the repeats)."""
  out = []
  for start in range(0, n, batch_size):
    idx = np.arange(start, min(start + batch_size, n))
    out.append(np.concatenate([idx, np.full(batch_size - len(idx), idx[-1])]))
  return out
