"""`checkpoint.init_from` with an imported checkpoint: the parameters arrive unchanged, a model
config that builds other towers is refused by name, and a short LiT run from a saved open_clip
checkpoint keeps the imported image tower bit for bit."""

import os

import jax
import ml_collections
import numpy as np
import optax
import pytest

from contrastive import models
from contrastive import parallel
from contrastive.train import loop
from contrastive.train import pretrained
from contrastive.train import state as state_lib
from tests import pretrained_testing as pt
from tests.train import trainer_testing as tt

_loop_init_from = loop._init_from


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("ckpt") / "tiny_open_clip")
  cfg, params = pt.save_tiny(path, family="open_clip", seed=3)
  return path, cfg, params


def _state(cfg, mesh):
  return state_lib.create_train_state(
    models.make_model(cfg), lambda _: optax.adam(1e-3), mesh, seed=0
  )[:2]


def _config(path, model_config, keys=(), step=None):
  return ml_collections.ConfigDict(
    {
      "model": model_config,
      "checkpoint": {"init_from": path, "init_from_step": step, "init_from_keys": keys},
    }
  )


def test_is_run_directory(tmp_path, clip_dir):
  assert not pretrained.is_run_directory(clip_dir[0])
  assert not pretrained.is_run_directory(os.path.join(clip_dir[0], "open_clip_model.safetensors"))
  os.makedirs(tmp_path / "run" / "checkpoints")
  os.makedirs(tmp_path / "ckpts" / "400")
  assert pretrained.is_run_directory(tmp_path / "run")
  assert pretrained.is_run_directory(tmp_path / "ckpts")


def test_normalization_names():
  assert (
    pretrained.normalization(
      (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    )
    == "clip"
  )
  assert pretrained.normalization((0.5,) * 3, (0.5,) * 3) == "inception"
  with pytest.raises(ValueError, match=r"mean \(0.485, 0.456, 0.406\) and std"):
    pretrained.normalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_config_differences_name_the_fields(clip_dir):
  _, cfg, _ = clip_dir
  assert pretrained.config_differences(cfg, cfg, ("image", "text", "log_scale")) == []
  other = ml_collections.ConfigDict(cfg.to_dict())
  other.encoders.image.update(
    variant=None,
    width=32,
    depth=1,
    mlp_dim=128,
    num_heads=2,
    patch_size=8,
    dtype="bfloat16",
    remat="full",
  )
  assert pretrained.config_differences(other, cfg, ("image",)) == []  # same towers, spelt out
  other.encoders.image.update(pool="gap", cls_posemb=False)
  other.encoders.text.depth = 2
  assert pretrained.config_differences(other, cfg, ("image",)) == [
    "image.cls_posemb: False vs True",
    "image.pool: 'gap' vs 'cls'",
  ]
  assert pretrained.config_differences(other, cfg, ("text",)) == ["text.depth: 2 vs 1"]


def test_init_from_a_pretrained_path_takes_its_parameters(clip_dir):
  path, cfg, params = clip_dir
  mesh = parallel.make_mesh()
  state, shardings = _state(cfg, mesh)
  assert not np.array_equal(
    state.params["image"]["head"]["kernel"], params["image"]["head"]["kernel"]
  )
  init = _loop_init_from(state, shardings, _config(path, cfg))
  tt.assert_trees_equal(jax.device_get(init.params), params)
  assert (
    init.params["image"]["head"]["kernel"].sharding == (shardings.params["image"]["head"]["kernel"])
  )
  # Only the image tower, as LiT takes it: the text tower keeps its initialization.
  lit = _loop_init_from(state, shardings, _config(path, cfg, ("image",)))
  tt.assert_trees_equal(jax.device_get(lit.params["image"]), params["image"])
  tt.assert_trees_equal(jax.device_get(lit.params["text"]), jax.device_get(state.params["text"]))


def test_init_from_refuses_other_towers_and_steps(clip_dir, tmp_path):
  path, cfg, _ = clip_dir
  mesh = parallel.make_mesh()
  other = ml_collections.ConfigDict(cfg.to_dict())
  other.encoders.image.act = "gelu"
  state, shardings = _state(other, mesh)
  with pytest.raises(
    ValueError,
    match=r"config.model does not match the checkpoint .*"
    r"tiny_open_clip \(run vs checkpoint\): image.act: "
    r"'gelu' vs 'quick_gelu'\.$",
  ):
    _loop_init_from(state, shardings, _config(path, other))
  with pytest.raises(ValueError, match="init_from_step=4 is for run directories"):
    _loop_init_from(state, shardings, _config(path, cfg, step=4))
  os.makedirs(tmp_path / "empty")
  with pytest.raises(ValueError, match=r"is neither a run directory .* nor a checkpoint"):
    _loop_init_from(state, shardings, _config(str(tmp_path / "empty"), cfg))


def test_lit_from_a_pretrained_checkpoint_keeps_its_image_tower(clip_dir, tmp_path):
  path, _, params = clip_dir
  workdir = str(tmp_path / "lit")
  code, out = tt.run(
    tt.train_command(
      f"configs/lit.py:cpu,pretrained={path}",
      workdir,
      "--config.total_steps=2",
      "--config.eval.tasks={}",
    ),
    tt.env(devices=8),
    str(tmp_path / "lit.txt"),
  )
  assert code == 0, out[-3000:]
  state = tt.load_state(workdir, 2)
  tt.assert_trees_equal(state["params"]["image"], params["image"])
  assert not np.array_equal(
    state["params"]["text"]["head"]["kernel"], params["text"]["head"]["kernel"]
  )  # trained, from scratch
