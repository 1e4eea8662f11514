"""Training: one configured trainer for every recipe.

    python -m contrastive.train --config configs/demo.py --workdir runs/demo

or from Python (a notebook: a progress bar, the metrics back as a dict):

    from contrastive import train
    config = train.get_config("configs/demo.py:steps=300", {"loss.name": "dcl"})
    metrics = train.train_and_evaluate(config, "runs/dcl")   # {"train/loss": ..., "eval/...": ...}

Modules: `config` (the run config's trainer keys, checks, `parse_arg`, `check_run`),
`overrides` (config files and `key=value` overrides: `get_config`, the CLIs' flag parser),
`resume` (the workdir's config.json, and what a resumed run may change), `optimizer` (optax with
schedules, clipping, decay masks, locking), `state` (the sharded train state), `step` (the jitted
step, GradCache accumulation), `momentum` (the key encoder and queues of `moco`), `checkpoint`
(orbax with the data iterator), `metrics` (TensorBoard, the progress bar or line), `evaluation` (a
workdir's checkpoint evaluated, for `python -m contrastive.evaluate`), `allocator` (glibc malloc
for XLA on the CPU), `loop` (`train_and_evaluate`). Meshes and multi-host start-up are in
`contrastive.parallel`.
"""

from contrastive.train.checkpoint import Checkpointer
from contrastive.train.checkpoint import restore_params
from contrastive.train.config import check_run
from contrastive.train.config import defaults
from contrastive.train.config import parse_arg
from contrastive.train.config import resolve
from contrastive.train.loop import NonFiniteLossError
from contrastive.train.loop import train_and_evaluate
from contrastive.train.metrics import Progress
from contrastive.train.optimizer import learning_rate_schedule
from contrastive.train.optimizer import make_optimizer
from contrastive.train.overrides import get_config
from contrastive.train.overrides import override
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
