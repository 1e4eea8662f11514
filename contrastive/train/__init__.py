"""Training: one configured trainer for every recipe.

    python -m contrastive.train --config configs/demo.py --workdir runs/demo

or from Python (a notebook: a progress bar, the metrics back as a dict):

    from contrastive import train
    config = train.get_config("configs/demo.py:steps=300", {"loss.name": "dcl"})
    metrics = train.train_and_evaluate(config, "runs/dcl")   # {"train/loss": ..., "eval/...": ...}

Modules: `config` (`check_run`: the run config against its model, loss and mesh), `resume` (what
a resumed run may change), `optimizer` (optax with schedules, clipping, decay masks, locking),
`state` (the sharded train state), `step` (the jitted step, GradCache accumulation), `momentum`
(the key encoder and queues of `moco`), `checkpoint` (orbax with the data iterator), `metrics`
(TensorBoard, the progress bar or line), `pretrained` (parameters from a downloaded checkpoint),
`runs` (`load_run`: a run back in Python), `compile` (`compile_for`: the step compiled for a
topology), `allocator` (glibc malloc for XLA on the CPU), `loop` (`train_and_evaluate`). The run
config's keys and defaults, config files and overrides, and a workdir's layout are
`contrastive.run` (re-exported here: `defaults`, `resolve`, `parse_arg`, `get_config`,
`override`, `restore_params`); meshes are `contrastive.parallel`, multi-host start-up
`contrastive.multihost`; evaluating a workdir is `contrastive.evaluate.workdir`.
"""

from contrastive.run.config import defaults
from contrastive.run.config import parse_arg
from contrastive.run.config import resolve
from contrastive.run.overrides import get_config
from contrastive.run.overrides import override
from contrastive.run.workdir import restore_params
from contrastive.train.checkpoint import Checkpointer
from contrastive.train.compile import compile_for
from contrastive.train.config import check_run
from contrastive.train.loop import NonFiniteLossError
from contrastive.train.loop import train_and_evaluate
from contrastive.train.metrics import Progress
from contrastive.train.optimizer import learning_rate_schedule
from contrastive.train.optimizer import make_optimizer
from contrastive.train.resume import check_resume
from contrastive.train.runs import load_run
from contrastive.train.state import TrainState
from contrastive.train.state import create_train_state
from contrastive.train.step import StepConfig
from contrastive.train.step import make_grad_fn
from contrastive.train.step import make_train_step

__all__ = [
  "Checkpointer",
  "NonFiniteLossError",
  "Progress",
  "StepConfig",
  "TrainState",
  "check_resume",
  "check_run",
  "compile_for",
  "create_train_state",
  "defaults",
  "get_config",
  "learning_rate_schedule",
  "load_run",
  "make_grad_fn",
  "make_optimizer",
  "make_train_step",
  "override",
  "parse_arg",
  "resolve",
  "restore_params",
  "train_and_evaluate",
]
