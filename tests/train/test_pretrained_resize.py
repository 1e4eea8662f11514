"""`checkpoint.init_from` and `configs/finetune.py` at another image size or text length than an
imported checkpoint's: the position tables arrive resized the family's way, the rest unchanged."""

import jax
import ml_collections
import numpy as np
import optax
import pytest

from contrastive import models
from contrastive import parallel
from contrastive.models.pretrained import resize
from contrastive.run import overrides
from contrastive.train import loop
from contrastive.train import pretrained
from contrastive.train import state as state_lib
from tests import pretrained_testing as pt


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("ckpt") / "tiny_open_clip")
  cfg, params = pt.save_tiny(path, family="open_clip", seed=5)
  return path, cfg, params


def _bigger(cfg, factor=2, extra_len=4):
  other = ml_collections.ConfigDict(cfg.to_dict())
  size = int(cfg.encoders.image.image_size)
  other.encoders.image.image_size = size * factor
  other.encoders.text.max_len = int(cfg.encoders.text.max_len) + extra_len
  return other


def test_init_from_resizes_the_position_tables(clip_dir):
  path, cfg, params = clip_dir
  run = _bigger(cfg)
  model = models.make_model(run)
  state, shardings = state_lib.create_train_state(
    model, lambda _: optax.adam(1e-3), parallel.make_mesh(), seed=0
  )[:2]
  config = ml_collections.ConfigDict(
    {"model": run, "checkpoint": {"init_from": path, "init_from_step": None, "init_from_keys": ()}}
  )
  init = jax.device_get(loop._init_from(state, shardings, config).params)
  vit = models.make_encoder(cfg.encoders.image)
  p = vit.dims["patch_size"]
  old = resize.patch_grid(vit.image_hw, p)
  new = resize.patch_grid(run.encoders.image.image_size, p)
  want = resize.resize_image_posemb(
    params["image"]["encoder"]["pos_embedding"], old, new, extra_tokens=1
  )
  np.testing.assert_allclose(init["image"]["encoder"]["pos_embedding"], want, rtol=1e-6)
  want = resize.resize_text_posemb(
    params["text"]["encoder"]["pos_embedding"], int(run.encoders.text.max_len), method="linear"
  )
  np.testing.assert_allclose(init["text"]["encoder"]["pos_embedding"], want, rtol=1e-6)
  np.testing.assert_array_equal(init["image"]["head"]["kernel"], params["image"]["head"]["kernel"])


def test_init_from_refuses_a_size_the_patch_does_not_divide(clip_dir):
  path, cfg, _ = clip_dir
  pre = models.load_pretrained(path)
  run = ml_collections.ConfigDict(cfg.to_dict())
  p = models.make_encoder(cfg.encoders.image).dims["patch_size"]
  run.encoders.image.image_size = int(cfg.encoders.image.image_size) + 1
  run.encoders.image.drop_remainder = False
  with pytest.raises(ValueError, match=rf"init_from=.*not divisible by the patch size {p}"):
    pretrained.resize_to_run(pre, run)


def test_finetune_config_at_another_image_size(clip_dir):
  path, cfg, _ = clip_dir
  size = 2 * int(cfg.encoders.image.image_size)
  c = overrides.get_config(f"configs/finetune.py:cpu,pretrained={path},image_size={size}")
  assert c.model.encoders.image.image_size == size
  assert c.data.image_size == size
  assert c.checkpoint.init_from == path


def test_a_run_directory_resizes_to_the_run_too(tmp_path):
  """`checkpoint.init_from` a run of ours at 32 px into a 48 px run: the patch grid's table is
  resized open_clip's way (4x4 -> 6x6 tokens), the other parameters are the run's."""
  from contrastive import train

  source = str(tmp_path / "source")
  config = train.get_config(
    "configs/demo.py:image_tower=vit,runlocal",
    {"total_steps": 1, "eval.tasks": {}, "checkpoint.async_save": False},
  )
  train.train_and_evaluate(config, source)
  bigger = ml_collections.ConfigDict(config.model.to_dict())
  bigger.encoders.image.image_size = 48
  params, step = pretrained.restore_run_params(source, bigger)
  saved, _ = loop.workdir_lib.restore_params(source)
  old = saved["image"]["encoder"]["pos_embedding"]
  new = params["image"]["encoder"]["pos_embedding"]
  expected = resize.resize_image_posemb(np.asarray(old)[0], (4, 4), (6, 6))[None]
  assert step == 1 and new.shape == (1, 36, old.shape[-1])
  np.testing.assert_allclose(new, expected, rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(params["text"]["head"]["kernel"], saved["text"]["head"]["kernel"])
