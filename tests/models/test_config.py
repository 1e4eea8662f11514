"""Tests for contrastive/models/config.py: building models from ml_collections configs."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import pytest

from contrastive import models


def key(seed):
  return jax.random.key(seed, impl="unsafe_rbg")  # compiles much faster than threefry on CPU


def _abstract(model, batch_size=2):
  variables = jax.eval_shape(
    lambda r: model.init(r, model.dummy_batch(batch_size), train=False), key(0)
  )
  outputs = jax.eval_shape(
    lambda v: model.apply(v, model.dummy_batch(batch_size), train=False), variables
  )
  return nn.unbox(variables)["params"], outputs


def test_model_config_builds_a_two_tower_model():
  cfg = models.model_config(image="mu/8", text="mu", image_size=16, embed_dim=24)
  assert isinstance(cfg, ml_collections.ConfigDict)
  model = models.make_model(cfg)
  assert model.modalities == ("image", "text")
  assert (model.scale_init, model.bias_init, model.max_scale) == (1 / 0.07, None, 100.0)
  params, (emb, extras) = _abstract(model)
  assert emb["image"].shape == emb["text"].shape == (2, 24)
  assert extras["bias"] is None


def test_siglip_convention_and_overrides():
  cfg = models.model_config(convention="siglip")
  model = models.make_model(cfg)
  assert (model.scale_init, model.bias_init, model.max_scale) == (10.0, -10.0, None)
  cfg.scale_init, cfg.bias_init, cfg.max_scale = 5.0, -3.0, 50.0
  model = models.make_model(cfg)
  assert (model.scale_init, model.bias_init, model.max_scale) == (5.0, -3.0, 50.0)
  cfg.max_scale = float("inf")
  assert models.make_model(cfg).max_scale is None
  params, (_, extras) = _abstract(model)
  assert extras["bias"].shape == () and "bias" in params


def test_shared_options_reach_every_encoder_unless_overridden():
  cfg = models.model_config()
  cfg.dtype, cfg.scan, cfg.remat = "bfloat16", True, "full"
  cfg.encoders.text.remat = "dots"
  cfg.encoders.text.proj_bias = True
  model = models.make_model(cfg)
  image, text = model.encoders["image"], model.encoders["text"]
  assert (image.dtype, image.scan, image.remat) == ("bfloat16", True, "full")
  assert (text.dtype, text.scan, text.remat) == ("bfloat16", True, "dots")
  params, _ = _abstract(model)
  assert "bias" in params["text"]["head"] and "bias" not in params["image"]["head"]
  assert "encoderblock" in params["image"]["encoder"]["transformer"]


def test_shared_options_reach_only_the_encoders_having_them():
  # The CNN takes `dtype` but neither `remat` nor `scan`; a list of widths becomes a tuple.
  cfg = models.model_config(image_size=16)
  cfg.dtype, cfg.scan, cfg.remat = "bfloat16", True, "full"
  cfg.encoders.image = dict(kind="cnn", image_size=16, widths=[4, 8], width=16)
  model = models.make_model(cfg)
  image = model.encoders["image"]
  assert isinstance(image, models.CNN)
  assert (image.dtype, image.widths) == ("bfloat16", (4, 8))
  assert model.encoders["text"].scan
  params, (emb, extras) = _abstract(model)
  assert emb["image"].shape == (2, 64) and extras["image/features"].shape == (2, 16)
  assert set(params["image"]["encoder"]) == {"conv_0_0", "conv_1_0", "head_dense"}


def test_more_modalities_audio_and_tabular():
  cfg = dict(
    embed_dim=8,
    encoders=dict(
      image=dict(kind="vit", variant="mu/8", image_size=16),
      audio=dict(
        kind="vit", variant="mu/4", image_size=(16, 8), channels=1, posemb="sincos2d", pool="gap"
      ),
      tabular=dict(kind="mlp", in_features=7, width=16, depth=1),
    ),
  )
  model = models.make_model(cfg)
  assert model.dummy_batch(3)["audio"].shape == (3, 16, 8, 1)
  _, (emb, _) = _abstract(model)
  assert {k: v.shape for k, v in emb.items()} == {k: (2, 8) for k in ("image", "audio", "tabular")}


def test_locked_from_config():
  cfg = models.model_config()
  cfg.locked = ("image",)
  assert models.make_model(cfg).locked == ("image",)
  assert models.make_model({**cfg.to_dict(), "locked": "text/encoder"}).locked == ("text/encoder",)


@pytest.mark.parametrize(
  "change,message",
  [
    (lambda c: c.update(temperature=1.0), r"Unknown model config key 'temperature'.*'embed_dim'"),
    (lambda c: c.update(convention="infonce"), r"Unknown scale/bias convention 'infonce'.*'clip'"),
    (
      lambda c: c.encoders.image.update(kind="resnet"),
      r"Unknown encoder kind 'resnet' for modality 'image'; known kinds: "
      r"\['cnn', 'coca_text', 'mlp', 'text', 'vit'\]",
    ),
    (
      lambda c: c.encoders.image.update(patch=16),
      r"Unknown key 'patch' in the 'vit' encoder config of modality 'image'.*'patch_size'",
    ),
    (
      lambda c: c.encoders.image.update(variant="B/15", image_size=224),
      r"image size \(224, 224\) is not divisible by the patch size 15",
    ),
    (lambda c: c.encoders.text.update(variant="XL"), r"Unknown text size 'XL'"),
    (lambda c: c.update(embed_dim=None), r"The model config needs 'embed_dim'"),
    (lambda c: c.update(locked=("audio",)), r"Cannot lock 'audio'"),
  ],
)
def test_config_errors_name_the_problem(change, message):
  cfg = models.model_config()
  change(cfg)
  with pytest.raises(ValueError, match=message):
    models.make_model(cfg)


def test_modality_without_an_encoder_config():
  with pytest.raises(ValueError, match="Modality 'audio' has no encoder config"):
    models.make_model(dict(embed_dim=4, encoders=dict(audio=None)))
  with pytest.raises(ValueError, match="encoder config of modality 'audio' has no 'kind'"):
    models.make_model(dict(embed_dim=4, encoders=dict(audio=dict(variant="mu/8"))))


def test_count_params():
  assert models.count_params({"a": jnp.zeros((2, 3)), "b": [jnp.zeros(4)]}) == 10
