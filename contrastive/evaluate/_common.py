"""Checks at the Python boundary and host transfers shared by the evaluation modules."""

from __future__ import annotations

from collections.abc import Sequence

import jax
from jax.experimental import multihost_utils
import numpy as np


def to_host(a) -> np.ndarray:
  """A host copy of `a`; a global array spanning several processes is gathered first."""
  if isinstance(a, jax.Array) and not a.is_fully_addressable:
    return np.asarray(multihost_utils.process_allgather(a, tiled=True))
  return np.asarray(a)


def matrix(name: str, a) -> np.ndarray | jax.Array:
  """Returns `a` (as an array) after checking that it is `[n, d]` and floating point."""
  if not hasattr(a, "shape"):
    a = np.asarray(a)
  if a.ndim != 2:
    raise ValueError(f"{name} must be a [num, dim] matrix, got shape {tuple(a.shape)}.")
  if not np.issubdtype(a.dtype, np.floating) and a.dtype != jax.numpy.bfloat16:
    raise ValueError(f"{name} must be floating point, got dtype {a.dtype}.")
  return a


def same_dim(**arrays) -> None:
  """Raises unless every `[n, d]` array has the same `d`."""
  dims = {name: a.shape[-1] for name, a in arrays.items()}
  if len(set(dims.values())) > 1:
    raise ValueError(f"Embedding dimensions differ: {dims}.")


def same_len(**arrays) -> None:
  """Raises unless every argument has the same leading size."""
  sizes = {name: len(a) for name, a in arrays.items()}
  if len(set(sizes.values())) > 1:
    raise ValueError(f"Leading sizes differ: {sizes}.")


def pairs(x, y, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
  """`x`, `y` checked as `[n, d]` float pairs (row `i` with row `i`), on the host as `dtype`."""
  x, y = matrix("x", x), matrix("y", y)
  same_dim(x=x, y=y)
  same_len(x=x, y=y)
  return to_host(x).astype(dtype), to_host(y).astype(dtype)


def int_vector(name: str, a, *, length: int | None = None) -> np.ndarray:
  """`a` as a host int32 vector, optionally of a given length."""
  a = to_host(a)
  if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
    raise ValueError(
      f"{name} must be a 1-D integer array, got shape {a.shape} and dtype {a.dtype}."
    )
  if length is not None and len(a) != length:
    raise ValueError(f"{name} must have length {length}, got {len(a)}.")
  return a.astype(np.int32)


def positive_ints(name: str, ks: Sequence[int]) -> tuple[int, ...]:
  ks = tuple(int(k) for k in ks)
  if not ks or any(k < 1 for k in ks):
    raise ValueError(f"{name} must be a non-empty sequence of positive ints, got {ks}.")
  return ks


def normalize(a: np.ndarray, eps: float = 1e-12) -> np.ndarray:
  """Rows of `a` scaled to unit L2 norm (zero rows stay zero)."""
  a = np.asarray(a, np.float32)
  return a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), eps)
