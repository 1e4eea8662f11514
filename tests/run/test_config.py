"""The run config's schema: a config file's argument, and the trainer defaults filled in."""

import ml_collections
import pytest

from contrastive.run import config as run_config


def test_parse_arg_types_and_unknown_keys():
  arg = run_config.parse_arg("steps=20,cpu,lr=0.5,name=x", steps=10, cpu=False, lr=1.0, name="")
  assert (arg.steps, arg.cpu, arg.lr, arg.name) == (20, True, 0.5, "x")
  assert run_config.parse_arg(None, steps=3).steps == 3
  with pytest.raises(ValueError, match="stepz.*Did you mean 'steps'"):
    run_config.parse_arg("stepz=2", steps=10)
  with pytest.raises(ValueError, match="bool"):
    run_config.parse_arg("cpu=maybe", cpu=False)


def test_resolve_names_unknown_fields_and_fills_defaults():
  base = ml_collections.ConfigDict(dict(total_steps=5, data={}, model={}))
  resolved = run_config.resolve(base)
  assert resolved.optim.name == "adamw" and resolved.checkpoint.keep == 3
  bad = ml_collections.ConfigDict(
    dict(total_steps=5, data={}, model={}, optim=dict(learning_rate=0.1))
  )
  with pytest.raises(ValueError, match="optim.learning_rate"):
    run_config.resolve(bad)
  bad = ml_collections.ConfigDict(dict(total_steps=5, data={}, model={}, chekpoint={}))
  with pytest.raises(ValueError, match="'chekpoint'.*Did you mean 'checkpoint'"):
    run_config.resolve(bad)
  with pytest.raises(ValueError, match="on_nonfinite"):
    run_config.resolve(
      ml_collections.ConfigDict(
        dict(total_steps=5, data={}, model={}, optim=dict(on_nonfinite="ignore"))
      )
    )
  with pytest.raises(ValueError, match="total_steps"):
    run_config.resolve(ml_collections.ConfigDict(dict(data={}, model={})))
