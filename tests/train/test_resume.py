"""Resuming a workdir: a config that changes what the checkpoints hold is refused, in one line
naming each key with both values, and the workdir is left as it was; other changes pass."""

import json
import os

import pytest

from contrastive.run import overrides
from contrastive.train import resume
from tests.train import trainer_testing as tt


def _config(**changes):
  return overrides.get_config(os.path.join(tt.ROOT, "configs", "demo.py:runlocal"), changes)


def _workdir(tmp_path, config, steps=(2, 4)):
  """A workdir as a run leaves it: config.json and (empty stand-ins for) step directories."""
  for step in steps:
    os.makedirs(tmp_path / "checkpoints" / str(step))
  os.makedirs(tmp_path / "checkpoints" / "6.orbax-checkpoint-tmp-123")  # an interrupted save
  resume.save_config(config, str(tmp_path))
  return str(tmp_path)


def test_a_changed_model_is_refused_with_both_values_and_the_workdir_untouched(tmp_path):
  workdir = _workdir(tmp_path, _config())
  before = tt.digest(workdir)
  with pytest.raises(ValueError) as info:
    resume.check_resume(
      workdir, _config(**{"model.embed_dim": 64, "optim.name": "sgd", "optim.lr": 0.1})
    )
  message = str(info.value)
  assert "\n" not in message
  assert "model.embed_dim: 128 -> 64" in message
  assert 'optim.name: "adamw" -> "sgd"' in message
  assert "optim.lr" not in message  # a learning rate does not change the state
  assert "up to step 4" in message and "another workdir" in message
  assert tt.digest(workdir) == before


@pytest.mark.parametrize(
  "key, old, new",
  [
    ("model.encoders.text.depth", 1, 2),
    ("loss.queue_size", None, 4096),
    ("data.num_workers", 1, 0),
    ("optim.grad_clip_norm", 1.0, None),
  ],
)
def test_keys_that_change_what_a_checkpoint_holds(tmp_path, key, old, new):
  workdir = _workdir(tmp_path, _config(**{key: old}))
  with pytest.raises(ValueError, match=rf"{key}: {json.dumps(old)} -> {json.dumps(new)}"):
    resume.check_resume(workdir, _config(**{key: new}))


def test_other_changes_resume_and_are_logged(tmp_path, caplog):
  workdir = _workdir(tmp_path, _config())
  changed = {
    "total_steps": 40,
    "optim.lr": 1e-2,
    "optim.grad_clip_norm": 0.5,
    "optim.b2": 0.95,
    "data.batch_size": 64,
    "log.every_steps": 5,
    "seed": 3,
    "eval.tasks": {},
    "mesh.data": 4,
    "mesh.fsdp": 2,
    "loss.block_size": 8,
    "checkpoint.every_steps": 10,
    "loss.label_smoothing": 0.1,
    "loss.name": "dcl",
  }  # another loss without a queue: the same state
  with caplog.at_level("WARNING"):
    resume.check_resume(workdir, _config(**changed))
  assert "total_steps: 4 -> 40" in caplog.text and "data.batch_size: 32 -> 64" in caplog.text


def test_sgd_momentum_on_or_off_changes_the_state(tmp_path):
  workdir = _workdir(tmp_path, _config(**{"optim.name": "sgd", "optim.b1": 0.9}))
  resume.check_resume(workdir, _config(**{"optim.name": "sgd", "optim.b1": 0.8}))
  with pytest.raises(ValueError, match=r"optim.b1: 0.9 -> 0.0"):
    resume.check_resume(workdir, _config(**{"optim.name": "sgd", "optim.b1": 0.0}))
  workdir = _workdir(tmp_path / "adam", _config())
  resume.check_resume(workdir, _config(**{"optim.b1": 0.0}))  # Adam keeps its moments anyway


def test_nothing_to_compare(tmp_path):
  resume.check_resume(str(tmp_path / "new"), _config())  # a new workdir
  workdir = _workdir(tmp_path, _config(), steps=())
  resume.check_resume(workdir, _config(**{"model.embed_dim": 64}))  # no checkpoint yet
  os.makedirs(tmp_path / "old" / "checkpoints" / "4")
  resume.check_resume(str(tmp_path / "old"), _config())  # no config.json: not checked


def test_config_changes_lists_every_key_that_differs():
  old = json.loads(_config().to_json_best_effort())
  changes = resume.config_changes(old, _config(**{"loss.label_smoothing": 0.1, "seed": 2}))
  assert changes == [("loss.label_smoothing", "(absent)", 0.1), ("seed", 0, 2)]
  assert resume.config_changes(old, _config()) == []
