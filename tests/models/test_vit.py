"""Tests for contrastive/models/vit.py."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from contrastive import models
from contrastive.models import sizes


def key(seed):
  return jax.random.key(seed, impl="unsafe_rbg")  # compiles much faster than threefry on CPU


def _abstract_apply(vit, batch_size=2):
  x = vit.dummy_input(batch_size)
  variables = jax.eval_shape(
    lambda r: vit.init(r, jnp.zeros(x.shape, x.dtype), train=False), key(0)
  )
  return variables, jax.eval_shape(lambda v, x: vit.apply(v, x, train=False), variables, x)


@pytest.mark.parametrize("name", sorted(sizes.SIZES))
def test_output_shapes_and_dtypes_per_size(name):
  vit = models.ViT(f"{name}/16", image_size=32, scan=True)
  _, (pooled, aux) = _abstract_apply(vit)
  width = sizes.SIZES[name].width
  assert pooled.shape == (2, width) and pooled.dtype == jnp.float32
  assert aux["tokens"].shape == (2, 1 + 4, width)


@pytest.mark.parametrize(
  "pool,posemb,final_norm,tokens",
  [
    ("cls", "learn", "pre_pool", 17),
    ("gap", "sincos2d", "post_pool", 16),
    ("map", "learn", "none", 16),
  ],
)
def test_pooling_variants(pool, posemb, final_norm, tokens):
  vit = models.ViT(
    "mu/8",
    image_size=32,
    pool=pool,
    posemb=posemb,
    final_norm=final_norm,
    pre_norm=True,
    act="quick_gelu",
  )
  variables, (pooled, aux) = _abstract_apply(vit)
  assert pooled.shape == (2, 32) and aux["tokens"].shape == (2, tokens, 32)
  params = variables["params"]
  assert ("pos_embedding" in params) == (posemb == "learn")
  assert ("cls" in params) == (pool == "cls")
  assert ("map" in params) == (pool == "map")
  assert ("norm" in params) == (final_norm != "none")
  assert "norm_pre" in params


def test_runs_and_bf16_compute_keeps_f32_params():
  vit = models.ViT("mu/8", image_size=16, dtype="bfloat16", pool="gap")
  images = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype(np.float32)
  variables = jax.jit(lambda r: vit.init(r, images, train=False))(key(1))
  assert {x.dtype for x in jax.tree.leaves(nn.unbox(variables))} == {jnp.dtype(jnp.float32)}
  pooled, _ = jax.jit(lambda v, x: vit.apply(v, x, train=False))(variables, images)
  assert pooled.dtype == jnp.bfloat16 and pooled.shape == (2, 32)
  assert np.isfinite(np.asarray(pooled, np.float32)).all()


def test_other_channels_and_rectangular_images():
  vit = models.ViT("mu/4", image_size=(8, 16), channels=1, posemb="sincos2d")
  _, (pooled, aux) = _abstract_apply(vit)
  assert vit.dummy_input(2).shape == (2, 8, 16, 1)
  assert aux["tokens"].shape == (2, 1 + 2 * 4, 32)


def test_posemb_sincos_2d():
  pe = models.posemb_sincos_2d(2, 3, 8)
  assert pe.shape == (1, 6, 8) and pe.dtype == np.float32
  assert len({tuple(row) for row in pe[0].round(6)}) == 6  # every position differs
  np.testing.assert_allclose(pe[0, 0], [0, 0, 1, 1, 0, 0, 1, 1])  # sin(0), cos(0) at origin


def test_image_size_not_divisible_by_patch():
  with pytest.raises(
    ValueError,
    match=r"image size \(30, 30\) is not divisible by the patch "
    r"size 16",
  ):
    models.ViT("B/16", image_size=30)
  vit = models.ViT("mu/8", image_size=16, posemb="sincos2d")
  with pytest.raises(
    ValueError,
    match=r"image size \(20, 16\) is not divisible by the patch "
    r"size 8",
  ):
    jax.eval_shape(lambda r: vit.init(r, jnp.zeros((1, 20, 16, 3)), train=False), key(0))


def test_learned_posemb_needs_the_configured_size():
  vit = models.ViT("mu/8", image_size=16)
  with pytest.raises(ValueError, match=r"image_size \(16, 16\) got images of size \(24, 24\)"):
    jax.eval_shape(lambda r: vit.init(r, jnp.zeros((1, 24, 24, 3)), train=False), key(0))


def test_bad_options():
  with pytest.raises(ValueError, match="Unknown ViT pool 'tok'.*'cls'"):
    models.ViT("mu/8", pool="tok")
  with pytest.raises(ValueError, match="Unknown ViT posemb 'rope'"):
    models.ViT("mu/8", posemb="rope")
  with pytest.raises(ValueError, match="Unknown ViT final_norm 'post'"):
    models.ViT("mu/8", final_norm="post")
  with pytest.raises(ValueError, match=r"expects images of shape \[batch, height, width, 3\]"):
    vit = models.ViT("mu/8", image_size=16)
    jax.eval_shape(lambda r: vit.init(r, jnp.zeros((1, 16, 16)), train=False), key(0))


def test_conv_stem_keeps_the_token_grid():
  vit = models.ViT("mu/8", image_size=32, stem="conv", pool="gap", posemb="sincos2d")
  images = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
  variables = jax.jit(lambda r: vit.init(r, images, train=False))(key(2))
  params = nn.unbox(variables)["params"]
  # log2(8) = 3 stride-2 convolutions, channels doubling up to the width, then the 1x1 embedding.
  assert [params[f"stem_{k}"]["kernel"].shape for k in range(3)] == [
    (3, 3, 3, 8),
    (3, 3, 8, 16),
    (3, 3, 16, 32),
  ]
  assert params["embedding"]["kernel"].shape == (1, 1, 32, 32)
  pooled, aux = vit.apply(variables, images, train=False)
  assert pooled.shape == (2, 32) and aux["tokens"].shape == (2, 16, 32)


def test_conv_stem_needs_a_power_of_two_patch():
  with pytest.raises(ValueError, match="stem 'conv' needs a power-of-two patch size, got 12"):
    models.ViT(
      width=32, depth=1, mlp_dim=64, num_heads=2, patch_size=12, image_size=24, stem="conv"
    )
  with pytest.raises(ValueError, match="Unknown ViT stem 'resnet'"):
    models.ViT("mu/8", stem="resnet")


def test_class_token_under_a_pre_layernorm_gets_a_gradient_like_the_others():
  # A zero class token under `pre_norm` made the LayerNorm divide by sqrt(eps): its first
  # gradient was 1e5 times the patch embedding's.
  vit = models.ViT("mu/8", image_size=16, pre_norm=True, pool="cls")
  images = np.random.default_rng(0).normal(size=(4, 16, 16, 3)).astype(np.float32)
  params = nn.unbox(vit.init(key(3), images, train=False))["params"]
  target = np.random.default_rng(1).normal(size=(4, 32)).astype(np.float32)
  loss = lambda p: jnp.mean((vit.apply({"params": p}, images, train=False)[0] - target) ** 2)
  grads = jax.grad(loss)(params)
  ratio = np.linalg.norm(grads["cls"]) / np.linalg.norm(grads["embedding"]["kernel"])
  assert 1e-3 < ratio < 10.0, ratio
  assert np.std(params["cls"]) == pytest.approx(32**-0.5, rel=0.3)
  plain = nn.unbox(models.ViT("mu/8", image_size=16, pool="cls").init(key(3), images, train=False))[
    "params"
  ]
  assert not np.any(plain["cls"])  # big_vision's zeros where no LayerNorm follows


def test_class_token_with_its_own_position_row():
  # CLIP's layout: the class token has row 0 of the position table; without it, the same model.
  images = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype(np.float32)
  vit = models.ViT("mu/8", image_size=16, pool="cls", pre_norm=True, cls_posemb=True)
  params = nn.unbox(vit.init(key(0), images, train=False))["params"]
  assert params["pos_embedding"].shape == (1, 1 + 4, 32)
  plain = dict(
    params,
    cls=params["cls"] + params["pos_embedding"][:, :1],
    pos_embedding=params["pos_embedding"][:, 1:],
  )
  ours = vit.apply({"params": params}, images, train=False)[0]
  folded = models.ViT("mu/8", image_size=16, pool="cls", pre_norm=True).apply(
    {"params": plain}, images, train=False
  )[0]
  np.testing.assert_allclose(ours, folded, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="cls_posemb needs pool 'cls'"):
    models.ViT("mu/8", pool="map", cls_posemb=True)
