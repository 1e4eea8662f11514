"""Bad configs fail at start-up, before anything is compiled, with a message that names the
problem: an unknown field, an unknown loss, a missing dataset, a batch the devices cannot split.
"""

import os
import runpy

import pytest

from contrastive.train import loop
import trainer_testing as tt

ROOT = tt.ROOT


def _config(name="clip_vit_b16.py", arg="cpu"):
  return runpy.run_path(os.path.join(ROOT, "configs", name))["get_config"](arg)


def test_unknown_field_in_a_config_file(tmp_path):
  config = _config()
  config.optim.learning_rate = 0.1
  with pytest.raises(ValueError, match=r"Unknown config field 'optim.learning_rate'"):
    loop.train_and_evaluate(config, str(tmp_path))
  assert not os.path.exists(tmp_path / "checkpoints")


def test_unknown_loss_lists_the_known_ones(tmp_path):
  config = _config()
  config.loss.name = "sigmod"
  with pytest.raises(ValueError, match=r"Unknown loss 'sigmod'; known: .*sigmoid.*softmax"):
    loop.train_and_evaluate(config, str(tmp_path))


def test_missing_dataset(tmp_path):
  config = _config()
  config.data.source = "arrayrecord"
  config.data.arrayrecord.path = str(tmp_path / "no_such_dataset")
  with pytest.raises((ValueError, FileNotFoundError), match="no_such_dataset"):
    loop.train_and_evaluate(config, str(tmp_path / "run"))


def test_batch_not_divisible_by_the_devices(tmp_path):
  config = _config()
  config.data.batch_size = 12  # 8 devices
  with pytest.raises(ValueError, match=r"batch_size=12 is not divisible by the 8 devices"):
    loop.train_and_evaluate(config, str(tmp_path))
  config = _config()
  config.optim.accum_steps = 3
  with pytest.raises(ValueError, match=r"accum_steps=3.*divisible by 8 devices x 3"):
    loop.train_and_evaluate(config, str(tmp_path))


def test_loss_and_model_must_agree(tmp_path):
  config = _config()
  config.loss.name = "sigmoid"  # needs a bias; the CLIP model has none
  with pytest.raises(ValueError, match=r"needs a learnable logit bias.*convention='siglip'"):
    loop.train_and_evaluate(config, str(tmp_path))
  config = _config()
  config.loss.label_smothing = 0.1
  with pytest.raises(ValueError, match=r"Bad option for loss 'softmax'.*label_smothing"):
    loop.train_and_evaluate(config, str(tmp_path))


def test_cli_reports_an_unknown_override_and_a_bad_config(tmp_path):
  environ = tt.env(devices=8)
  code, out = tt.run(tt.train_command("configs/clip_vit_b16.py:cpu", str(tmp_path / "a"),
                                      "--config.optim.lrr=0.1"),
                     environ, str(tmp_path / "a.txt"), timeout=120)
  assert code != 0 and "lrr" in out and "Did you mean" in out, out[-2000:]
  code, out = tt.run(tt.train_command("configs/clip_vit_b16.py:cpu", str(tmp_path / "b"),
                                      "--config.data.batch_size=12"),
                     environ, str(tmp_path / "b.txt"), timeout=120)
  assert code == 1 and "error: The global batch data.batch_size=12" in out, out[-2000:]
