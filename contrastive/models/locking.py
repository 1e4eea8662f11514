"""Locking parts of a model (LiT): which parameters the optimizer may change.

`trainable_mask` turns a list of locked path prefixes into a pytree of bools; `lock` wraps an
optax optimizer so that locked leaves get a zero update and no optimizer state (optax's
`multi_transform` with `set_to_zero`). Paths join dict keys with `/`: `"image"` is the whole
image tower, `"image/encoder"` its encoder without the head, `"log_scale"` the logit scale.

Example:
  >>> model = make_model(cfg)                       # cfg.locked = ("image",)
  >>> params = nn.unbox(model.init(rng, model.dummy_batch(), train=False))["params"]
  >>> tx = lock(optax.adamw(1e-3), params, locked=model.locked)
  >>> opt_state = tx.init(params)                   # no Adam moments for the image tower

The model's own `locked` field additionally runs locked towers in inference mode and stops
their gradients, so the backward pass skips them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import optax

TRAINABLE = "trainable"
FROZEN = "frozen"


def _path(keys) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in keys)


def _check_locked(params: Any, locked: Sequence[str]) -> tuple[str, ...]:
  if isinstance(locked, str):
    locked = (locked,)
  paths = [_path(p) for p, _ in jax.tree_util.tree_flatten_with_path(nn.meta.unbox(params))[0]]
  for entry in locked:
    entry_path = entry.strip("/")
    if not any(p == entry_path or p.startswith(entry_path + "/") for p in paths):
      top = sorted({p.split("/")[0] for p in paths})
      raise ValueError(f"Locked entry {entry!r} matches no parameter; top-level names: {top}.")
  return tuple(entry.strip("/") for entry in locked)


def trainable_mask(params: Any, *, locked: Sequence[str] = ()) -> Any:
  """True for every leaf the optimizer may update, False under a locked prefix.

  Args:
    params: the (unboxed) params pytree, e.g. `variables["params"]`.
    locked: path prefixes (`"image"`, `"image/encoder"`, `"log_scale"`); the model's
      `locked` field is the usual value.

  Returns:
    A pytree of bools with the structure of `params`.

  Raises:
    ValueError: an entry matches no parameter (the message lists the top-level names).
  """
  locked = _check_locked(params, locked)

  def trainable(path, _):
    p = _path(path)
    return not any(p == entry or p.startswith(entry + "/") for entry in locked)

  return jax.tree_util.tree_map_with_path(trainable, nn.meta.unbox(params))


def trainable_labels(params: Any, *, locked: Sequence[str] = ()) -> Any:
  """`"trainable"` or `"frozen"` per leaf, the labels `optax.multi_transform` takes."""
  return jax.tree.map(lambda t: TRAINABLE if t else FROZEN, trainable_mask(params, locked=locked))


def lock(
  tx: optax.GradientTransformation, params: Any, *, locked: Sequence[str] = ()
) -> optax.GradientTransformation:
  """`tx` for the trainable leaves; zero updates and no state for the locked ones.

  Args:
    tx: the optimizer for the trainable parameters.
    params: the (unboxed) params pytree (only its structure and names are read).
    locked: path prefixes, as in `trainable_mask`.

  Returns:
    An optax transformation; with nothing locked, `tx` itself.
  """
  if not locked:
    return tx
  labels = trainable_labels(params, locked=locked)
  return optax.multi_transform({TRAINABLE: tx, FROZEN: optax.set_to_zero()}, labels)


def weight_decay_mask(params: Any) -> Any:
  """True for the leaves weight decay usually applies to: Dense/Conv kernels and embedding tables.

  Biases, LayerNorm parameters, position embeddings, class tokens, probes and the logit
  scale and bias are excluded (as in open_clip). Works for scanned layers, whose kernels have
  an extra leading axis.
  """

  def decay(path, _):
    return _path(path).rsplit("/", 1)[-1] in ("kernel", "embedding")

  return jax.tree_util.tree_map_with_path(decay, nn.meta.unbox(params))


# The first name under `{modality}/encoder/` of the parameters below the first transformer block.
EMBEDDING_NAMES = ("embedding", "pos_embedding", "cls", "norm_pre", "registers")


def tower_groups(params: Any, modality: str) -> list[list[str]]:
  """open_clip's lock groups of a tower, first to last, as lists of path prefixes: the
  embeddings (patch or token embedding, position table, class token, pre-norm), blocks `0` to
  `L - 2`, the last block with the final norm (and pooling head), then the projection head.

  Raises:
    ValueError: `modality` has no unrolled transformer (`encoderblock_0`, ...).
  """
  paths = [_path(p) for p, _ in jax.tree_util.tree_flatten_with_path(nn.meta.unbox(params))[0]]
  encoder = f"{modality}/encoder/"
  blocks = sorted(
    {
      int(p.split("/")[3].rsplit("_", 1)[1])
      for p in paths
      if p.startswith(encoder + "transformer/encoderblock_")
    }
  )
  if not blocks:
    scanned = any(p.startswith(encoder + "transformer/encoderblock/") for p in paths)
    why = "its blocks are scanned (model.scan=True)" if scanned else "it has no transformer blocks"
    raise ValueError(f"Cannot unlock the last groups of tower {modality!r}: {why}.")
  firsts = sorted({p[len(encoder) :].split("/")[0] for p in paths if p.startswith(encoder)})
  embeddings = [encoder + f for f in firsts if f in EMBEDDING_NAMES or f.startswith("stem_")]
  top = [encoder + f for f in firsts if f != "transformer" and encoder + f not in embeddings]
  block = [f"{encoder}transformer/encoderblock_{i}" for i in blocks]
  head = [p for p in (f"{modality}/head",) if any(q.startswith(p + "/") for q in paths)]
  groups = [embeddings, *([b] for b in block[:-1]), [block[-1], *top]]
  return groups + ([head] if head else [])


def unlocked_groups_locked(params: Any, unlocked: dict[str, int]) -> tuple[str, ...]:
  """The path prefixes to lock so that each tower of `unlocked` (`{modality: n}`) trains only its
  last `n` groups (`tower_groups`; open_clip's `lock_image(unlocked_groups=n)`).

  Raises:
    ValueError: a modality without a tower, or `n` outside `[0, number of groups]`.
  """
  top = {_path(p).split("/")[0] for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]}
  locked: list[str] = []
  for modality, n in unlocked.items():
    if modality not in top:
      raise ValueError(
        f"optim.unlocked_groups names {modality!r}; the model's parameters are {sorted(top)}."
      )
    groups = tower_groups(params, modality)
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= len(groups):
      raise ValueError(
        f"optim.unlocked_groups[{modality!r}] must be an int in [0, {len(groups)}] (the tower's "
        f"groups), got {n!r}."
      )
    for group in groups[: len(groups) - n]:
      locked.extend(group)
  return tuple(locked)
