"""Validation at the Python boundary: shapes and dtypes are static, so every check runs at trace
time and names the offending value, before anything reaches XLA."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def check_embeddings(fn: str, **arrays) -> None:
  """Each array is [batch, dim], floating, and all share one shape."""
  shapes = {}
  for name, a in arrays.items():
    shape, dtype = np.shape(a), jnp.result_type(a)
    if len(shape) != 2:
      raise ValueError(f"{fn}: `{name}` must be [batch, dim], got shape {shape}.")
    if not jnp.issubdtype(dtype, jnp.floating):
      raise TypeError(f"{fn}: `{name}` must be a floating array, got dtype {dtype}.")
    shapes[name] = shape
  if len(set(shapes.values())) > 1:
    desc = ", ".join(f"{n}: {s}" for n, s in shapes.items())
    raise ValueError(f"{fn}: paired embeddings must have the same [batch, dim] shape, got {desc}.")
  if any(s[0] == 0 for s in shapes.values()):
    raise ValueError(f"{fn}: the batch is empty.")


def check_scalars(fn: str, **scalars) -> None:
  for name, v in scalars.items():
    if np.ndim(v) != 0:
      raise ValueError(
        f"{fn}: `{name}` must be a scalar, got shape {np.shape(v)} "
        f"(squeeze a [1]-shaped parameter, e.g. `{name}[0]`)."
      )
    if not jnp.issubdtype(jnp.result_type(v), jnp.floating) and not isinstance(v, (int, float)):
      if not jnp.issubdtype(jnp.result_type(v), jnp.integer):
        raise TypeError(f"{fn}: `{name}` must be a real number, got dtype {jnp.result_type(v)}.")


def check_block_size(fn: str, block_size) -> None:
  if block_size is None:
    return
  if (
    isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 1
  ):
    raise ValueError(f"{fn}: block_size must be a positive int or None, got {block_size!r}.")


def check_side(fn: str, batch: int, **trees) -> None:
  """Per-sample side data has the batch as its leading dimension."""
  for name, tree in trees.items():
    for leaf in jax.tree.leaves(tree):
      if np.ndim(leaf) == 0 or np.shape(leaf)[0] != batch:
        raise ValueError(
          f"{fn}: `{name}` must have leading dimension {batch} (the batch), got "
          f"shape {np.shape(leaf)}."
        )


def check_ids(fn: str, batch: int, **ids) -> None:
  """Per-sample integer ids (labels, cluster ids) are `[batch]` and of an integer dtype."""
  for name, value in ids.items():
    if np.shape(value) != (batch,):
      raise ValueError(f"{fn}: `{name}` must be [batch] = ({batch},), got shape {np.shape(value)}.")
    if not jnp.issubdtype(jnp.result_type(value), jnp.integer):
      raise TypeError(f"{fn}: `{name}` must be integer ids, got dtype {jnp.result_type(value)}.")


def check_label_smoothing(fn: str, eps: float) -> None:
  if not 0.0 <= float(eps) < 1.0:
    raise ValueError(f"{fn}: label_smoothing must be in [0, 1), got {eps!r}.")


def same_batch(fn: str, arrays: Sequence[jax.Array], names: Sequence[str]) -> None:
  sizes = [np.shape(a)[0] for a in arrays]
  if len(set(sizes)) > 1:
    raise ValueError(
      f"{fn}: batch sizes differ: " + ", ".join(f"{n}={s}" for n, s in zip(names, sizes))
    )
