"""Tests for contrastive/models/pretrained/open_clip.py.

The committed fixtures (made by open_clip itself: `_fixtures_open_clip.py`) hold tiny random
models in the hub layout and open_clip's embeddings of fixed inputs; the default run needs
neither torch nor open_clip. The live tests at the end run the same comparisons against open_clip
where it imports (see tests/peers.py for the torchvision stand-in it needs here).
"""

import json
import math
import os
import shutil
import sys

import flax
import jax
import numpy as np
import pytest

from contrastive import models
from contrastive.models.pretrained import common
from contrastive.models.pretrained import open_clip as oc
from contrastive.models.pretrained import open_clip_configs
from contrastive.models.pretrained import weights as weights_lib
from tests import peers
from tests import pretrained_testing as pt
from tests.models.pretrained import _fixtures_open_clip as fx

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
SAFETENSORS = ("open_clip_clip", "open_clip_siglip")


@pytest.fixture(autouse=True)
def tiny_trunk(monkeypatch):
  """The fixtures' timm trunk is not a published one: the tests add it, as a user would."""
  monkeypatch.setitem(oc.TIMM_TRUNKS, fx.TINY_TRUNK, fx.TINY_TRUNK_DIMS)


def _fixture(name):
  return os.path.join(FIXTURES, name)


def _embed(pre, images, tokens):
  model = models.make_model(pre.model_config)
  emb, extras = jax.jit(lambda p, b: model.apply({"params": p}, b, train=False))(
    pre.params, {"image": images, "text": tokens}
  )
  bias = None if extras["bias"] is None else float(extras["bias"])
  return np.asarray(emb["image"]), np.asarray(emb["text"]), float(extras["scale"]), bias


def _check_parity(pre, expected):
  image, text, scale, bias = _embed(pre, expected["images"], expected["tokens"])
  assert np.abs(image - expected["image_emb"]).max() <= 1e-4
  assert np.abs(text - expected["text_emb"]).max() <= 1e-4
  np.testing.assert_allclose(scale, expected["scale"], rtol=1e-5)
  if np.isnan(expected["bias"]):
    assert bias is None
  else:
    np.testing.assert_allclose(bias, expected["bias"], rtol=1e-5)
  return max(np.abs(image - expected["image_emb"]).max(), np.abs(text - expected["text_emb"]).max())


@pytest.mark.parametrize("name", SAFETENSORS)
def test_fixture_embeddings_equal_open_clip(name):
  pre = models.load_pretrained(_fixture(name))
  assert pre.family == "open_clip" and pre.source == _fixture(name)
  _check_parity(pre, np.load(os.path.join(_fixture(name), "expected.npz")))


def test_fixture_layouts():
  clip = models.load_pretrained(_fixture("open_clip_clip")).model_config.encoders
  assert (
    clip.image.pool,
    clip.image.act,
    clip.image.cls_posemb,
    clip.image.pre_norm,
    clip.image.patch_bias,
  ) == ("cls", "quick_gelu", True, True, False)
  assert (clip.text.causal, clip.text.pool, clip.text.pad_id) == (True, "eot", None)
  siglip = models.load_pretrained(_fixture("open_clip_siglip"))
  enc = siglip.model_config.encoders
  assert (enc.image.pool, enc.image.act, enc.image.proj, enc.image.patch_bias) == (
    "map",
    "gelu_tanh",
    False,
    True,
  )
  assert (enc.text.causal, enc.text.pool, enc.text.proj_bias, enc.text.act) == (
    False,
    "last",
    True,
    "gelu",
  )
  assert "head" not in siglip.params["image"] and siglip.params["bias"].shape == ()
  for leaf in jax.tree.leaves(siglip.params):
    assert isinstance(leaf, np.ndarray) and leaf.dtype == np.float32


def test_data_settings():
  clip = models.load_pretrained(_fixture("open_clip_clip")).data
  assert (clip.tokenizer, clip.max_len, clip.image_size, clip.crop) == ("clip", 8, 16, "center")
  np.testing.assert_allclose(clip.mean, oc.OPENAI_MEAN)
  np.testing.assert_allclose(clip.std, oc.OPENAI_STD)
  siglip = models.load_pretrained(_fixture("open_clip_siglip")).data
  assert siglip.tokenizer == "siglip:" + os.path.join(
    _fixture("open_clip_siglip"), "tokenizer.json"
  )
  assert (siglip.crop, siglip.mean, siglip.std) == ("squash", (0.5,) * 3, (0.5,) * 3)


def test_tokenizer_file_beside_the_checkpoint_is_used(tmp_path):
  directory = tmp_path / "siglip"
  shutil.copytree(_fixture("open_clip_siglip"), directory)
  (directory / "spiece.model").write_bytes(b"")
  assert models.load_pretrained(directory).data.tokenizer == f"siglip:{directory}/spiece.model"


def test_weights_file_with_its_config_beside_it():
  path = os.path.join(_fixture("open_clip_clip"), "open_clip_model.safetensors")
  _check_parity(
    models.load_pretrained(path), np.load(os.path.join(_fixture("open_clip_clip"), "expected.npz"))
  )


def test_bin_state_dict_with_module_prefix():
  pytest.importorskip("torch")
  pre = models.load_pretrained(_fixture("open_clip_bin"))
  _check_parity(pre, np.load(os.path.join(_fixture("open_clip_bin"), "expected.npz")))


def test_bin_without_torch_says_so(monkeypatch):
  monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
  with pytest.raises(models.PretrainedError) as e:
    models.load_pretrained(_fixture("open_clip_bin"))
  assert str(e.value).endswith("reading .bin needs torch: pip install contrastive[torch]")
  assert "open_clip_pytorch_model.bin" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("name", SAFETENSORS)
def test_round_trip_is_bit_exact(name, tmp_path):
  pre = models.load_pretrained(_fixture(name))
  models.save_pretrained(pre, pre.params, tmp_path, family="open_clip")
  back = models.load_pretrained(tmp_path)
  pt.assert_params_bit_exact(back.params, pre.params)
  assert back.model_config == pre.model_config
  assert back.data.to_dict() == dict(pre.data.to_dict(), tokenizer=back.data.tokenizer)
  # And open_clip's tensors come back as they were, bit for bit, under the same keys.
  source = weights_lib.open_weights(os.path.join(_fixture(name), oc.WEIGHTS[0]))
  written = weights_lib.open_weights(tmp_path / oc.WEIGHTS[0])
  assert sorted(written.keys()) == sorted(source.keys())
  for key in source.keys():
    assert np.array_equal(written.pop(key).view(np.uint32), source.pop(key).view(np.uint32)), key
  with open(tmp_path / oc.CONFIG) as f:
    config = json.load(f)
  with open(os.path.join(_fixture(name), oc.CONFIG)) as f:
    original = json.load(f)
  assert oc.model_config_from_open_clip(config["model_cfg"]) == oc.model_config_from_open_clip(
    original["model_cfg"]
  )
  assert config["model_cfg"]["text_cfg"].get("hf_tokenizer_name") == original["model_cfg"][
    "text_cfg"
  ].get("hf_tokenizer_name")


def _clip_like_config(**image):
  config = models.model_config(
    image="mu/4", text="mu", image_size=16, vocab_size=64, max_len=8, embed_dim=16
  )
  config.encoders.image.update(dict(pool="cls", pre_norm=True, patch_bias=False, **image))
  config.encoders.text.update(dict(causal=True, pool="eot", pad_id=None, act="gelu"))
  return config


@pytest.mark.parametrize("cls_posemb", [True, False])
def test_model_made_here_round_trips(cls_posemb, tmp_path):
  config = _clip_like_config(cls_posemb=cls_posemb)
  model = models.make_model(config)
  batch = model.dummy_batch(2)
  batch["image"] = jax.random.normal(jax.random.key(1), batch["image"].shape)
  batch["text"] = np.array([[5, 9, 63, 0, 0, 0, 0, 0], [7, 0, 3, 4, 63, 0, 0, 0]], np.int32)
  variables = jax.jit(lambda b: model.init(jax.random.key(0), b, train=False))(batch)
  params = jax.tree.map(np.asarray, flax.linen.unbox(variables)["params"])
  models.save_pretrained(config, params, tmp_path, family="open_clip")
  back = models.load_pretrained(tmp_path)
  if cls_posemb:
    pt.assert_params_bit_exact(back.params, params)
  else:  # the class token's position row is written as -0.0, which adds to it exactly
    assert back.params["image"]["encoder"]["pos_embedding"].shape[1] == 1 + 16
    np.testing.assert_array_equal(
      back.params["image"]["encoder"]["cls"], params["image"]["encoder"]["cls"]
    )
  ours = jax.jit(lambda p, b: model.apply({"params": p}, b, train=False)[0])(params, batch)
  theirs = _embed(back, batch["image"], batch["text"])
  for m, theirs_m in zip(("image", "text"), theirs):
    if cls_posemb:
      np.testing.assert_array_equal(ours[m], theirs_m)
    else:  # the same arithmetic in another compiled graph: equal up to float32 rounding
      np.testing.assert_allclose(ours[m], theirs_m, atol=1e-6)


def test_named_configs_equal_open_clips():
  with open(os.path.join(FIXTURES, "open_clip_param_counts.json")) as f:
    peer = json.load(f)
  assert sorted(oc.NAMES) == sorted(peer) == sorted(fx.NAMES)
  for name in oc.NAMES:
    assert oc.model_config_from_open_clip(oc.named_config(name)) == oc.model_config_from_open_clip(
      peer[name]["model_cfg"]
    ), name


def test_parameter_counts_equal_open_clips():
  with open(os.path.join(FIXTURES, "open_clip_param_counts.json")) as f:
    peer = json.load(f)
  assert sorted(oc.NAMES) == sorted(peer)  # every named config has open_clip's count
  for name in oc.NAMES:
    config = oc.model_config_from_open_clip(oc.named_config(name))
    config.scan = True  # the same parameters, traced much faster
    count = sum(math.prod(s) for s in common.param_shapes(config).values())
    assert count == peer[name]["params"], name


def test_named_model_from_a_bare_weights_file(tmp_path, monkeypatch):
  cfg = json.load(open(os.path.join(_fixture("open_clip_clip"), oc.CONFIG)))["model_cfg"]
  monkeypatch.setattr(oc, "NAMES", oc.NAMES + ("Tiny-CLIP",))
  monkeypatch.setattr(oc, "named_config", lambda name: cfg)
  path = tmp_path / "epoch_3.safetensors"
  shutil.copy(os.path.join(_fixture("open_clip_clip"), oc.WEIGHTS[0]), path)
  pre = models.load_pretrained(path, name="Tiny-CLIP")
  _check_parity(pre, np.load(os.path.join(_fixture("open_clip_clip"), "expected.npz")))


# ------------------------------------------------------------------- live, where open_clip imports


def _open_clip():
  pytest.importorskip("torch")
  try:
    peers.install_torchvision_stand_in()
  except Exception as e:
    pytest.skip(f"no torchvision stand-in: {e}")
  return pytest.importorskip("open_clip")


@pytest.mark.parametrize("name", sorted(fx.CONFIGS))
def test_live_parity_and_export(name, tmp_path):
  open_clip = _open_clip()
  import torch

  fx.register_tiny_trunk()
  cfg = fx.CONFIGS[name]
  model = fx.build_model(cfg)
  fx.randomize(model, 7)
  images, tokens = fx.inputs(7, eot=not cfg["text_cfg"].get("no_causal_mask", False))
  fx.save_hub_layout(model, cfg, fx.PREPROCESS[name], tmp_path / "in", bin_=name.endswith("bin"))
  expected = dict(
    fx.embeddings(model, images, tokens),
    images=images.transpose(0, 2, 3, 1),
    tokens=tokens.astype(np.int32),
  )
  pre = models.load_pretrained(tmp_path / "in")
  _check_parity(pre, expected)
  # Here -> open_clip: open_clip loads the export unchanged and gives the same embeddings.
  models.save_pretrained(pre, pre.params, tmp_path / "out", family="open_clip")
  back = open_clip.create_model(f"local-dir:{tmp_path / 'out'}")
  exported = fx.embeddings(back, images, tokens)
  for key in ("image_emb", "text_emb"):
    np.testing.assert_array_equal(exported[key], expected[key])
  del torch


@pytest.mark.parametrize(
  "mlp_dim,width,ratio",
  [
    (3072, 768, 4.0),
    (4304, 1152, 3.7362),
    (8192, 1664, 4.9231),
    (6144, 1408, 4.3637),
    (15360, 1792, 8.5715),
    (64, 32, 2.0),
    (100, 30, None),
  ],
)
def test_mlp_ratio_written_as_open_clip_reads_it(mlp_dim, width, ratio):
  written = open_clip_configs._ratio(mlp_dim, width)
  assert int(width * written) == mlp_dim
  if ratio is not None:
    assert written == ratio


def test_every_named_config_writes_back_to_itself():
  for name in oc.NAMES:
    config = oc.model_config_from_open_clip(oc.named_config(name))
    assert oc.model_config_from_open_clip(oc.open_clip_config(config)) == config, name
