"""What a run leaves in its directory, and the readers of it that need no trainer.

    {workdir}/config.json                      the resolved run config (`saved_config`)
    {workdir}/checkpoints/{step}/state/        the train state; its `params` (`restore_params`)
    {workdir}/checkpoints/{step}/data_iter/    each process's data iterator position

The trainer writes them (`contrastive.train.checkpoint.Checkpointer`,
`contrastive.train.resume.save_config`); evaluation, `train.load_run` and a run initialized from
another (`checkpoint.init_from`) read them here.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

CONFIG_FILE = "config.json"
# The items of a checkpoint step directory.
STATE = "state"
DATA_ITER = "data_iter"


def saved_config(workdir: str | os.PathLike) -> dict[str, Any] | None:
  """The config a run saved in `workdir` (plain JSON values), or None."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def checkpoint_dir(workdir: str | os.PathLike) -> str:
  return os.path.join(os.path.abspath(os.fspath(workdir)), "checkpoints")


def restore_params(
  directory: str | os.PathLike,
  *,
  step: int | None = None,
  abstract_params: Any = None,
  ema: bool = False,
) -> tuple[Any, int]:
  """The parameters of a checkpoint, without its optimizer state or data iterator.

  Args:
    directory: a workdir (with `checkpoints/`) or its `checkpoints/` directory.
    step: the checkpoint; None for the latest.
    abstract_params: `jax.ShapeDtypeStruct`s with shardings to restore into (e.g. the model's
      on a mesh); None restores host (numpy) arrays of the saved shapes.
    ema: the exponential moving average of the parameters (`optim.ema_decay`) instead.

  Raises:
    ValueError: `ema` for a run that kept no EMA.

  Returns:
    `(params, step)`: the nested dict of parameters and the step they come from.

  Raises:
    FileNotFoundError: no checkpoint there.
  """
  directory = os.path.abspath(os.fspath(directory))
  if os.path.isdir(os.path.join(directory, "checkpoints")):
    directory = os.path.join(directory, "checkpoints")
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"No checkpoint directory at {directory}.")
  options = ocp.CheckpointManagerOptions(create=False, read_only=True)
  with ocp.CheckpointManager(directory, options=options, item_names=(STATE, DATA_ITER)) as manager:
    steps = list(manager.all_steps())
  if step is None:
    step = max(steps, default=None)
  if step is None or step not in steps:
    which = "No checkpoint" if step is None else f"No checkpoint of step {step}"
    raise FileNotFoundError(f"{which} in {directory}; steps there: {steps}.")
  path = os.path.join(directory, str(step), STATE)
  checkpointer = ocp.PyTreeCheckpointer()
  metadata = checkpointer.metadata(path)
  tree = getattr(metadata, "item_metadata", metadata)
  tree = getattr(tree, "tree", tree)
  key = "ema_params" if ema else "params"
  if not tree.get(key):
    raise ValueError(
      f"The checkpoint {path} holds no EMA of the parameters: its run had no optim.ema_decay."
    )
  on_host = abstract_params is None
  if on_host:
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract_params = jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree[key]
    )
  abstract = {key: abstract_params}
  restored = checkpointer.restore(
    path,
    args=ocp.args.PyTreeRestore(
      item=abstract,
      partial_restore=True,
      restore_args=jax.tree.map(lambda a: ocp.ArrayRestoreArgs(sharding=a.sharding), abstract),
    ),
  )
  params = restored[key]
  return (jax.device_get(params) if on_host else params), step
