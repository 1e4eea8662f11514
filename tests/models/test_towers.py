"""Tests for contrastive/models/towers.py: embeddings, scale and bias, one modality at a time."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from contrastive import models

EMBED = 16


def key(seed):
  return jax.random.key(seed, impl="unsafe_rbg")  # compiles much faster than threefry on CPU


@pytest.fixture(scope="module")
def model():
  return models.make_model(
    models.model_config(
      image="mu/8", text="mu", image_size=16, vocab_size=64, max_len=8, embed_dim=EMBED
    )
  )


@pytest.fixture(scope="module")
def params(model):
  init = jax.jit(lambda r: model.init(r, model.dummy_batch(2), train=False))
  return nn.unbox(init(key(0)))["params"]


@pytest.fixture(scope="module")
def batch():
  return {
    "image": np.random.default_rng(1).normal(size=(4, 16, 16, 3)).astype(np.float32),
    "text": jnp.array([[3, 4, 5, 0, 0, 0, 0, 0]] * 2 + [[9, 9, 0, 0, 0, 0, 0, 0]] * 2),
  }


@pytest.fixture(scope="module")
def apply(model):
  return jax.jit(lambda p, b: model.apply({"params": p}, b, train=False))


def _vector_model(**kw):
  """A fast-compiling two-tower model over vectors (modalities `a` and `b`)."""
  enc = lambda n: models.MLPEncoder(in_features=n, width=8, depth=1)
  return models.TowerModel(encoders={"a": enc(3), "b": enc(5)}, embed_dim=4, **kw)


def test_embeddings_are_unit_float32(params, batch, apply):
  emb, extras = apply(params, batch)
  assert set(emb) == {"image", "text"}
  for x in emb.values():
    assert x.shape == (4, EMBED) and x.dtype == jnp.float32
    np.testing.assert_allclose(jnp.linalg.norm(x, axis=-1), 1.0, rtol=1e-5)
  assert extras["image/features"].shape == (4, 32)
  assert extras["text/norm"].shape == (4,)
  np.testing.assert_allclose(extras["scale"], 1 / 0.07, rtol=1e-6)
  assert extras["bias"] is None
  assert set(params) == {"image", "text", "log_scale"}
  assert set(params["image"]) == {"encoder", "head"}


def test_one_modality_alone(params, batch, apply):
  both, _ = apply(params, batch)
  for name in ("image", "text"):
    alone, extras = apply(params, {name: batch[name]})
    assert set(alone) == {name}
    np.testing.assert_allclose(alone[name], both[name], rtol=1e-5, atol=1e-6)
    assert "scale" in extras


def test_modality_without_an_encoder(model, params, batch):
  with pytest.raises(ValueError, match=r"No encoder for modality 'audio'.*\['image', 'text'\]"):
    jax.eval_shape(
      lambda p: model.apply({"params": p}, {**batch, "audio": batch["image"]}, train=False), params
    )


def test_bf16_compute_float32_embeddings():
  model = _vector_model()
  model = model.clone(encoders={k: v.clone(dtype="bfloat16") for k, v in model.encoders.items()})
  variables = jax.eval_shape(lambda r: model.init(r, model.dummy_batch(2), train=False), key(0))
  emb, extras = jax.eval_shape(
    lambda v: model.apply(v, model.dummy_batch(2), train=False), variables
  )
  assert {x.dtype for x in emb.values()} == {jnp.dtype(jnp.float32)}
  assert extras["a/features"].dtype == jnp.float32
  assert {
    x.value.dtype if hasattr(x, "value") else x.dtype
    for x in jax.tree.leaves(variables, is_leaf=lambda x: hasattr(x, "value"))
  } == {jnp.dtype(jnp.float32)}


@pytest.mark.parametrize("convention", ["clip", "siglip"])
def test_scale_and_bias_init_conventions(convention):
  model = _vector_model(**models.CONVENTIONS[convention])
  params = jax.jit(lambda r: model.init(r, model.dummy_batch(2), train=False))(key(0))
  params = nn.unbox(params)["params"]
  if convention == "clip":
    np.testing.assert_allclose(params["log_scale"], math.log(1 / 0.07), rtol=1e-6)
    assert "bias" not in params
  else:
    np.testing.assert_allclose(params["log_scale"], math.log(10.0), rtol=1e-6)
    np.testing.assert_allclose(params["bias"], -10.0)
    _, extras = jax.jit(lambda p: model.apply({"params": p}, {}, train=False))(params)
    np.testing.assert_allclose(extras["scale"], 10.0, rtol=1e-6)
    np.testing.assert_allclose(extras["bias"], -10.0)


def test_scale_is_clipped_at_max_scale():
  model = _vector_model(max_scale=100.0)
  params = {"log_scale": jnp.asarray(math.log(250.0))}
  scale = lambda p: model.apply({"params": p}, {}, train=False)[1]["scale"]
  np.testing.assert_allclose(jax.jit(scale)(params), 100.0, rtol=1e-6)
  assert float(jax.jit(jax.grad(scale))(params)["log_scale"]) == 0.0
  below = {"log_scale": jnp.asarray(math.log(50.0))}
  np.testing.assert_allclose(jax.jit(jax.grad(scale))(below)["log_scale"], 50.0, rtol=1e-5)


@pytest.mark.parametrize("locked", [("a",), ("a/encoder",)])
def test_locked_tower_passes_no_gradient(locked):
  model = _vector_model(locked=locked)
  batch = {
    "a": np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32),
    "b": np.random.default_rng(1).normal(size=(4, 5)).astype(np.float32),
  }
  params = nn.unbox(jax.jit(lambda r: model.init(r, batch, train=False))(key(2)))

  def loss(p):
    emb, extras = model.apply(p, batch, train=True)
    return extras["scale"] * jnp.sum(emb["a"] * emb["b"])

  grads = jax.jit(jax.grad(loss))(params)["params"]
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads["a"]["encoder"]))
  head_zero = all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads["a"]["head"]))
  assert head_zero == (locked == ("a",))
  assert all(float(jnp.abs(g).max()) > 0.0 for g in jax.tree.leaves(grads["b"]))


def test_model_errors():
  with pytest.raises(ValueError, match=r"Cannot lock 'c'.*\['a', 'b'\]"):
    _vector_model(locked=("c",))
  with pytest.raises(ValueError, match="scale_init must be a positive number, got 0"):
    _vector_model(scale_init=0)
  with pytest.raises(ValueError, match="embed_dim must be a positive int, got 0"):
    models.TowerModel(encoders={"a": models.MLPEncoder(in_features=2)}, embed_dim=0)
  with pytest.raises(ValueError, match="needs at least one encoder"):
    models.TowerModel(encoders={}, embed_dim=2)


def test_tower_without_a_head():
  # SigLIP's image tower in open_clip and transformers: the encoder's pooled width is the embedding.
  config = models.model_config(image="mu/8", text="mu", embed_dim=32)
  config.encoders.image.proj = False
  model = models.make_model(config)
  batch = model.dummy_batch(2)
  batch["image"] = np.random.default_rng(0).normal(size=batch["image"].shape).astype(np.float32)
  variables = nn.unbox(jax.jit(lambda r: model.init(r, batch, train=False))(key(0)))
  assert "head" not in variables["params"]["image"] and "head" in variables["params"]["text"]
  emb, extras = model.apply(variables, batch, train=False)
  norm = np.linalg.norm(extras["image/features"], axis=-1, keepdims=True)
  np.testing.assert_allclose(emb["image"], extras["image/features"] / norm, rtol=1e-5, atol=1e-7)
  config.embed_dim = 16
  with pytest.raises(ValueError, match="width 32 to equal embed_dim 16"):
    models.make_model(config).init(key(0), batch, train=False)
