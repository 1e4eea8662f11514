"""Tests for contrastive/models/sizes.py: the size table and the parameter counts of named sizes."""

import doctest

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from contrastive import models
from contrastive.models import sizes


def key(seed):
  return jax.random.key(seed, impl="unsafe_rbg")  # compiles much faster than threefry on CPU


def _count(module, *, image_size=None):
  x = module.dummy_input(1)
  abstract = jax.eval_shape(
    lambda r: module.init(r, jnp.zeros(x.shape, x.dtype), train=False), key(0)
  )
  return models.count_params(abstract)


def test_docstring_examples():
  assert doctest.testmod(sizes).failed == 0


def test_decode_vit_variant():
  assert sizes.decode_vit_variant("B/16") == sizes.VitSize(768, 12, 3072, 12, 16)
  assert sizes.decode_vit_variant("So400m/14").mlp_dim == 4304
  assert sizes.decode_vit_variant("mu/8").patch_size == 8


def test_decode_text_variant():
  assert sizes.decode_text_variant("CLIP-B") == sizes.Size(512, 12, 2048, 8)
  assert sizes.decode_text_variant("B") == sizes.SIZES["B"]


@pytest.mark.parametrize("variant", ["X/16", "b/16", "B", "B/16/2", 16])
def test_unknown_vit_variant_lists_known_sizes(variant):
  with pytest.raises(ValueError, match="So400m"):
    sizes.decode_vit_variant(variant)


@pytest.mark.parametrize("variant", ["B/", "B/0", "B/x"])
def test_bad_patch_in_vit_variant(variant):
  with pytest.raises(ValueError, match="patch size in ViT variant .* must be a positive integer"):
    sizes.decode_vit_variant(variant)


def test_unknown_text_variant_lists_known_sizes():
  with pytest.raises(ValueError, match=r"Unknown text size 'Huge'.*CLIP-B"):
    sizes.decode_text_variant("Huge")
  with pytest.raises(ValueError, match=r"Unknown ViT size 'Huge'.*'B'"):
    models.ViT("Huge/16")
  with pytest.raises(ValueError, match="Unknown text size 'Huge'"):
    models.TextTransformer("Huge", vocab_size=8, max_len=4)


def test_every_dimension_is_overridable():
  vit = models.ViT("B/16", width=64, depth=2, mlp_dim=100, num_heads=4, patch_size=8, image_size=32)
  assert vit.dims == dict(width=64, depth=2, mlp_dim=100, num_heads=4, patch_size=8)
  text = models.TextTransformer(
    "B", width=48, depth=1, mlp_dim=7, num_heads=3, vocab_size=8, max_len=4
  )
  assert text.dims == dict(width=48, depth=1, mlp_dim=7, num_heads=3)
  assert (
    models.ViT(width=8, depth=1, mlp_dim=8, num_heads=2, patch_size=4, image_size=8).dims["width"]
    == 8
  )


def test_size_errors():
  with pytest.raises(ValueError, match="not divisible by num_heads 5"):
    models.ViT("B/16", num_heads=5)
  with pytest.raises(ValueError, match="depth must be a positive int, got 0"):
    models.ViT("B/16", depth=0)
  with pytest.raises(ValueError, match="no variant name gives 'width'"):
    models.ViT(depth=1, mlp_dim=8, num_heads=2, patch_size=4)


# Published parameter counts (timm's `vit_*_224` with the 1000-class head) minus that head and
# minus the class token's position embedding, which this ViT folds into the class token.
@pytest.mark.parametrize(
  "variant,published,head",
  [
    ("Ti/16", 5_717_416, 192 * 1000 + 1000),
    ("S/16", 22_050_664, 384 * 1000 + 1000),
    ("B/16", 86_567_656, 768 * 1000 + 1000),
    ("B/32", 88_224_232, 768 * 1000 + 1000),
  ],
)
def test_vit_param_counts_match_published(variant, published, head):
  width = sizes.decode_vit_variant(variant).width
  assert _count(models.ViT(variant, scan=True)) == published - head - width


def test_large_vit_param_counts():
  # CLIP ViT-L/14 image tower: 303.97M with its 1024x768 projection and ln_pre, no conv bias.
  assert _count(models.ViT("L/14", scan=True)) == pytest.approx(303.97e6 - 786_432, rel=1e-3)
  # SigLIP So400m/14 at 384 (27x27 patches, i.e. 378 px): 428,225,600 with the MAP head.
  assert _count(models.ViT("So400m/14", image_size=378, pool="map", scan=True)) == 428_225_600


def test_clip_b16_tower_param_counts():
  # open_clip ViT-B-16: image tower 86.19M, text tower 63.43M (text: exactly, see below).
  config = dict(
    embed_dim=512,
    scan=True,
    encoders=dict(
      image=dict(kind="vit", variant="B/16", pre_norm=True, patch_bias=False),
      text=dict(kind="text", variant="CLIP-B", vocab_size=49408, max_len=77, pool="eot"),
    ),
  )
  model = models.make_model(config)
  abstract = jax.eval_shape(lambda r: model.init(r, model.dummy_batch(1), train=False), key(0))
  counts = {k: models.count_params(v) for k, v in nn.unbox(abstract)["params"].items()}
  # 49408*512 + 77*512 + 12 * 3,152,384 + 1024 (ln_final) + 512*512 (text_projection).
  assert counts["text"] == 63_428_096
  assert counts["image"] == pytest.approx(86.19e6, rel=1e-4)
  assert counts["log_scale"] == 1


def test_unrolled_and_scanned_counts_agree():
  assert _count(models.ViT("Ti/16")) == _count(models.ViT("Ti/16", scan=True))
