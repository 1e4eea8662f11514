"""Tests for contrastive/models/pretrained/open_clip_coca.py: open_clip's CoCa in and out.

The committed fixtures (made by open_clip itself: `_fixtures_coca.py`) hold two tiny random
`open_clip.CoCa` models in the hub layout with open_clip's embeddings and caption logits of fixed
inputs; `open_clip_param_counts.json` holds the parameter counts of `coca_ViT-B-32` and
`coca_ViT-L-14`. The default run needs neither torch nor open_clip; the live test at the end
exports a model to open_clip where it imports.
"""

import json
import os
import shutil

import flax
import jax
import numpy as np
import pytest

from contrastive import models
from contrastive.models.pretrained import open_clip as oc
from contrastive.models.pretrained import open_clip_coca as coca
from contrastive.models.pretrained import weights as weights_lib
from tests import peers
from tests import pretrained_testing as pt
from tests.models.pretrained import _fixtures_coca as fx
from tests.models.pretrained import _fixtures_open_clip as fx_clip

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
NAMES = tuple(sorted(fx.CONFIGS))


def _fixture(name):
  return os.path.join(FIXTURES, name)


def _expected(name):
  return np.load(os.path.join(_fixture(name), "expected.npz"))


def _outputs(pre, images, tokens):
  """`(image_emb, text_emb, caption_logits, scale)` of a loaded checkpoint, as numpy."""
  model = models.make_model(pre.model_config)
  emb, extras = jax.jit(lambda p, b: model.apply({"params": p}, b, train=False))(
    pre.params, {"image": images, "text": tokens}
  )
  return (
    np.asarray(emb["image"]),
    np.asarray(emb["text"]),
    np.asarray(extras["caption_logits"]),
    float(extras["scale"]),
  )


def _differences(pre, expected) -> dict[str, float]:
  image, text, logits, scale = _outputs(pre, expected["images"], expected["tokens"])
  np.testing.assert_allclose(scale, expected["scale"], rtol=1e-6)
  assert logits.shape == expected["caption_logits"].shape and logits.dtype == np.float32
  return {
    "image_emb": float(np.abs(image - expected["image_emb"]).max()),
    "text_emb": float(np.abs(text - expected["text_emb"]).max()),
    "caption_logits": float(np.abs(logits - expected["caption_logits"]).max()),
  }


@pytest.mark.parametrize("name", NAMES)
def test_embeddings_and_caption_logits_equal_open_clips(name):
  pre = models.load_pretrained(_fixture(name))
  assert pre.family == "open_clip" and models.make_model(pre.model_config).has_decoder
  differences = _differences(pre, _expected(name))
  assert max(differences.values()) <= 1e-4, differences
  # The decoder's image tokens too: the pooler's outputs after the first, after `ln_post`.
  model = models.make_model(pre.model_config)
  encode = jax.jit(lambda p, x: model.apply({"params": p}, x, method=model.encode_image))
  _, tokens = encode(pre.params, _expected(name)["images"])
  assert np.abs(np.asarray(tokens) - _expected(name)["image_tokens"]).max() <= 1e-4


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_equals_open_clips(name):
  pre = models.load_pretrained(_fixture(name))
  model = models.make_model(pre.model_config)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), model.dummy_batch(1), train=False))
  assert models.count_params(shapes["params"]) == int(_expected(name)["params"])
  assert models.count_params(pre.params) == int(_expected(name)["params"])


@pytest.mark.parametrize("name", coca.NAMES)
def test_named_configs_count_open_clips_parameters(name):
  with open(os.path.join(FIXTURES, "open_clip_param_counts.json")) as f:
    peer = json.load(f)[name]
  assert oc.named_config(name) == peer["model_cfg"]
  config = oc.model_config_from_open_clip(oc.named_config(name))
  config.scan = True  # the same parameters, traced much faster
  model = models.make_model(config)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), model.dummy_batch(1), train=False))
  assert models.count_params(shapes["params"]) == peer["params"]


def test_layouts_and_data_settings():
  pre = models.load_pretrained(_fixture("open_clip_coca"))
  cfg = pre.model_config
  assert (cfg.decoder.pool_queries, cfg.decoder.pool_heads) == (5, 2)
  assert (cfg.decoder.width, cfg.decoder.mlp_dim, cfg.decoder.act) == (16, 64, "gelu")
  assert (cfg.encoders.text.kind, cfg.encoders.text.max_len) == ("coca_text", fx.TEXT_LEN)
  assert cfg.encoders.image.final_norm == "none"
  pool = pre.params["image"]["pool"]["attn"]
  assert pool["query"]["kernel"].shape == (16, 2, 8)  # from q_proj_weight [16, 16]
  assert pool["key"]["kernel"].shape == (24, 2, 8)  # from k_proj_weight [16, 24]: the ViT's width
  assert pre.params["text"]["encoder"]["pos_embedding"].shape == (fx.TEXT_LEN + 1, 16)
  assert pre.params["decoder"]["head"]["kernel"].shape == (16, fx.VOCAB)
  assert (pre.data.tokenizer, pre.data.max_len, pre.data.image_size) == ("clip", 8, 16)
  np.testing.assert_allclose(pre.data.mean, oc.OPENAI_MEAN)
  fused = models.load_pretrained(_fixture("open_clip_coca_fused")).model_config
  assert {fused.encoders.image.act, fused.encoders.text.act, fused.decoder.act} == {"quick_gelu"}
  for leaf in jax.tree.leaves(pre.params):
    assert isinstance(leaf, np.ndarray) and leaf.dtype == np.float32


@pytest.mark.parametrize("name", NAMES)
def test_round_trip_is_bit_exact(name, tmp_path):
  pre = models.load_pretrained(_fixture(name))
  models.save_pretrained(pre, pre.params, tmp_path, family="open_clip")
  back = models.load_pretrained(tmp_path)
  pt.assert_params_bit_exact(back.params, pre.params)
  assert back.model_config == pre.model_config
  assert back.data.to_dict() == pre.data.to_dict()
  # open_clip's tensors come back as they were, bit for bit, under the same keys.
  source = weights_lib.open_weights(os.path.join(_fixture(name), oc.WEIGHTS[0]))
  written = weights_lib.open_weights(tmp_path / oc.WEIGHTS[0])
  assert sorted(written.keys()) == sorted(source.keys())
  for key in source.keys():
    assert np.array_equal(written.pop(key).view(np.uint32), source.pop(key).view(np.uint32)), key
  with open(tmp_path / oc.CONFIG) as f:
    written_cfg = json.load(f)["model_cfg"]
  with open(os.path.join(_fixture(name), oc.CONFIG)) as f:
    original = json.load(f)["model_cfg"]
  assert oc.model_config_from_open_clip(written_cfg) == oc.model_config_from_open_clip(original)


def test_model_made_here_round_trips(tmp_path):
  config = models.coca_config("mu", vocab_size=64, max_len=8)
  model = models.make_model(config)
  batch = model.dummy_batch(2)
  batch["image"] = jax.random.normal(jax.random.key(1), batch["image"].shape)
  batch["text"] = np.array([[62, 5, 9, 63, 0, 0, 0, 0], [62, 0, 3, 4, 7, 1, 2, 63]], np.int32)
  variables = jax.jit(lambda b: model.init(jax.random.key(0), b, train=False))(batch)
  params = jax.tree.map(np.asarray, flax.linen.unbox(variables)["params"])
  models.save_pretrained(config, params, tmp_path, family="open_clip")
  back = models.load_pretrained(tmp_path)
  pt.assert_params_bit_exact(back.params, params)
  ours = jax.jit(lambda p, b: model.apply({"params": p}, b, train=False))(params, batch)
  theirs = _outputs(back, batch["image"], batch["text"])
  np.testing.assert_array_equal(ours[0]["image"], theirs[0])
  np.testing.assert_array_equal(ours[0]["text"], theirs[1])
  np.testing.assert_array_equal(ours[1]["caption_logits"], theirs[2])


def test_named_model_from_a_bare_weights_file(tmp_path, monkeypatch):
  with open(os.path.join(_fixture("open_clip_coca"), oc.CONFIG)) as f:
    cfg = json.load(f)["model_cfg"]
  monkeypatch.setattr(oc, "NAMES", oc.NAMES + ("Tiny-CoCa",))
  monkeypatch.setattr(oc, "named_config", lambda name: cfg)
  path = tmp_path / "epoch_3.safetensors"
  shutil.copy(os.path.join(_fixture("open_clip_coca"), oc.WEIGHTS[0]), path)
  pre = models.load_pretrained(path, name="Tiny-CoCa")
  assert max(_differences(pre, _expected("open_clip_coca")).values()) <= 1e-4


def _without(tmp_path, key):
  directory = tmp_path / "coca"
  shutil.copytree(_fixture("open_clip_coca"), directory)
  weights = weights_lib.open_weights(directory / oc.WEIGHTS[0])
  tensors = {k: weights.pop(k) for k in weights.keys() if k != key}
  weights_lib.save_safetensors(tensors, str(directory / oc.WEIGHTS[0]))
  return directory


def test_missing_key_is_one_line(tmp_path):
  key = "text_decoder.cross_attn.1.ln_1_kv.weight"
  with pytest.raises(models.PretrainedError) as e:
    models.load_pretrained(_without(tmp_path, key))
  message = str(e.value)
  assert "\n" not in message and repr(key) in message and oc.WEIGHTS[0] in message
  assert "1 keys missing" in message and "a CoCa text decoder" in message


def _cfg(**changes):
  cfg = json.loads(json.dumps(fx.CONFIGS["open_clip_coca"]))
  for path, value in changes.items():
    tower, key = path.split("__")
    cfg[tower][key] = value
  return cfg


@pytest.mark.parametrize(
  "changes,named",
  [
    (dict(vision_cfg__attentional_pool="parallel"), "attentional_pool='parallel'"),
    (dict(vision_cfg__pool_type="avg"), "pool_type 'avg'"),
    (dict(text_cfg__hf_model_name="roberta-base"), "Hugging Face text tower"),
    (dict(text_cfg__embed_cls=False), "without embed_cls"),
    (dict(text_cfg__proj_bias=True), "text projection"),
    (dict(multimodal_cfg__ls_init_value=0.1), "ls_init_value"),
    (dict(vision_cfg__norm_kwargs=dict(eps=1e-6)), "eps 1e-06"),
  ],
)
def test_architectures_not_covered_are_one_line(changes, named):
  with pytest.raises(models.PretrainedError) as e:
    oc.model_config_from_open_clip(_cfg(**changes), source="cfg.json")
  message = str(e.value)
  assert "\n" not in message and message.startswith("cfg.json: ") and named in message


@pytest.mark.parametrize(
  "change,named",
  [
    (lambda c: c.encoders.text.update(correct_cls_mask=True), "correct_cls_mask"),
    (lambda c: c.decoder.update(mlp_dim=48), "MLP 4 times its width"),
    (lambda c: c.encoders.image.update(final_norm="pre_pool"), "no final ViT LayerNorm"),
    (lambda c: c.decoder.update(act="quick_gelu"), "QuickGELU in every tower"),
  ],
)
def test_save_refuses_what_open_clip_cannot_build(change, named, tmp_path):
  pre = models.load_pretrained(_fixture("open_clip_coca"))
  config = pre.model_config
  change(config)
  with pytest.raises(models.PretrainedError) as e:
    models.save_pretrained(config, pre.params, tmp_path, family="open_clip")
  assert "\n" not in str(e.value) and named in str(e.value)


def test_named_configs_write_back_to_themselves():
  for name in coca.NAMES:
    config = oc.model_config_from_open_clip(oc.named_config(name))
    assert coca.is_coca(config)
    assert oc.model_config_from_open_clip(oc.open_clip_config(config)) == config, name


# ------------------------------------------------------------------- live, where open_clip imports


def _open_clip():
  pytest.importorskip("torch")
  try:
    peers.install_torchvision_stand_in()
  except Exception as e:
    pytest.skip(f"no torchvision stand-in: {e}")
  return pytest.importorskip("open_clip")


@pytest.mark.parametrize("name", NAMES)
def test_live_parity_and_export(name, tmp_path):
  open_clip = _open_clip()
  cfg = fx.CONFIGS[name]
  model = fx.build_model(cfg)
  fx_clip.randomize(model, 7)
  images, tokens = fx.inputs(7)
  fx_clip.save_hub_layout(model, cfg, fx.PREPROCESS, tmp_path / "in", bin_=False)
  expected = dict(
    fx.outputs(model, images, tokens),
    images=images.transpose(0, 2, 3, 1),
    tokens=tokens.astype(np.int32),
  )
  pre = models.load_pretrained(tmp_path / "in")
  assert max(_differences(pre, expected).values()) <= 1e-4
  # Here -> open_clip: open_clip loads the export unchanged and computes the same outputs.
  models.save_pretrained(pre, pre.params, tmp_path / "out", family="open_clip")
  back = open_clip.create_model(f"local-dir:{tmp_path / 'out'}")
  exported = fx.outputs(back, images, tokens)
  for key in ("image_emb", "text_emb", "caption_logits", "params"):
    np.testing.assert_array_equal(exported[key], expected[key])


@pytest.mark.parametrize(
  "variant,name",
  [
    ("B/32", "coca_ViT-B-32"),
    ("L/14", "coca_ViT-L-14"),
  ],
)
def test_coca_config_sizes_are_open_clips(variant, name):
  """`models.coca_config(variant)` builds the architecture open_clip builds for `name`."""
  ours = models.make_model(models.coca_config(variant))
  theirs = models.make_model(oc.model_config_from_open_clip(oc.named_config(name)))
  for model in (ours, theirs):
    assert model.has_decoder
  assert (ours.pool_queries, ours.pool_heads) == (theirs.pool_queries, theirs.pool_heads)
  assert ours.image_encoder.dims == theirs.image_encoder.dims
  assert ours.text_encoder.dims == theirs.text_encoder.dims
  assert ours.decoder.dims == theirs.decoder.dims
  for a, b in (
    (ours.image_encoder, theirs.image_encoder),
    (ours.text_encoder, theirs.text_encoder),
  ):
    assert (a.act, a.norm_eps) == (b.act, b.norm_eps)
  assert (ours.text_encoder.max_len, ours.text_encoder.pad_id) == (76, 0)
  assert (ours.decoder.act, ours.decoder.norm_eps) == (theirs.decoder.act, theirs.decoder.norm_eps)
