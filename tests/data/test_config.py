"""The data config: defaults, merging, and errors that name the bad key or value."""

import ml_collections
import pytest

from contrastive.data import config as config_lib
from contrastive.data import pipeline


def _config(**kwargs):
  cfg = config_lib.default_config()
  cfg.update(dict(image_size=16, batch_size=8, max_len=16))
  cfg.update(kwargs)
  return cfg


def test_defaults_and_merging():
  cfg = config_lib.resolve_config(
    {"batch_size": 32, "synthetic": {"train_size": 10}, "crop_scale": [0.5, 1.0]}
  )
  assert cfg.batch_size == 32 and cfg.synthetic.train_size == 10
  assert cfg.synthetic.test_size == config_lib.default_config().synthetic.test_size
  assert cfg.crop_scale == (0.5, 1.0) and cfg.label_key is None and cfg.source == "synthetic"
  # A whole config with a data block is accepted.
  whole = ml_collections.ConfigDict({"data": _config().to_dict()})
  assert config_lib.resolve_config(whole).batch_size == 8


def test_config_errors_name_the_problem(tmp_path, arrayrecord_dir):
  with pytest.raises(ValueError, match="'batchsize'.*known"):
    pipeline.make_pipeline({"batchsize": 8}, split="train")
  with pytest.raises(ValueError, match="\\['sed'\\] in data.synthetic"):
    pipeline.make_pipeline({"synthetic": {"sed": 1}}, split="train")
  with pytest.raises(ValueError, match="data.batch_size=6.*process count 4"):
    pipeline.make_pipeline(_config(batch_size=6), split="train", process_index=0, process_count=4)
  with pytest.raises(ValueError, match="flip"):
    pipeline.make_pipeline(_config(flip=True), split="train")
  with pytest.raises(ValueError, match="'validation' of the synthetic dataset"):
    pipeline.make_pipeline(_config(), split="validation")
  with pytest.raises(FileNotFoundError, match="nothing_here"):
    cfg = _config(source="arrayrecord")
    cfg.arrayrecord.path = str(tmp_path / "nothing_here")
    pipeline.make_pipeline(cfg, split="train")
  with pytest.raises(ValueError, match="only 'synthetic'"):
    cfg = _config(source="arrayrecord", hard_negatives=True)
    cfg.arrayrecord.path = arrayrecord_dir
    pipeline.make_pipeline(cfg, split="train")
  with pytest.raises(FileNotFoundError, match="missing.json"):
    pipeline.make_pipeline(_config(tokenizer=str(tmp_path / "missing.json")), split="train")
