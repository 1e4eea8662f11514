"""The random draws behind one record of the built-in dataset, from one generator.

Scalars (positions, sizes, which attribute changes) come in blocks of 64 uniforms (one numpy call
instead of dozens); arrays (background and colour noise) come from the same generator directly.
The two interleave in the order they are asked for, so a record is a pure function of the
generator's seed and the order of the calls.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class Draws:
  """Uniform scalars in blocks, and uniform float32 arrays, from one `np.random.Generator`."""

  def __init__(self, rng: np.random.Generator, block: int = 64):
    self._rng, self._block = rng, block
    self._values = iter(())

  def uniform(self, lo: float = 0.0, hi: float = 1.0) -> float:
    try:
      u = next(self._values)
    except StopIteration:
      self._values = iter(self._rng.random(self._block).tolist())
      u = next(self._values)
    return lo + (hi - lo) * u

  def integer(self, n: int) -> int:
    return min(int(self.uniform() * n), n - 1)

  def weighted(self, cumulative: Sequence[float]) -> int:
    """An index drawn with probabilities given by `cumulative` (increasing, ending at 1)."""
    u = self.uniform()
    return next((k for k, c in enumerate(cumulative) if u < c), len(cumulative) - 1)

  def uniform_array(self, shape: int | tuple[int, ...]) -> np.ndarray:
    """Float32 uniforms in [0, 1) of `shape`, straight from the generator."""
    return self._rng.random(shape, np.float32)


def as_draws(rng: np.random.Generator | Draws) -> Draws:
  """`rng` itself if it is a `Draws`, else draws from the generator `rng`."""
  return rng if isinstance(rng, Draws) else Draws(rng)
