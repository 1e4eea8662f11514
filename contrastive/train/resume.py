"""Resuming a workdir: the config a run saves there, and what a resumed run may change.

A run writes its resolved config to `{workdir}/config.json`. Rerunning a workdir that holds
checkpoints resumes from the latest one, and `check_resume` first compares the new config with
the saved one, key by key:

- Keys that shape what a checkpoint holds (the train state, the data iterator's position) are
  refused: the saved checkpoints cannot continue under the new config (orbax would fail deep
  inside TensorStore, grain a few steps later, or the run would go on as another model). One
  `ValueError` names every such key with both values and says to start a new run in another
  workdir; nothing in the workdir is touched (no checkpoint deleted or overwritten, the saved
  config.json kept).

  ========================  =================================================================
  every key of `model`      the parameters' structure and shapes, and what they compute
                            (towers, widths, `embed_dim`, the bias, `locked`, dtypes, ...)
  `loss.queue_size`         `moco`'s key encoder and queues (their shape, and whether the
                            state has them: a loss without a queue must leave it None)
  `optim.name`              the optimizer state's structure (Adam moments, LAMB, SGD)
  `optim.grad_clip_norm`    only between set and None (clipping adds a step to the chain)
  `optim.b1` with sgd       only between 0 and non-zero (SGD keeps momentum only for b1 > 0)
  `optim.ema_decay`         only between set and None (the EMA of the weights in the state)
  `optim.layer_decay`,      the parameter groups, which decide which leaves have optimizer
  `lr_mults`, `wd_mults`,   state (a frozen group has none) and how it is split between the
  `unlocked_groups`         group's optimizers
  `loss.terms.<t>.teacher`  and `teacher_from`, `teacher_name`: a teacher term's teacher (its
                            parameters are in the state)
  `data.num_workers`        grain saves the iterator's position per worker process (0 to 1
                            fails to restore, 1 to 2 a few steps later)
  ========================  =================================================================

- Every other key may change, and the run logs which did: the length of the run
  (`total_steps`, which also stretches the schedule), the learning rate and its schedule,
  `optim.b2`/`eps`/`weight_decay`/a clipping threshold, `optim.accum_steps`, the loss
  (`loss.name` between losses without a queue, its options, `block_size`), `seed` (the
  randomness of the steps from here on), `mesh` (arrays reshard), the rest of the data
  pipeline (the batch size, the transforms: the iterator goes on from its saved record
  position), checkpointing, evaluation and logging. These change how the run goes on, not what
  its checkpoints hold.

The run writes config.json only once its state is restored (or initialized), so the file always
describes the checkpoints beside it. A workdir with checkpoints and no config.json (written by
an older version) is resumed unchecked.
"""

from __future__ import annotations

from collections.abc import Mapping
import json
import os
from typing import Any

from absl import logging
import jax
import ml_collections

from contrastive.run.workdir import CONFIG_FILE
from contrastive.run.workdir import checkpoint_dir
from contrastive.run.workdir import saved_config

_ABSENT = "(absent)"
# The optimizer's parameter groups (`contrastive.train.param_groups`).
GROUP_KEYS = ("optim.layer_decay", "optim.lr_mults", "optim.wd_mults", "optim.unlocked_groups")


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes `config` (resolved) to `{workdir}/config.json` atomically; process 0 only."""
  if jax.process_index() != 0:
    return
  path = os.path.join(workdir, CONFIG_FILE)
  with open(path + ".tmp", "w") as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True))
  os.replace(path + ".tmp", path)


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  out = {}
  for key, value in tree.items():
    path = f"{prefix}{key}"
    if isinstance(value, Mapping) and value:
      out.update(_flatten(value, path + "."))
    else:
      out[path] = value
  return out


def config_changes(
  saved: Mapping[str, Any], config: ml_collections.ConfigDict
) -> list[tuple[str, Any, Any]]:
  """`(key, saved value, new value)` for every dotted key where the two configs differ (a key
  only one has gets `"(absent)"` on the other side), sorted by key."""
  old = _flatten(saved)
  new = _flatten(json.loads(config.to_json_best_effort()))
  return [
    (key, old.get(key, _ABSENT), new.get(key, _ABSENT))
    for key in sorted(set(old) | set(new))
    if old.get(key, _ABSENT) != new.get(key, _ABSENT)
  ]


def changes_state(key: str, old: Any, new: Any, *, optimizer: str | None = None) -> bool:
  """Whether changing `key` from `old` to `new` changes what a checkpoint holds (the table above);
  `optimizer` is `optim.name` (the same in both, or the change is refused anyway)."""
  if key == "model" or key.startswith("model."):
    return True
  if key in ("loss.queue_size", "optim.name", "data.num_workers"):
    return True
  if any(key == k or key.startswith(k + ".") for k in GROUP_KEYS):
    return True
  if key in ("optim.grad_clip_norm", "optim.ema_decay"):
    return (old in (None, _ABSENT)) != (new in (None, _ABSENT))
  if key.startswith("loss.terms.") and key.endswith((".teacher", ".teacher_from", ".teacher_name")):
    return True
  if key == "optim.b1" and optimizer == "sgd":
    return bool(old) != bool(new)
  return False


def _has_checkpoints(workdir: str) -> list[int]:
  directory = checkpoint_dir(workdir)
  if not os.path.isdir(directory):
    return []
  return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def _show(value: Any) -> str:
  text = value if value == _ABSENT else json.dumps(value)
  return text if len(text) <= 80 else text[:77] + "..."


def describe(changes: list[tuple[str, Any, Any]]) -> str:
  """`key: saved -> new; ...` on one line."""
  return "; ".join(f"{key}: {_show(old)} -> {_show(new)}" for key, old, new in changes)


def check_resume(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Refuses to resume `workdir` with a config that changes what its checkpoints hold; logs the
  other keys that changed. Does nothing for a workdir without checkpoints or config.json.

  Raises:
    ValueError: one line naming each refused key with its saved and new value, and what to do
      instead; nothing in `workdir` is changed.
  """
  steps = _has_checkpoints(workdir)
  saved = saved_config(workdir) if steps else None
  if saved is None:
    return
  changes = config_changes(saved, config)
  optimizer = saved.get("optim", {}).get("name")
  refused = [c for c in changes if changes_state(*c, optimizer=optimizer)]
  if refused:
    raise ValueError(
      f"Cannot resume {workdir}: its checkpoints (up to step {steps[-1]}) hold a train state "
      f"or data iterator that this config cannot continue ({describe(refused)}; the saved "
      f"value, from {os.path.join(workdir, CONFIG_FILE)}, first). Start a new run in another "
      f"workdir (--workdir), or rerun with the saved values; nothing in {workdir} was changed."
    )
  if changes:
    logging.warning(
      "Resuming %s (step %d) with changed keys (none changes what the checkpoints hold): %s",
      workdir,
      steps[-1],
      describe(changes),
    )
