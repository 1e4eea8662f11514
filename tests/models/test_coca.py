"""Tests for contrastive/models/coca.py, decoder.py and coca_configs.py: CoCa's forward pass, its
masks, one-modality calls, the mesh, and its config."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from contrastive import models
from contrastive import parallel

VOCAB, MAX_LEN, PAD, SOT, EOT = 64, 8, 0, 62, 63
TEXTS = np.array(
  [
    [SOT, 5, 9, 3, EOT, PAD, PAD, PAD],
    [SOT, 7, EOT, PAD, PAD, PAD, PAD, PAD],
    [SOT, 4, PAD, 6, 8, 11, 2, EOT],  # a pad id inside the text
  ],
  np.int32,
)


def key(seed):
  return jax.random.key(seed, impl="unsafe_rbg")  # compiles much faster than threefry on CPU


def config(**decoder):
  cfg = models.model_config(
    image="mu/8", text="mu", image_size=16, vocab_size=VOCAB, max_len=MAX_LEN, embed_dim=16,
    decoder="mu",
  )  # fmt: skip
  cfg.decoder.pool_queries = 5
  cfg.decoder.pool_heads = 2
  cfg.decoder.update(decoder)
  return cfg


@functools.cache
def _model_and_params(correct_cls_mask=False):
  cfg = config()
  cfg.encoders.text.correct_cls_mask = correct_cls_mask
  model = models.make_model(cfg)
  init = jax.jit(lambda r: model.init(r, model.dummy_batch(1), train=False))
  return model, nn.unbox(init(key(0)))["params"]


@functools.cache
def _apply_fn(correct_cls_mask=False):
  model, _ = _model_and_params(correct_cls_mask)
  return jax.jit(lambda p, batch: model.apply({"params": p}, batch, train=False))


def apply(batch, params=None, correct_cls_mask=False):
  if params is None:
    params = _model_and_params(correct_cls_mask)[1]
  return _apply_fn(correct_cls_mask)(params, batch)


def images(n=3, seed=1):
  return jax.random.normal(key(seed), (n, 16, 16, 3))


def test_forward_shapes_and_contract():
  model, params = _model_and_params()
  assert model.has_decoder and not models.TowerModel.has_decoder
  assert model.modalities == ("image", "text")
  assert sorted(params) == ["decoder", "image", "log_scale", "text"]
  assert sorted(params["image"]) == ["encoder", "head", "norm", "pool"]
  assert params["image"]["pool"]["query"].shape == (5, 16)
  assert params["text"]["encoder"]["pos_embedding"].shape == (MAX_LEN + 1, 32)
  emb, extras = apply({"image": images(), "text": TEXTS})
  for m in ("image", "text"):
    assert emb[m].shape == (3, 16) and emb[m].dtype == jnp.float32
    np.testing.assert_allclose(np.linalg.norm(emb[m], axis=-1), 1.0, rtol=1e-5)
  logits = extras["caption_logits"]
  assert logits.shape == (3, MAX_LEN - 1, VOCAB) and logits.dtype == jnp.float32
  assert np.isfinite(logits).all()
  np.testing.assert_allclose(extras["scale"], 1 / 0.07, rtol=1e-5)
  assert extras["bias"] is None and extras["log_scale"].shape == ()


def test_siglip_convention_has_a_bias():
  cfg = config()
  cfg.convention = "siglip"
  model = models.make_model(cfg)
  shapes = jax.eval_shape(lambda: model.init(key(0), model.dummy_batch(1), train=False))
  assert shapes["params"]["bias"].shape == ()


def test_caption_logits_are_causal():
  """Changing token j changes the logits at position j (which predict token j + 1) and never
  those before it."""
  x = images()
  base = np.asarray(apply({"image": x, "text": TEXTS})[1]["caption_logits"])
  for j in range(1, MAX_LEN - 1):
    texts = TEXTS.copy()
    texts[:, j] = (texts[:, j] + 17) % (VOCAB - 2) + 1
    logits = np.asarray(apply({"image": x, "text": texts})[1]["caption_logits"])
    np.testing.assert_array_equal(logits[:, :j], base[:, :j])
    assert np.abs(logits[:, j] - base[:, j]).max() > 1e-4


def test_caption_logits_depend_on_the_image():
  a = apply({"image": images(seed=1), "text": TEXTS})[1]["caption_logits"]
  b = apply({"image": images(seed=2), "text": TEXTS})[1]["caption_logits"]
  assert np.abs(np.asarray(a) - np.asarray(b)).min(axis=-1).max() > 1e-4


def _with_pad_embedding(params, value):
  params = jax.tree.map(lambda x: x, params)
  table = params["text"]["encoder"]["embedding"]["embedding"]
  params["text"]["encoder"]["embedding"]["embedding"] = table.at[PAD].set(value)
  return params


@pytest.mark.parametrize("correct_cls_mask", [False, True])
def test_padding_mask(correct_cls_mask):
  """open_clip's shifted mask lets the text's class token see the first padding token; the
  correct one sees no padding. Either way the logits before the first pad do not see it."""
  _, params = _model_and_params(correct_cls_mask)
  batch = {"image": images(2), "text": TEXTS[:2]}
  emb, extras = apply(batch, params, correct_cls_mask)
  emb2, extras2 = apply(batch, _with_pad_embedding(params, 5.0), correct_cls_mask)
  changed = np.abs(np.asarray(emb["text"]) - np.asarray(emb2["text"])).max()
  if correct_cls_mask:
    np.testing.assert_allclose(emb2["text"], emb["text"], atol=1e-6)
  else:
    assert changed > 1e-4
  for row, first_pad in ((0, 5), (1, 3)):
    np.testing.assert_allclose(
      extras2["caption_logits"][row, :first_pad],
      extras["caption_logits"][row, :first_pad],
      atol=1e-5,
    )
  np.testing.assert_array_equal(emb2["image"], emb["image"])


def test_one_modality_calls():
  both, extras = apply({"image": images(), "text": TEXTS})
  image, image_extras = apply({"image": images()})
  text, text_extras = apply({"text": TEXTS})
  assert set(image) == {"image"} and set(text) == {"text"}
  assert "caption_logits" not in image_extras and "caption_logits" not in text_extras
  np.testing.assert_allclose(image["image"], both["image"], atol=1e-6)
  np.testing.assert_allclose(text["text"], both["text"], atol=1e-6)
  assert "scale" in image_extras and "log_scale" in text_extras


def test_gradients_reach_every_parameter():
  model, params = _model_and_params()
  batch = {"image": images(), "text": TEXTS}

  def loss(p):
    emb, extras = model.apply({"params": p}, batch, train=False)
    logp = jax.nn.log_softmax(extras["caption_logits"])
    nll = -jnp.take_along_axis(logp, batch["text"][:, 1:, None], axis=-1).mean()
    return nll + jnp.sum(emb["image"] * emb["text"]) * extras["scale"]

  grads = jax.jit(jax.grad(loss))(params)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    assert np.abs(np.asarray(g)).max() > 0, jax.tree_util.keystr(path)


def test_dropout_needs_and_uses_an_rng():
  model = models.make_model(config(dropout=0.5))
  params = _model_and_params()[1]  # dropout has no parameters
  batch = {"image": images(), "text": TEXTS}
  run = jax.jit(lambda p, r: model.apply({"params": p}, batch, train=True, rngs={"dropout": r})[1])
  a, b = run(params, key(1))["caption_logits"], run(params, key(2))["caption_logits"]
  assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-3


def test_scan_and_remat_match_unrolled():
  _, params = _model_and_params()
  cfg = config()
  cfg.scan, cfg.remat = True, "full"
  scanned = models.make_model(cfg)
  stacked = dict(params)
  stacked["text"] = models.stack_layers(params["text"])
  stacked["image"] = models.stack_layers(params["image"])
  stacked["decoder"] = models.stack_layers(params["decoder"], prefix="layer")
  batch = {"image": images(), "text": TEXTS}
  want = apply(batch)[1]["caption_logits"]
  got = jax.jit(lambda p: scanned.apply({"params": p}, batch, train=False))(stacked)
  np.testing.assert_allclose(got[1]["caption_logits"], want, atol=1e-5, rtol=1e-5)


def test_init_and_apply_on_the_mesh():
  model, _ = _model_and_params()
  mesh = parallel.make_mesh(data=2, fsdp=2, tensor=2)
  batch = {"image": images(8), "text": np.tile(TEXTS, (3, 1))[:8]}
  variables, shardings = parallel.sharded_init(
    lambda r: model.init(r, model.dummy_batch(1), train=False), mesh, key(0)
  )
  head = shardings["params"]["decoder"]["head"]["kernel"].spec
  assert tuple(head) == ("fsdp", "tensor")
  batch = jax.device_put(batch, parallel.batch_sharding(mesh))
  with parallel.use_rules(mesh):
    emb, extras = jax.jit(lambda v, b: model.apply(v, b, train=False))(variables, batch)
  want_emb, want = apply(batch, variables["params"])
  np.testing.assert_allclose(extras["caption_logits"], want["caption_logits"], atol=1e-5)
  np.testing.assert_allclose(emb["text"], want_emb["text"], atol=1e-5)


@pytest.mark.parametrize(
  "change, message",
  [
    (lambda c: c.decoder.update(heads=2), "Unknown key 'heads' in the model config's decoder"),
    (lambda c: c.encoders.__delitem__("image"), "needs exactly the encoders 'image' and 'text'"),
    (lambda c: c.encoders.text.update(kind="text"), "needs encoders.text.kind 'coca_text'"),
    (lambda c: c.encoders.image.update(kind="cnn"), "needs encoders.image.kind 'vit'"),
    (lambda c: c.decoder.update(width=48), "must equal the text tower's width 32"),
    (lambda c: c.decoder.update(pool_queries=1), "pool_queries must be at least 2"),
    (lambda c: c.decoder.update(variant="XL"), "Unknown text size 'XL'"),
    (lambda c: c.encoders.text.update(proj_bias=True), "bias-free head"),
    (lambda c: c.update(locked=("audio",)), "Cannot lock 'audio'"),
  ],
)
def test_bad_config_gives_one_line(change, message):
  cfg = config()
  change(cfg)
  with pytest.raises(ValueError, match=message) as info:
    models.make_model(cfg)
  assert "\n" not in str(info.value)


def test_decoder_that_is_not_a_dict():
  cfg = models.model_config(decoder="mu").to_dict()
  cfg["decoder"] = "mu"
  with pytest.raises(ValueError, match="'decoder' must be a dict"):
    models.make_model(cfg)


def test_model_config_without_decoder_is_todays_model():
  cfg = models.model_config()
  assert cfg.decoder is None
  model = models.make_model(cfg)
  assert isinstance(model, models.TowerModel) and not model.has_decoder


@pytest.mark.parametrize(
  "variant, widths",
  [("B/32", (768, 512, 512, 8, 256)), ("L/14", (1024, 768, 768, 8, 256))],
)
def test_open_clip_sizes(variant, widths):
  """open_clip's coca_ViT-B-32.json and coca_ViT-L-14.json."""
  model = models.make_model(models.coca_config(variant))
  assert isinstance(model, models.CoCa)
  dims = (
    model.image_encoder.dims["width"],
    model.text_encoder.dims["width"],
    model.decoder.dims["width"],
    model.pool_heads,
    model.pool_queries,
  )
  assert dims == widths
  assert model.embed_dim == widths[1]
  assert model.text_encoder.max_len == model.decoder.max_len == 76
  assert model.decoder.vocab_size == 49408 and model.decoder.dims["depth"] == 12


def test_coca_config_params_count():
  """coca_ViT-B-32 by hand: open_clip's towers, pooler and decoder, parameter for parameter."""
  model = models.make_model(models.coca_config("B/32"))
  shapes = jax.eval_shape(lambda: model.init(key(0), model.dummy_batch(1), train=False))
  w, t, e, v = 768, 512, 512, 49408
  block = lambda d: 12 * d * d + 13 * d
  vision = 3 * 32 * 32 * w + w + 50 * w + 2 * w + 12 * block(w)
  pooler = 256 * e + (e * e + 2 * e * w + 3 * e) + (e * e + e) + 2 * e + 2 * w
  image = vision + pooler + 2 * e + e * e
  text = v * t + 77 * t + t + 12 * block(t) + 2 * t + t * e
  decoder = 12 * (block(t) + block(t) + 2 * t) + 2 * t + t * v
  assert models.count_params(shapes["params"]) == image + text + decoder + 1
