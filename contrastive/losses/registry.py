"""Losses by name, for configs: one table, one calling convention.

The trainer calls every objective the same way::

    objective = registry.get(config.loss.name)
    loss = objective(embeddings, scale, bias, side, axis_name=..., block_size=..., **options)

``embeddings`` is the sequence of ``[batch, dim]`` arrays of the modalities in the order the model
config lists them (two for a pair loss, ``k`` for an n-modal one), ``side`` the batch's other
arrays (labels, hard negatives, ...), of which the objective reads the keys it names in
``side_keys``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import dataclasses
from typing import Literal

import jax

from contrastive.losses import reference
from contrastive.losses.sigmoid import sigmoid_loss
from contrastive.losses.softmax import softmax_loss


@dataclasses.dataclass(frozen=True)
class Objective:
  """A loss as the trainer sees it."""

  name: str
  # (embeddings, scale, bias, side, *, axis_name, block_size, **options) -> float32 scalar
  fn: Callable[..., jax.Array]
  modalities: int | None = 2  # the number of embeddings it takes; None: any k >= 2
  uses_bias: bool = False  # whether the model must learn a logit bias
  init: Literal["clip", "siglip"] = "clip"  # the scale/bias initialization convention
  side_keys: tuple[str, ...] = ()  # batch keys it reads from `side`
  # Keys from a momentum encoder and a queue of past keys, both state the trainer carries
  # (`contrastive.train.momentum`): `embeddings = (queries, keys)`, the queue in `side["queue"]`.
  momentum_queue: bool = False
  paper: str = ""
  # The dense equivalent with the same calling convention (no axis_name): for tests, benchmarks.
  reference: Callable[..., jax.Array] | None = None

  def __call__(self, embeddings: Sequence[jax.Array], scale, bias=None,
               side: Mapping[str, jax.Array] | None = None, *, axis_name=None, block_size=None,
               **options) -> jax.Array:
    if self.modalities is not None and len(embeddings) != self.modalities:
      raise ValueError(f"Loss {self.name!r} takes {self.modalities} modalities, got "
                       f"{len(embeddings)}.")
    side = dict(side or {})
    missing = [k for k in self.side_keys if k not in side]
    if missing:
      raise KeyError(f"Loss {self.name!r} needs batch keys {missing}; the batch has "
                     f"{sorted(side)}.")
    return self.fn(embeddings, scale, bias, side, axis_name=axis_name, block_size=block_size,
                   **options)

  def dense(self, embeddings: Sequence[jax.Array], scale, bias=None,
            side: Mapping[str, jax.Array] | None = None, **options) -> jax.Array:
    """The dense reference, called like the objective (whole batch, one device)."""
    if self.reference is None:
      raise NotImplementedError(f"Loss {self.name!r} has no dense reference registered.")
    return self.reference(embeddings, scale, bias, dict(side or {}), **options)


def pair_adapter(fn: Callable[..., jax.Array], *, uses_bias: bool = False):
  """Adapts ``fn(x, y, scale[, bias], **kw)`` to the registry's calling convention."""
  def adapted(embeddings, scale, bias, side, **kw):
    del side
    x, y = embeddings
    return fn(x, y, scale, bias, **kw) if uses_bias else fn(x, y, scale, **kw)
  return adapted


LOSSES: dict[str, Objective] = {}


def register(objective: Objective) -> Objective:
  """Adds an objective to the table; its name must be new."""
  if objective.name in LOSSES:
    raise ValueError(f"Loss {objective.name!r} is already registered.")
  LOSSES[objective.name] = objective
  return objective


def get(name: str) -> Objective:
  """The registered objective called `name`; an unknown name lists the known ones."""
  try:
    return LOSSES[name]
  except KeyError:
    raise ValueError(f"Unknown loss {name!r}; known: {', '.join(sorted(LOSSES))}.") from None


register(Objective("softmax", pair_adapter(softmax_loss), init="clip",
                   paper="CLIP (Radford et al., 2021)",
                   reference=pair_adapter(reference.softmax_loss)))
register(Objective("sigmoid", pair_adapter(sigmoid_loss, uses_bias=True), uses_bias=True,
                   init="siglip", paper="SigLIP (Zhai et al., 2023)",
                   reference=pair_adapter(reference.sigmoid_loss, uses_bias=True)))
