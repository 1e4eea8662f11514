"""Learning-rate and weight-decay multipliers per parameter: layer-wise decay and regex lists.

Three `config.optim` keys set, for every parameter leaf, a learning-rate multiplier `m_lr` and a
weight-decay multiplier `m_wd` (both 1 by default):

- `layer_decay`: a float (every tower with a transformer) or `{modality: float}`. With `L`
  blocks in a tower and `d` the decay (BEiT; timm's and open_clip's layer decay),

  .. math::
    m_{lr} = d^{\\,L + 1 - \\ell}, \\quad \\ell = 0 \\text{ (embeddings)}, \\; i + 1
    \\text{ (block } i\\text{)}, \\; L + 1 \\text{ (the rest: final norm, pooling, head)},

  so the head and the final norm train at the full rate, block `i` at `d^(L - i)` and the patch or
  token embedding, position table, class token and pre-norm at the deepest rate `d^(L + 1)`.
  Scanned towers (one `encoderblock` with a leading `[depth]` axis) get a `[depth, 1, ...]`
  array of multipliers.
- `lr_mults`: big_vision's list of `(regex, multiplier)`; the first pattern that `re.fullmatch`es
  a parameter's path (`"image/encoder/transformer/encoderblock_3/mlp/fc1/kernel"`) gives its
  multiplier, which multiplies the layer decay's. A multiplier of 0 or None freezes: the leaf
  gets no update and no optimizer state, as a locked one (`contrastive.models.lock`).
- `wd_mults`: the same for the weight decay (0: no decay; the decay mask still applies first).

`unlocked_groups` (`{modality: n}`) freezes a tower but for its last `n` groups, open_clip's
`--lock-image-unlocked-groups` (`contrastive.models.locking.unlocked_groups_locked`).

`make_param_groups` resolves them into trees the optimizer uses (`contrastive.train.optimizer`)
and `describe` into the table logged at start-up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
import math
import re
from typing import Any

from absl import logging
import flax.linen as nn
import jax
import numpy as np

from contrastive.models import locking

EMBEDDING_NAMES = locking.EMBEDDING_NAMES  # below the first block (layer id 0)
_BLOCK = re.compile(r"^encoderblock(?:_(\d+))?$")


def _paths(params: Any) -> list[str]:
  return [locking._path(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]


def tower_depths(params: Any) -> dict[str, int]:
  """`{modality: number of transformer blocks}` of the towers that have a transformer."""
  params = nn.meta.unbox(params)
  depths: dict[str, int] = {}
  for leaf, name in zip(jax.tree.leaves(params), _paths(params)):
    parts = name.split("/")
    if len(parts) < 4 or parts[1:3] != ["encoder", "transformer"]:
      continue
    match = _BLOCK.match(parts[3])
    if match is None:
      continue
    depth = int(match.group(1)) + 1 if match.group(1) is not None else int(leaf.shape[0])
    depths[parts[0]] = max(depths.get(parts[0], 0), depth)
  return depths


def _layer_id(path: str, depth: int) -> tuple[int | None, bool]:
  """`(layer id, scanned)`: 0 for embeddings, i + 1 for block i, depth + 1 for the rest."""
  parts = path.split("/")
  if len(parts) < 3 or parts[1] != "encoder":
    return depth + 1, False  # the head
  first = parts[2]
  if first in EMBEDDING_NAMES or first.startswith("stem_"):
    return 0, False
  if first == "transformer" and len(parts) > 3 and (match := _BLOCK.match(parts[3])):
    if match.group(1) is None:
      return None, True
    return int(match.group(1)) + 1, False
  return depth + 1, False


def _is_decay(d) -> bool:
  return not isinstance(d, bool) and isinstance(d, (int, float)) and 0.0 < d <= 1.0


def check_decay(layer_decay: Any, modalities: Sequence[str]) -> dict[str, float]:
  """`{modality: decay}` from `optim.layer_decay` (None, a float, or a mapping), checked."""
  if layer_decay is None:
    return {}
  if isinstance(layer_decay, Mapping) or hasattr(layer_decay, "items"):
    decays = dict(layer_decay.items())
    unknown = [m for m in decays if m not in modalities]
    if unknown:
      raise ValueError(
        f"optim.layer_decay names {unknown[0]!r}, which is not a tower with transformer "
        f"blocks; those are {list(modalities)}."
      )
  else:
    decays = {m: layer_decay for m in modalities}
    if not _is_decay(layer_decay):
      raise ValueError(f"optim.layer_decay must be a number in (0, 1], got {layer_decay!r}.")
  for m, d in decays.items():
    if not _is_decay(d):
      raise ValueError(f"optim.layer_decay for {m!r} must be a number in (0, 1], got {d!r}.")
  return {m: float(d) for m, d in decays.items()}


def check_config(optim: Any) -> None:
  """The checks of `layer_decay`, `lr_mults`, `wd_mults` and `unlocked_groups` that need no
  parameters, one line each."""
  decay = optim.get("layer_decay")
  if decay is not None:
    check_decay(decay, list(decay.keys()) if hasattr(decay, "keys") else [])
  check_patterns(optim.get("lr_mults"), "lr_mults")
  check_patterns(optim.get("wd_mults"), "wd_mults")
  unlocked = optim.get("unlocked_groups")
  if unlocked is not None:
    if not hasattr(unlocked, "items"):
      raise ValueError(f"optim.unlocked_groups is {{modality: n}}, got {unlocked!r}.")
    for modality, n in unlocked.items():
      if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"optim.unlocked_groups[{modality!r}] must be an int >= 0, got {n!r}.")


def layer_decay_multipliers(params: Any, layer_decay: Any) -> Any:
  """The learning-rate multiplier of every leaf under `layer_decay` (see the module docstring).

  Returns:
    A tree like `params` of Python floats, or `[depth, 1, ...]` float32 arrays for the leaves
    of scanned blocks.
  """
  params = nn.meta.unbox(params)
  depths = tower_depths(params)
  decays = check_decay(layer_decay, list(depths))

  def mult(path, leaf):
    name = locking._path(path)
    modality = name.split("/")[0]
    if modality not in decays:
      return 1.0
    depth, d = depths[modality], decays[modality]
    layer, scanned = _layer_id(name, depth)
    if scanned:
      ids = np.arange(1, depth + 1, dtype=np.float64)
      values = d ** (depth + 1 - ids)
      return values.astype(np.float32).reshape((depth,) + (1,) * (leaf.ndim - 1))
    return d ** (depth + 1 - layer)

  return jax.tree_util.tree_map_with_path(mult, params)


def check_patterns(patterns: Any, what: str) -> list[tuple[str, float | None]]:
  """`[(regex, multiplier)]` from `optim.lr_mults` / `optim.wd_mults`, compiled and checked."""
  out = []
  for entry in patterns or ():
    if isinstance(entry, str) or not isinstance(entry, Sequence) or len(entry) != 2:
      raise ValueError(f"optim.{what} entries are (regex, multiplier) pairs, got {entry!r}.")
    regex, m = entry
    try:
      re.compile(regex)
    except (re.error, TypeError) as e:
      raise ValueError(
        f"optim.{what} pattern {regex!r} is not a regular expression: {e}."
      ) from None
    if m is not None and (
      isinstance(m, bool) or not isinstance(m, (int, float)) or not math.isfinite(m) or m < 0
    ):
      raise ValueError(
        f"optim.{what} multiplier for {regex!r} must be a number >= 0 (or None), got {m!r}."
      )
    out.append((regex, None if m is None else float(m)))
  return out


def pattern_multipliers(params: Any, patterns: Any, *, what: str = "lr_mults") -> Any:
  """Each leaf's multiplier from the first `(regex, multiplier)` that fullmatches its path (1.0
  where none does; None stays None). A pattern that matches no parameter is logged as a
  warning naming it."""
  patterns = check_patterns(patterns, what)
  params = nn.meta.unbox(params)
  paths = _paths(params)
  for regex, _ in patterns:
    if not any(re.fullmatch(regex, p) for p in paths):
      logging.warning("optim.%s pattern %r matches no parameter.", what, regex)

  def mult(path, _):
    name = locking._path(path)
    for regex, m in patterns:
      if re.fullmatch(regex, name):
        return m
    return 1.0

  return jax.tree_util.tree_map_with_path(mult, params, is_leaf=lambda x: x is None)


@dataclasses.dataclass(frozen=True)
class ParamGroups:
  """Per-leaf multipliers (trees with the structure of the params).

  Attributes:
    lr: learning-rate multipliers (floats, or arrays for scanned blocks under layer decay).
    wd: weight-decay multipliers (floats).
    frozen: True for the leaves that get no update (lr multiplier 0 or None, `unlocked_groups`).
    active: whether any multiplier or freezing is configured (False: the plain optimizer).
  """

  lr: Any
  wd: Any
  frozen: Any
  active: bool


def _is_zero(m) -> bool:
  return m is None or (np.ndim(m) == 0 and float(m) == 0.0)


def make_param_groups(optim: Any, params: Any) -> ParamGroups:
  """The multipliers `optim` (`config.optim`) sets for `params` (see the module docstring).

  Raises:
    ValueError: a layer decay outside (0, 1], a negative multiplier, a pattern that is not a
      regex, or an `unlocked_groups` entry for a tower that is not there (one line each).
  """
  check_config(optim)
  params = nn.meta.unbox(params)
  layer_decay = optim.get("layer_decay")
  lr_mults, wd_mults = optim.get("lr_mults") or (), optim.get("wd_mults") or ()
  unlocked = optim.get("unlocked_groups") or {}
  active = bool(layer_decay is not None or lr_mults or wd_mults or unlocked)
  decay = layer_decay_multipliers(params, layer_decay)
  pattern = pattern_multipliers(params, lr_mults, what="lr_mults")
  wd = pattern_multipliers(params, wd_mults, what="wd_mults")
  wd = jax.tree.map(lambda m: 1.0 if m is None else m, wd, is_leaf=lambda x: x is None)
  locked = locking.unlocked_groups_locked(params, dict(unlocked.items())) if unlocked else ()
  in_locked = locking.trainable_mask(params, locked=locked) if locked else None
  frozen = jax.tree.map(_is_zero, pattern, is_leaf=lambda x: x is None)
  if in_locked is not None:
    frozen = jax.tree.map(lambda f, t: f or not t, frozen, in_locked)
  lr = jax.tree.map(
    lambda d, p: d * (0.0 if p is None else p), decay, pattern, is_leaf=lambda x: x is None
  )
  return ParamGroups(lr=lr, wd=wd, frozen=frozen, active=active)


def describe(groups: ParamGroups, params: Any, *, locked_by_model: Any = None) -> list[str]:
  """The start-up table: one row per distinct (lr multiplier, wd multiplier, frozen) with the
  parameter paths it covers (a common prefix, or the first and a count), its parameter count
  and its multipliers."""
  params = nn.meta.unbox(params)
  rows: dict[tuple, list] = {}
  leaves = jax.tree.leaves(params)
  lr = jax.tree.leaves(groups.lr, is_leaf=lambda x: isinstance(x, np.ndarray))
  wd, frozen = jax.tree.leaves(groups.wd), jax.tree.leaves(groups.frozen)
  model_locked = jax.tree.leaves(locked_by_model) if locked_by_model is not None else None
  for i, (path, leaf) in enumerate(zip(_paths(params), leaves)):
    is_frozen = frozen[i] or (model_locked is not None and not model_locked[i])
    m = lr[i]
    m_text = f"{float(np.min(m)):.3g}..{float(np.max(m)):.3g}" if np.ndim(m) else f"{float(m):.3g}"
    key = (path.split("/")[0],) + (
      ("frozen", "-") if is_frozen else (m_text, f"{float(wd[i]):.3g}")
    )
    rows.setdefault(key, []).append((path, int(np.prod(leaf.shape))))
  lines = [f"{'parameters':<56} {'count':>12} {'lr mult':>12} {'wd mult':>8}"]
  every = _paths(params)
  for (_, m_text, w_text), entries in rows.items():
    label = _label([p for p, _ in entries], every)
    if len(label) > 56:
      label = "..." + label[-53:]
    count = sum(c for _, c in entries)
    lines.append(f"{label:<56} {count:>12,} {m_text:>12} {w_text:>8}")
  return lines


def _label(paths: list[str], every: list[str]) -> str:
  """`a/b/c` for one path; `a/b/*` when the paths are all of the parameters under `a/b/`;
  `a/b/{x,y,z}` for up to four names below their common prefix; else `a/b/* (n names)`."""
  if len(paths) == 1:
    return paths[0]
  prefix = _common_prefix(paths)
  if prefix and set(paths) == {p for p in every if p.startswith(prefix + "/")}:
    return prefix + "/*"
  depth = len(prefix.split("/")) if prefix else 0
  branches = sorted({p.split("/")[depth] for p in paths if len(p.split("/")) > depth})
  head = prefix + "/" if prefix else ""
  if len(branches) == 1:
    return f"{head}{branches[0]}/*"
  if len(branches) <= 4:
    return head + "{" + ",".join(branches) + "}"
  return f"{head}* ({len(branches)} names)"


def _common_prefix(paths: list[str]) -> str:
  parts = [p.split("/") for p in paths]
  out = []
  for items in zip(*parts):
    if len(set(items)) != 1:
      break
    out.append(items[0])
  return "/".join(out)
