"""Bad configs fail at start-up, before anything is compiled, with a message that names the
problem: an unknown field, an unknown loss, a missing dataset, a batch the devices cannot split.
"""

import os
import runpy

import pytest

from contrastive.train import loop
from tests.train import trainer_testing as tt

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
  code, out = tt.run(
    tt.train_command("configs/clip_vit_b16.py:cpu", str(tmp_path / "a"), "--config.optim.lrr=0.1"),
    environ,
    str(tmp_path / "a.txt"),
    timeout=120,
  )
  assert code != 0 and "lrr" in out and "Did you mean" in out, out[-2000:]
  code, out = tt.run(
    tt.train_command(
      "configs/clip_vit_b16.py:cpu", str(tmp_path / "b"), "--config.data.batch_size=12"
    ),
    environ,
    str(tmp_path / "b.txt"),
    timeout=120,
  )
  assert code == 1 and "error: The global batch data.batch_size=12" in out, out[-2000:]


def test_side_inputs_are_checked(tmp_path):
  """A side input is `{batch_key}` (the batch array as it is) or `{modality, batch_key}`, for a
  side key the loss reads; a batch key the batch lacks fails on the first batch, before the
  step compiles."""
  zoo = lambda: _config("loss_zoo.py", "loss=supcon,runlocal")
  config = zoo()
  config.loss.side_inputs.labels = dict(batch="meaning_id")
  with pytest.raises(ValueError, match=r"loss.side_inputs.labels takes 'batch_key'"):
    loop.train_and_evaluate(config, str(tmp_path))
  config = zoo()
  config.loss.side_inputs = dict(label=dict(batch_key="meaning_id"))
  with pytest.raises(
    ValueError,
    match=r"names 'label', which loss 'supcon' does not read; it "
    r"reads \['labels'\]",
  ):
    loop.train_and_evaluate(config, str(tmp_path))
  config = zoo()
  config.loss.side_inputs.labels.modality = "audio"
  with pytest.raises(ValueError, match=r"modality is 'audio'; the model's modalities"):
    loop.train_and_evaluate(config, str(tmp_path))
  config = zoo()
  config.loss.side_inputs.labels.batch_key = "meaning"
  with pytest.raises(ValueError, match=r"The batch has no \['meaning'\].*loss.side_inputs"):
    loop.train_and_evaluate(config, str(tmp_path / "run"))


def _set(config, path, value):
  *groups, key = path.split(".")
  for group in groups:
    config = config[group]
  config[key] = value


@pytest.mark.parametrize(
  "loss, path, value, message",
  [
    ("moco", "loss.queue_size", None, r"Loss 'moco' needs loss.queue_size"),
    ("moco", "loss.queue_size", 100, r"queue_size=100 must be divisible by the 8 devices"),
    ("moco", "loss.momentum", 1.5, r"loss.momentum must be a number in \[0, 1\]"),
    ("moco", "optim.accum_steps", 2, r"does not combine with GradCache"),
    (
      "moco",
      "loss.side_inputs",
      dict(queue=dict(batch_key="meaning_id")),
      r"gets its queue from the trainer",
    ),
    ("softmax", "loss.queue_size", 4096, r"loss 'softmax' keeps no momentum encoder"),
  ],
)
def test_momentum_queue_options_are_checked(tmp_path, loss, path, value, message):
  config = _config("loss_zoo.py", f"loss={loss},runlocal")
  _set(config, path, value)
  with pytest.raises(ValueError, match=message):
    loop.train_and_evaluate(config, str(tmp_path))
  assert not os.path.exists(tmp_path / "checkpoints")


@pytest.mark.parametrize(
  "change, message",
  [
    (lambda c: setattr(c.loss, "name", "sigmod"), r"^Unknown loss 'sigmod'; known: "),
    (
      lambda c: setattr(c.optim, "lrr", 1.0),
      r"^Unknown config field 'optim.lrr'. Did you mean 'optim.lr'\?",
    ),
    (lambda c: setattr(c.data, "batch_size", 12), r"^The global batch data.batch_size=12 "),
  ],
)
def test_python_errors_are_one_line_before_anything_is_built(
  tmp_path, monkeypatch, change, message
):
  """What a notebook sees: the CLI's one-line errors, raised before the data pipeline, the
  state or the step exist (so nothing compiles and nothing is written)."""

  def built(*args, **kwargs):
    raise AssertionError("the data pipeline was built before the config was checked")

  monkeypatch.setattr(loop.data, "make_pipeline", built)
  config = _config()
  change(config)
  with pytest.raises(ValueError, match=message) as info:
    loop.train_and_evaluate(config, str(tmp_path / "run"))
  assert "\n" not in str(info.value)
  assert not os.path.exists(tmp_path / "run")
