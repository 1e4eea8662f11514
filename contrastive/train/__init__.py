"""Training: one configured trainer for every recipe.

    python -m contrastive.train --config configs/demo.py --workdir runs/demo

or from Python:

    from contrastive import train
    train.train_and_evaluate(config, workdir)

Modules: `config` (the run config's trainer keys, checks, `parse_arg`), `optimizer` (optax with
schedules, clipping, decay masks, locking), `state` (the sharded train state), `step` (the jitted
step, GradCache accumulation), `momentum` (the key encoder and queues of `moco`), `checkpoint`
(orbax with the data iterator), `metrics` (TensorBoard, progress line), `evaluation` (the bridge
to `contrastive.evaluate`), `hosts` (multi-host start-up), `allocator` (glibc malloc for XLA on
the CPU), `loop` (`train_and_evaluate`).
"""

from contrastive.train.checkpoint import Checkpointer
from contrastive.train.checkpoint import restore_params
from contrastive.train.config import defaults
from contrastive.train.config import parse_arg
from contrastive.train.config import resolve
from contrastive.train.loop import NonFiniteLossError
from contrastive.train.loop import train_and_evaluate
from contrastive.train.optimizer import learning_rate_schedule
from contrastive.train.optimizer import make_optimizer
from contrastive.train.state import create_train_state
from contrastive.train.state import TrainState
from contrastive.train.step import make_grad_fn
from contrastive.train.step import make_train_step
from contrastive.train.step import StepConfig

__all__ = [
    "Checkpointer", "NonFiniteLossError", "StepConfig", "TrainState", "create_train_state",
    "defaults", "learning_rate_schedule", "make_grad_fn", "make_optimizer", "make_train_step",
    "parse_arg", "resolve", "restore_params", "train_and_evaluate",
]
