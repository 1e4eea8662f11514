"""`train.load_run`: a run's checkpoint back as an Embedder that agrees with the trainer."""

import os

import numpy as np
import pytest

from contrastive import data
from contrastive import train
from tests.train import trainer_testing as tt

DEMO = os.path.join(tt.ROOT, "configs", "demo.py:runlocal")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("run"))
  config = train.get_config(DEMO, {"total_steps": 2, "eval.tasks": {}})
  train.train_and_evaluate(config, workdir)
  return workdir, config


def test_load_run_embeds_with_the_trained_parameters(run):
  workdir, config = run
  from_json = train.load_run(workdir)  # the config the run saved
  given = train.load_run(workdir, config=config)
  params, step = train.restore_params(workdir)
  assert step == 2
  np.testing.assert_array_equal(given.params["log_scale"], params["log_scale"])
  assert given.scale == pytest.approx(float(np.exp(params["log_scale"])), rel=1e-6)
  records = [data.make_source(config.data, split="train")[i] for i in range(4)]
  images, captions = [r["image"] for r in records], [r["caption"] for r in records]
  for modality, values in (("image", images), ("text", captions)):
    a, b = from_json.embed(modality, values), given.embed(modality, values)
    assert a.shape == (4, config.model.embed_dim)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(a, b)


def test_load_run_names_what_is_missing(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.json"):
    train.load_run(tmp_path)
