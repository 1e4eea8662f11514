"""Config files and overrides: `get_config` from Python, and the CLIs' one-line errors for a
config file or a `--config.KEY=VALUE` that fails (run in subprocesses, as a person would)."""

import os
import subprocess
import sys

import ml_collections
import pytest

from contrastive.run import overrides
from tests.train import trainer_testing as tt

DEMO = os.path.join(tt.ROOT, "configs", "demo.py")


def test_get_config_loads_a_file_with_its_argument_and_overrides():
  config = overrides.get_config(
    DEMO + ":steps=7,batch_size=64", {"optim.lr": 1e-2, "loss.label_smoothing": 0.1}
  )
  assert config.total_steps == 7 and config.data.batch_size == 64
  assert config.optim.lr == 1e-2 and config.loss.label_smoothing == 0.1  # a new loss option
  assert not config.is_locked  # a notebook may go on editing it
  again = overrides.get_config(config, {"optim.lr": 3e-3})  # a ConfigDict is copied
  assert again.optim.lr == 3e-3 and config.optim.lr == 1e-2


def test_a_relative_path_is_also_looked_up_in_the_repository(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # e.g. a notebook in docs/notebooks
  assert overrides.get_config("configs/demo.py:runlocal").total_steps == 4
  with pytest.raises(FileNotFoundError, match="configs/nope.py"):
    overrides.get_config("configs/nope.py")


def test_an_unknown_key_is_one_line_naming_the_closest_one():
  with pytest.raises(ValueError) as info:
    overrides.get_config(DEMO, {"optim.lrr": 1.0})
  message = str(info.value)
  assert message.startswith("Unknown config field 'optim.lrr'. Did you mean 'optim.lr'?")
  assert "\n" not in message
  with pytest.raises(ValueError, match=r"Unknown config field 'optm'. Did you mean 'optim'"):
    overrides.get_config(DEMO, {"optm.lr": 1.0})
  with pytest.raises(ValueError, match=r"'optim.name'.*cannot be casted"):
    overrides.get_config(DEMO, {"optim.name": 3})


def test_field_error():
  config = ml_collections.ConfigDict({"a": {"b": 1}, "loss": {"name": "x"}})
  assert overrides.field_error(config, "a.b") is None
  assert overrides.field_error(config, "loss.gamma") is None  # the loss's own options
  assert "Did you mean 'a.b'" in overrides.field_error(config, "a.bb")
  assert "not a group" in overrides.field_error(config, "a.b.c")


def _cli(module, *args):
  env = tt.env(devices=1)
  return subprocess.run(
    [sys.executable, "-m", module, *args],
    cwd=tt.ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )


@pytest.mark.parametrize("module", ["contrastive.train", "contrastive.evaluate"])
def test_cli_typo_is_one_line(module, tmp_path):
  out = _cli(module, "--config", "configs/demo.py", f"--workdir={tmp_path}", "--config.optim.lrr=1")
  assert out.returncode == 1, out.stderr[-2000:]
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and len(lines[0]) < 400, out.stderr[-3000:]
  assert lines[0].startswith("error: Unknown config field 'optim.lrr'. Did you mean 'optim.lr'?")
  assert "Traceback" not in out.stderr + out.stdout
  assert not os.listdir(tmp_path)  # nothing was started


def test_cli_typo_in_the_default_config_is_one_line(tmp_path):
  out = _cli("contrastive.train", f"--workdir={tmp_path}", "--config.optim.lrr=1")  # demo.py
  assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1, out.stderr[-3000:]
  assert out.stderr.startswith("error: Unknown config field 'optim.lrr'. Did you mean 'optim.lr'")


def test_cli_bad_config_argument_and_missing_file_are_one_line(tmp_path):
  out = _cli("contrastive.train", "--config=configs/demo.py:stepz=3", f"--workdir={tmp_path}")
  assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1, out.stderr[-3000:]
  assert "configs/demo.py:stepz=3" in out.stderr and "Did you mean 'steps'" in out.stderr
  out = _cli("contrastive.train", "--config=configs/nope.py", f"--workdir={tmp_path}")
  assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1, out.stderr[-3000:]
  assert "configs/nope.py" in out.stderr and "No such file" in out.stderr
