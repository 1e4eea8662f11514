"""Every loss family of configs/loss_zoo.py trains through the trainer: the runlocal config runs
a few steps on the built-in data over 8 devices, with a finite, non-zero loss."""

import importlib.util
import math
import pathlib

import pytest

from contrastive import losses
from contrastive.train import loop

CONFIG = pathlib.Path(__file__).parents[1] / "configs" / "loss_zoo.py"


def _loss_zoo():
  spec = importlib.util.spec_from_file_location("loss_zoo", CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


ZOO = _loss_zoo()


def test_every_family_names_a_registered_loss():
  for name in ZOO.FAMILIES:
    assert losses.get(name).name == name


# One representative per family besides softmax/sigmoid, which the trainer tests run: the
# decoupled, geometric, focal, temperature, AUC, kernel, hard-negative and n-modal families.
@pytest.mark.parametrize("name", ["dclw", "contrastive_gap", "sigmoid_focal", "macl", "auc_mw",
                                  "kernel_infonce", "hard_negative", "gram", "symile"])
def test_family_trains_a_few_steps(name, tmp_path):
  config = ZOO.get_config(f"loss={name},runlocal")
  config.total_steps = 3
  config.eval.tasks = {}
  config.checkpoint.every_steps = 100
  config.log.every_steps = 1
  result = loop.train_and_evaluate(config, tmp_path)
  assert math.isfinite(result["train/loss"]), result
  assert result["train/loss"] != 0.0


def test_unknown_family_lists_the_known_ones():
  with pytest.raises(ValueError, match="known: .*dcl"):
    ZOO.get_config("loss=dlc")
