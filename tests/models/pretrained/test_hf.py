"""Hugging Face CLIPModel / SiglipModel directories: parity with transformers, round trips, errors.

The fixtures (`fixtures/hf_*`, written by `_fixtures_hf.py` with transformers) hold tiny random
models as `save_pretrained` writes them and transformers' embeddings for fixed inputs; the tests
marked live rerun the comparison against transformers itself when torch and transformers import.
"""

import json
import os
import shutil

import flax
import jax
import numpy as np
import pytest

from contrastive import data
from contrastive import models
from contrastive.models.pretrained import hf
from tests import peers
from tests import pretrained_testing as pt
from tests.models.pretrained import _fixtures_hf as hf_fx

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "fixtures")
KINDS = ("clip", "siglip")


def _fixture(kind):
  return os.path.join(FIXTURES, f"hf_{kind}")


def _copy(kind, tmp_path):
  out = str(tmp_path / f"hf_{kind}")
  shutil.copytree(_fixture(kind), out)
  return out


def _edit_config(directory, edit):
  path = os.path.join(directory, hf.CONFIG)
  with open(path) as f:
    config = json.load(f)
  edit(config)
  with open(path, "w") as f:
    json.dump(config, f)


@pytest.mark.parametrize("kind", KINDS)
def test_embeddings_scale_and_bias_match_transformers(kind):
  pre = hf.load(_fixture(kind))
  expected = np.load(os.path.join(_fixture(kind), "expected.npz"))
  emb, extras = pt.embed(pre, expected)
  for modality in ("image", "text"):
    np.testing.assert_allclose(emb[modality], expected[f"expected_{modality}"], atol=1e-4)
    assert np.abs(emb[modality] - expected[f"expected_{modality}"]).max() <= 1e-4
  np.testing.assert_allclose(extras["scale"], expected["expected_scale"], rtol=1e-6)
  if kind == "siglip":
    np.testing.assert_allclose(extras["bias"], expected["expected_bias"], rtol=1e-6)
  else:
    assert extras["bias"] is None
  assert pre.family == "hf" and pre.source == _fixture(kind)


def test_clip_pools_at_the_first_eos_unless_the_legacy_id(tmp_path):
  expected = np.load(os.path.join(_fixture("clip"), "expected.npz"))
  legacy = hf.load(_fixture("clip"))
  assert legacy.model_config.encoders.text.pool == "eot"  # eos_token_id 2: the largest id
  directory = _copy("clip", tmp_path)
  _edit_config(directory, lambda c: c["text_config"].update(eos_token_id=7))
  pre = hf.load(directory)
  assert pre.model_config.encoders.text.pool == "eos"
  assert pre.model_config.encoders.text.eos_id == 7
  emb, _ = pt.embed(pre, expected)
  np.testing.assert_allclose(emb["text"], expected["eos_text"], atol=1e-4)
  assert not np.allclose(emb["text"], expected["expected_text"], atol=1e-2)


@pytest.mark.parametrize("kind", KINDS)
def test_dispatch_and_a_file_in_the_directory(kind):
  assert hf.detect(_fixture(kind))
  assert models.pretrained.detect_family(_fixture(kind)) == "hf"
  by_file = models.load_pretrained(os.path.join(_fixture(kind), hf.WEIGHTS))
  pt.assert_params_bit_exact(by_file.params, hf.load(_fixture(kind)).params)


def test_detect_says_no_to_other_layouts(tmp_path):
  assert not hf.detect(str(tmp_path))
  (tmp_path / "config.json").write_text("{}")
  assert not hf.detect(str(tmp_path))  # no model_type, no weights


def test_sharded_checkpoint_loads_like_one_file(tmp_path):
  from safetensors.numpy import load_file
  from safetensors.numpy import save_file

  tensors = load_file(os.path.join(_fixture("siglip"), hf.WEIGHTS))
  keys = sorted(tensors)
  directory = tmp_path / "sharded"
  directory.mkdir()
  shutil.copy(os.path.join(_fixture("siglip"), hf.CONFIG), directory / hf.CONFIG)
  weight_map = {}
  for i, part in enumerate((keys[::2], keys[1::2])):
    name = f"model-{i + 1:05d}-of-00002.safetensors"
    save_file({k: tensors[k] for k in part}, str(directory / name), metadata={"format": "pt"})
    weight_map.update({k: name for k in part})
  (directory / hf.INDEX).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
  pt.assert_params_bit_exact(hf.load(str(directory)).params, hf.load(_fixture("siglip")).params)


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_here_hf_here_is_bit_exact(kind, tmp_path):
  pre = hf.load(_fixture(kind))
  out = str(tmp_path / "out")
  models.save_pretrained(pre, pre.params, out, family="hf")
  again = hf.load(out)
  pt.assert_params_bit_exact(again.params, pre.params)
  assert again.model_config.to_dict() == pre.model_config.to_dict()
  with open(os.path.join(out, hf.CONFIG)) as f:
    assert json.load(f)["architectures"] == [hf.ARCHITECTURES[kind]]


def test_round_trip_of_a_scanned_model(tmp_path):
  pre = hf.load(_fixture("siglip"))
  config = pre.model_config.copy_and_resolve_references()
  config.scan = True
  hf.save(config, models.stack_layers(pre.params), str(tmp_path))
  pt.assert_params_bit_exact(hf.load(str(tmp_path)).params, pre.params)


def test_a_model_built_here_exports_with_its_embeddings(tmp_path):
  config = hf.model_config_from_hf(json.load(open(os.path.join(_fixture("clip"), hf.CONFIG))))
  model = models.make_model(config)
  params = flax.linen.unbox(model.init(jax.random.key(3), model.dummy_batch(1), train=False))
  params = jax.tree.map(np.asarray, params["params"])
  hf.save(config, params, str(tmp_path))
  pre = hf.load(str(tmp_path))
  x = np.load(os.path.join(_fixture("clip"), "expected.npz"))
  ours, _ = model.apply({"params": params}, {"image": x["images"], "text": x["ids"]}, train=False)
  theirs, _ = pt.embed(pre, x)
  assert sorted(ours) == sorted(theirs) == ["image", "text"]
  for modality in ours:
    np.testing.assert_array_equal(ours[modality], theirs[modality])


def test_a_class_token_without_its_own_position_row_exports(tmp_path):
  config = hf.model_config_from_hf(json.load(open(os.path.join(_fixture("clip"), hf.CONFIG))))
  config.encoders.image.cls_posemb = False  # this library's default ViT
  model = models.make_model(config)
  params = flax.linen.unbox(model.init(jax.random.key(4), model.dummy_batch(1), train=False))
  params = jax.tree.map(np.asarray, params["params"])
  hf.save(config, params, str(tmp_path))
  pre = hf.load(str(tmp_path))
  assert pre.model_config.encoders.image.cls_posemb
  row = pre.params["image"]["encoder"]["pos_embedding"][0, 0]
  assert np.all(row == 0) and np.all(np.signbit(row))  # -0.0: adds nothing to the class token
  x = np.load(os.path.join(_fixture("clip"), "expected.npz"))
  ours, _ = model.apply({"params": params}, {"image": x["images"]}, train=False)
  theirs, _ = pt.embed(pre, x)
  np.testing.assert_allclose(ours["image"], theirs["image"], atol=1e-6)


@pytest.mark.parametrize(
  "change, match",
  [
    (lambda c: c["encoders"]["text"].update(pool="last"), "pools the text at its end-of-text"),
    (lambda c: c["encoders"]["image"].update(pre_norm=False), "needs image pre_norm=True"),
    (lambda c: c["encoders"]["text"].update(act="relu"), None),
  ],
)
def test_export_refuses_what_transformers_does_not_compute(change, match, tmp_path):
  pre = hf.load(_fixture("clip"))
  config = pre.model_config.to_dict()
  change(config)
  if match is None:  # an activation the encoders do not know fails when the model is built
    with pytest.raises(ValueError):
      hf.save(config, pre.params, str(tmp_path))
  else:
    pt.one_line_error(match, hf.save, config, pre.params, str(tmp_path))
  assert not os.path.exists(tmp_path / hf.WEIGHTS)


def test_export_refuses_a_library_default_siglip_text_tower(tmp_path):
  pre = hf.load(_fixture("siglip"))
  config = pre.model_config.to_dict()
  config["encoders"]["text"]["pad_id"] = 0
  pt.one_line_error("needs text pad_id=None", hf.save, config, pre.params, str(tmp_path))


def test_truncated_safetensors(tmp_path):
  directory = _copy("clip", tmp_path)
  path = os.path.join(directory, hf.WEIGHTS)
  size = os.path.getsize(path)
  with open(path, "r+b") as f:
    f.truncate(size // 2)
  message = pt.one_line_error("truncated", hf.load, directory)
  assert hf.WEIGHTS in message


def test_weights_of_another_architecture(tmp_path):
  from safetensors.numpy import save_file

  directory = _copy("clip", tmp_path)
  # An open_clip state_dict where transformers' weights belong.
  save_file(
    {
      "visual.conv1.weight": np.zeros((32, 3, 4, 4), np.float32),
      "logit_scale": np.zeros((), np.float32),
    },
    os.path.join(directory, hf.WEIGHTS),
  )
  message = pt.one_line_error("does not hold the CLIPModel", hf.load, directory)
  assert hf.WEIGHTS in message and "visual.conv1.weight" in message


def test_siglip_weights_under_a_clip_config(tmp_path):
  directory = _copy("siglip", tmp_path)
  shutil.copy(os.path.join(_fixture("clip"), hf.CONFIG), os.path.join(directory, hf.CONFIG))
  pt.one_line_error("does not hold the CLIPModel", hf.load, directory)


def test_config_that_does_not_match_the_weights(tmp_path):
  directory = _copy("siglip", tmp_path)
  _edit_config(directory, lambda c: c["vision_config"].update(intermediate_size=128))
  message = pt.one_line_error("the config does not match the weights", hf.load, directory)
  assert "fc1.weight" in message and "(64, 32)" in message and "(128, 32)" in message
  assert hf.CONFIG in message and hf.WEIGHTS in message


@pytest.mark.parametrize(
  "edit, match",
  [
    (lambda c: c.update(model_type="siglip2"), "NaFlex"),
    (lambda c: c.update(model_type="align"), "model_type 'align' is not supported"),
    (lambda c: c["vision_config"].update(hidden_act="silu"), "hidden_act 'silu'"),
  ],
)
def test_unsupported_configs(edit, match, tmp_path):
  directory = _copy("siglip", tmp_path)
  _edit_config(directory, edit)
  assert hf.CONFIG in pt.one_line_error(match, hf.load, directory)


def test_data_settings_defaults_and_preprocessor(tmp_path):
  clip, siglip = hf.load(_fixture("clip")).data, hf.load(_fixture("siglip")).data
  assert clip.mean == hf.OPENAI_MEAN and clip.std == hf.OPENAI_STD and clip.crop == "center"
  assert siglip.mean == (0.5,) * 3 and siglip.crop == "squash"
  assert clip.max_len == siglip.max_len == 16 and clip.image_size == 16
  directory = _copy("clip", tmp_path)
  with open(os.path.join(directory, hf.PREPROCESSOR), "w") as f:
    json.dump(
      {
        "image_mean": [0.1, 0.2, 0.3],
        "image_std": [0.4, 0.5, 0.6],
        "resample": 2,
        "size": {"shortest_edge": 18},
        "do_center_crop": True,
        "crop_size": {"height": 16, "width": 16},
      },
      f,
    )
  settings = hf.load(directory).data
  assert settings.mean == (0.1, 0.2, 0.3) and settings.std == (0.4, 0.5, 0.6)
  assert settings.resize == 18 and settings.crop == "center"
  assert settings.interpolation == "bilinear"


def test_tokenizer_beside_the_checkpoint_or_a_clear_error(tmp_path):
  directory = _copy("siglip", tmp_path)
  missing = hf.load(directory).data.tokenizer
  assert missing == "siglip:" + os.path.join(directory, "spiece.model")
  with pytest.raises(FileNotFoundError, match="spiece.model") as info:
    data.make_tokenizer(missing)
  assert "\n" not in str(info.value)
  (tmp_path / "hf_siglip" / "tokenizer.json").write_text("{}")  # SigLIP 2: Gemma's tokenizer
  assert hf.load(directory).data.tokenizer == "hf:" + os.path.join(directory, "tokenizer.json")
  (tmp_path / "hf_siglip" / "spiece.model").write_bytes(b"")
  assert hf.load(directory).data.tokenizer == "siglip:" + os.path.join(directory, "spiece.model")
  clip = _copy("clip", tmp_path)
  assert hf.load(clip).data.tokenizer == "hf:" + os.path.join(clip, "tokenizer.json")
  (tmp_path / "hf_clip" / "tokenizer.json").write_text("{}")
  assert hf.load(clip).data.tokenizer == "hf:" + os.path.join(clip, "tokenizer.json")


@pytest.mark.parametrize("kind", KINDS)
def test_data_settings_and_tokenizer_survive_a_round_trip(kind, tmp_path):
  directory = _copy(kind, tmp_path)
  with open(os.path.join(directory, hf.PREPROCESSOR), "w") as f:
    json.dump(
      {
        "image_mean": [0.1, 0.2, 0.3],
        "image_std": [0.4, 0.5, 0.6],
        "resample": 2,
        "size": {"shortest_edge": 20},
        "do_center_crop": kind == "clip",
      },
      f,
    )
  (tmp_path / f"hf_{kind}" / "tokenizer.json").write_text('{"model": {}}')
  pre = hf.load(directory)
  out = str(tmp_path / "out")
  models.save_pretrained(pre, pre.params, out, family="hf")
  again = hf.load(out)
  assert again.data.tokenizer == "hf:" + os.path.join(out, "tokenizer.json")
  with open(os.path.join(out, "tokenizer.json")) as f:
    assert f.read() == '{"model": {}}'
  for key in ("mean", "std", "resize", "crop", "interpolation", "image_size", "max_len"):
    assert again.data[key] == pre.data[key], key


def test_clip_without_tokenizer_files_uses_the_openai_bpe(tmp_path):
  directory = _copy("clip", tmp_path)
  _edit_config(directory, lambda c: c["text_config"].update(vocab_size=49408))
  config = hf.model_config_from_hf(json.load(open(os.path.join(directory, hf.CONFIG))))
  assert hf.data_from_hf(directory, {}, config).tokenizer == "clip"


def test_eos_pooling_needs_an_eos_id():
  with pytest.raises(ValueError, match="pool 'eos' needs eos_id"):
    models.TextTransformer(
      width=32, depth=1, mlp_dim=64, num_heads=2, vocab_size=10, max_len=4, pool="eos"
    )


def _param_counts():
  with open(os.path.join(FIXTURES, "param_counts_hf.json")) as f:
    return json.load(f)


@pytest.mark.parametrize("name", sorted(_param_counts()["counts"]))
def test_parameter_counts_equal_transformers(name):
  fixture = _param_counts()
  config = hf.model_config_from_hf(fixture["configs"][name])
  model = models.make_model(config)
  abstract = jax.eval_shape(
    lambda: model.init(jax.random.key(0), model.dummy_batch(1), train=False)
  )
  assert models.count_params(abstract["params"]) == fixture["counts"][name]


@pytest.mark.parametrize("kind", KINDS)
def test_live_against_transformers(kind, tmp_path):
  torch = pytest.importorskip("torch")
  peers.install_torchvision_stand_in()
  transformers = pytest.importorskip("transformers")
  cls, cfg_cls, config = {
    "clip": (transformers.CLIPModel, transformers.CLIPConfig, hf_fx.CLIP_TINY),
    "siglip": (transformers.SiglipModel, transformers.SiglipConfig, hf_fx.SIGLIP_TINY),
  }[kind]
  torch.manual_seed(5)
  theirs = cls(cfg_cls(**config)).eval()
  hf_fx.randomize(theirs, torch, 5)
  theirs.save_pretrained(str(tmp_path / "theirs"))
  x = hf_fx.inputs()
  expected = hf_fx.embeddings(theirs, x, torch)
  pre = hf.load(str(tmp_path / "theirs"))
  emb, extras = pt.embed(pre, x)
  for modality in ("image", "text"):
    np.testing.assert_allclose(emb[modality], expected[modality], atol=1e-4)
  np.testing.assert_allclose(extras["scale"], expected["scale"], rtol=1e-6)
  hf.save(pre.model_config, pre.params, str(tmp_path / "ours"))  # and back to transformers
  back = cls.from_pretrained(str(tmp_path / "ours")).eval()
  again = hf_fx.embeddings(back, x, torch)
  for key, value in expected.items():
    np.testing.assert_array_equal(again[key], value)


def test_an_open_clip_checkpoint_exports_to_transformers(tmp_path):
  source = os.path.join(FIXTURES, "open_clip_clip")
  pre = models.load_pretrained(source)
  models.save_pretrained(pre, pre.params, str(tmp_path), family="hf")
  back = hf.load(str(tmp_path))
  pt.assert_params_bit_exact(back.params, pre.params)
  expected = np.load(os.path.join(source, "expected.npz"))
  model = models.make_model(back.model_config)
  emb, _ = model.apply(
    {"params": back.params}, {"image": expected["images"], "text": expected["tokens"]}, train=False
  )
  np.testing.assert_allclose(emb["image"], expected["image_emb"], atol=1e-4)
  np.testing.assert_allclose(emb["text"], expected["text_emb"], atol=1e-4)


def test_live_an_open_clip_checkpoint_in_transformers(tmp_path):
  source = os.path.join(FIXTURES, "open_clip_clip")
  torch = pytest.importorskip("torch")
  peers.install_torchvision_stand_in()
  transformers = pytest.importorskip("transformers")
  pre = models.load_pretrained(source)
  models.save_pretrained(pre, pre.params, str(tmp_path), family="hf")
  expected = np.load(os.path.join(source, "expected.npz"))
  theirs = transformers.CLIPModel.from_pretrained(str(tmp_path)).eval()
  with torch.no_grad():
    out = theirs(
      input_ids=torch.from_numpy(expected["tokens"].astype(np.int64)),
      pixel_values=torch.from_numpy(expected["images"]).permute(0, 3, 1, 2),
    )
  np.testing.assert_allclose(out.image_embeds.numpy(), expected["image_emb"], atol=1e-4)
  np.testing.assert_allclose(out.text_embeds.numpy(), expected["text_emb"], atol=1e-4)
