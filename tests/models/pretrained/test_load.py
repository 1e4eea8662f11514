"""Tests for contrastive/models/pretrained/__init__.py and weights.py: dispatch and bad input.

Every refusal is one line that names the file and the mismatch, never a shape error from flax.
"""

import json
import os
import shutil

import numpy as np
import pytest

from contrastive import models
from contrastive.models import pretrained
from contrastive.models.pretrained import open_clip as oc
from contrastive.models.pretrained import weights as weights_lib
from tests import pretrained_testing as pt
from tests.models.pretrained import _fixtures_open_clip as fx

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
CLIP = os.path.join(FIXTURES, "open_clip_clip")
SIGLIP = os.path.join(FIXTURES, "open_clip_siglip")


@pytest.fixture(autouse=True)
def tiny_trunk(monkeypatch):
  monkeypatch.setitem(oc.TIMM_TRUNKS, fx.TINY_TRUNK, fx.TINY_TRUNK_DIMS)


def _refused(path, *needles, **kwargs) -> str:
  message = pt.one_line_error(None, models.load_pretrained, path, **kwargs)
  for needle in needles:
    assert needle in message, message
  return message


def _copy(src, tmp_path, name="ckpt"):
  shutil.copytree(src, tmp_path / name)
  return tmp_path / name


def _edit_config(directory, edit):
  path = directory / oc.CONFIG
  config = json.loads(path.read_text())
  edit(config["model_cfg"])
  path.write_text(json.dumps(config))


def test_detects_open_clip_layouts(tmp_path):
  assert pretrained.detect_family(CLIP) == "open_clip"
  assert pretrained.detect_family(os.path.join(CLIP, oc.WEIGHTS[0])) == "open_clip"
  bare = tmp_path / "weights.safetensors"
  shutil.copy(os.path.join(CLIP, oc.WEIGHTS[0]), bare)
  assert pretrained.detect_family(bare, name="ViT-B-32") == "open_clip"


def test_refuses_what_no_family_reads(tmp_path):
  (tmp_path / "notes.txt").write_text("hello")
  message = _refused(
    tmp_path, "Not a checkpoint", "notes.txt", "open_clip_config.json", "config.json", ".npz"
  )
  assert message.startswith("Not a checkpoint this library reads: directory")
  _refused(tmp_path / "notes.txt", "notes.txt", "Expected")
  _refused(tmp_path / "missing", "missing", "no such file")


def test_truncated_safetensors(tmp_path):
  directory = _copy(CLIP, tmp_path)
  weights = directory / oc.WEIGHTS[0]
  data = weights.read_bytes()
  weights.write_bytes(data[: len(data) // 2])
  _refused(directory, str(weights), "truncated")


def test_state_dict_of_another_architecture(tmp_path):
  directory = _copy(SIGLIP, tmp_path)
  shutil.copy(os.path.join(CLIP, oc.WEIGHTS[0]), directory / oc.WEIGHTS[0])
  _refused(
    directory, oc.WEIGHTS[0], "visual.trunk.patch_embed.proj.weight", "an open_clip ViT image tower"
  )


def test_config_wider_than_the_weights(tmp_path):
  directory = _copy(CLIP, tmp_path)
  _edit_config(directory, lambda cfg: cfg["text_cfg"].update(width=32, heads=4))
  _refused(
    directory,
    oc.WEIGHTS[0],
    "token_embedding.weight has shape (64, 16)",
    "implies (64, 32)",
    "does not match",
  )


def test_config_deeper_than_the_weights(tmp_path):
  directory = _copy(CLIP, tmp_path)
  _edit_config(directory, lambda cfg: cfg["vision_cfg"].update(layers=3))
  _refused(directory, oc.WEIGHTS[0], "visual.transformer.resblocks.2.ln_1.weight", "missing")


def test_config_shallower_than_the_weights(tmp_path):
  directory = _copy(CLIP, tmp_path)
  _edit_config(directory, lambda cfg: cfg["text_cfg"].update(layers=1))
  _refused(directory, oc.WEIGHTS[0], "transformer.resblocks.1.", "does not use")


def test_missing_config(tmp_path):
  (tmp_path / "ckpt").mkdir()
  shutil.copy(os.path.join(CLIP, oc.WEIGHTS[0]), tmp_path / "ckpt" / oc.WEIGHTS[0])
  _refused(tmp_path / "ckpt", oc.WEIGHTS[0], "no open_clip_config.json", "name=")


def test_named_architecture_that_does_not_match(tmp_path):
  bare = tmp_path / "weights.safetensors"
  shutil.copy(os.path.join(CLIP, oc.WEIGHTS[0]), bare)
  _refused(bare, str(bare), "which open_clip model 'ViT-B-32' needs", name="ViT-B-32")
  with pytest.raises(models.PretrainedError, match="Unknown open_clip model name 'ViT-Q-7'"):
    oc.named_config("ViT-Q-7")


@pytest.mark.parametrize(
  "edit,needle",
  [
    (lambda cfg: cfg["vision_cfg"].update(layers=[3, 4, 6, 3]), "ModifiedResNet"),
    (lambda cfg: cfg.update(multimodal_cfg={}), "CoCa"),
    (lambda cfg: cfg["vision_cfg"].update(ls_init_value=0.1), "ls_init_value"),
    (lambda cfg: cfg["text_cfg"].update(hf_model_name="roberta-base"), "hf_model_name"),
    (lambda cfg: cfg["vision_cfg"].update(pool_type="avg"), "pool_type 'avg'"),
    (lambda cfg: cfg["text_cfg"].update(pool_type="first"), "pool_type 'first'"),
    (lambda cfg: cfg["vision_cfg"].update(timm_model_name="convnext_base"), "convnext_base"),
  ],
)
def test_architectures_not_covered(tmp_path, edit, needle):
  directory = _copy(CLIP, tmp_path)
  _edit_config(directory, edit)
  _refused(directory, oc.CONFIG, needle, "not supported")


def test_unreadable_config(tmp_path):
  directory = _copy(CLIP, tmp_path)
  (directory / oc.CONFIG).write_text("{not json")
  _refused(directory, oc.CONFIG, "not readable JSON")


def test_save_refuses_what_open_clip_cannot_hold(tmp_path):
  with pytest.raises(models.PretrainedError, match="Cannot save as 'big_vision'"):
    models.save_pretrained(models.model_config(), {}, tmp_path, family="big_vision")
  config = models.model_config(image="mu/8", text="mu")
  config.encoders.audio = dict(kind="mlp", input_dim=4)
  with pytest.raises(models.PretrainedError, match="image and a text tower"):
    models.save_pretrained(config, {}, tmp_path, family="open_clip")
  with pytest.raises(models.PretrainedError, match="patch_bias=False"):
    models.save_pretrained(models.model_config(), {}, tmp_path, family="open_clip")


def test_save_refuses_params_of_another_model(tmp_path):
  pre = models.load_pretrained(CLIP)
  other = models.load_pretrained(SIGLIP)
  with pytest.raises(models.PretrainedError, match="do not fit the model config"):
    models.save_pretrained(pre, other.params, tmp_path, family="open_clip")


def test_weights_reader_formats(tmp_path):
  np.savez(tmp_path / "w.npz", **{"img/a": np.ones((2, 3)), "b": np.arange(3)})
  weights = weights_lib.open_weights(tmp_path / "w.npz")
  assert sorted(weights.keys()) == ["b", "img/a"] and weights.shape("img/a") == (2, 3)
  assert weights.pop("img/a").dtype == np.float32 and "img/a" not in weights
  weights_lib.save_safetensors(
    {"x": np.full((2,), 1.5, np.float32), "s": np.float32(3.0)}, tmp_path / "a.safetensors"
  )
  weights_lib.save_safetensors({"y": np.zeros((1, 2), np.float16)}, tmp_path / "b.safetensors")
  (tmp_path / "m.safetensors.index.json").write_text(
    json.dumps({"weight_map": {"x": "a.safetensors", "s": "a.safetensors", "y": "b.safetensors"}})
  )
  sharded = weights_lib.open_weights(tmp_path / "m.safetensors.index.json")
  assert sharded.shape("s") == () and sharded.file("y") == str(tmp_path / "b.safetensors")
  assert sharded.pop("y").dtype == np.float32 and sharded.pop("s").shape == ()
  (tmp_path / "broken.safetensors.index.json").write_text(
    json.dumps({"weight_map": {"x": "gone.safetensors"}})
  )
  with pytest.raises(models.PretrainedError, match="gone.safetensors"):
    weights_lib.open_weights(tmp_path / "broken.safetensors.index.json")
  with pytest.raises(models.PretrainedError, match="unknown weight file type"):
    (tmp_path / "w.h5").write_bytes(b"")
    weights_lib.open_weights(tmp_path / "w.h5")


def test_bfloat16_safetensors(tmp_path):
  import ml_dtypes

  values = np.array([[1.0, -2.5], [3.140625, 0.0078125]], np.float32)
  header = json.dumps({"w": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]}}).encode()
  header += b" " * (-len(header) % 8)
  path = tmp_path / "bf16.safetensors"
  path.write_bytes(
    len(header).to_bytes(8, "little") + header + values.astype(ml_dtypes.bfloat16).tobytes()
  )
  np.testing.assert_array_equal(weights_lib.open_weights(path).pop("w"), values)
