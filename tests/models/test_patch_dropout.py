"""Patch dropout in contrastive/models/vit.py (`ViT.patch_dropout`, FLIP).

In training each example keeps `max(1, int(patches * (1 - p)))` of its patch tokens, a subset of
the tokens the evaluation sees, in their order, with the class token first; nothing is dropped
at evaluation; the subset is a function of the `"dropout"` rng only (the trainer's
`fold_in(key(seed), step)`), and differs between examples.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from contrastive import models
from contrastive.models import vit as vit_lib


def _vit(p, **kw):
  kw = dict(variant="mu/8", image_size=32, pool="cls", pre_norm=True, patch_dropout=p) | kw
  return vit_lib.ViT(**kw)


def _init(model):
  return model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)


def _tokens_in(model, variables, images, *, train, rng=None):
  """The ViT's tokens after `norm_pre` (the class token and the kept patch tokens)."""
  _, state = model.apply(
    variables,
    images,
    train=train,
    rngs={"dropout": rng} if rng is not None else None,
    capture_intermediates=lambda mdl, _: mdl.name == "norm_pre",
    mutable=["intermediates"],
  )
  return np.asarray(state["intermediates"]["norm_pre"]["__call__"][0])


@pytest.mark.parametrize("p,kept", [(0.5, 8), (0.75, 4), (0.9, 1), (0.99, 1), (0.1, 14)])
def test_kept_count(p, kept):
  model = _vit(p)
  assert model.kept_patches(16) == kept
  variables = _init(model)
  images = jnp.ones((3, 32, 32, 3))
  _, aux = model.apply(variables, images, train=True, rngs={"dropout": jax.random.key(1)})
  assert aux["tokens"].shape == (3, 1 + kept, 32)
  _, aux = model.apply(variables, images, train=False)
  assert aux["tokens"].shape == (3, 1 + 16, 32)


@pytest.mark.parametrize("cls_posemb", [False, True])
def test_kept_tokens_are_an_ordered_subset_with_the_class_token_first(cls_posemb):
  model = _vit(0.5, cls_posemb=cls_posemb)
  variables = _init(model)
  images = jax.random.normal(jax.random.key(2), (4, 32, 32, 3))
  full = _tokens_in(model, variables, images, train=False)
  kept = _tokens_in(model, variables, images, train=True, rng=jax.random.key(3))
  assert kept.shape == (4, 9, 32)
  subsets = []
  for b in range(4):
    np.testing.assert_allclose(kept[b, 0], full[b, 0], rtol=1e-6, atol=1e-6)  # class token
    rows = []
    for row in kept[b, 1:]:
      match = np.where(np.all(np.abs(full[b, 1:] - row) < 1e-5, axis=-1))[0]
      assert len(match) == 1
      rows.append(int(match[0]))
    assert rows == sorted(set(rows)) and len(rows) == 8  # distinct, row-major order
    subsets.append(tuple(rows))
  assert len(set(subsets)) > 1  # each example draws its own subset


def test_deterministic_per_rng_and_different_across_steps():
  model = _vit(0.5)
  variables = _init(model)
  images = jnp.ones((2, 32, 32, 3))
  key = jax.random.key(7)

  def run(step):
    return model.apply(
      variables, images, train=True, rngs={"dropout": jax.random.fold_in(key, step)}
    )[0]

  np.testing.assert_array_equal(run(3), run(3))
  assert not np.allclose(run(3), run(4))


def test_off_at_evaluation_and_zero_is_the_plain_vit():
  images = jax.random.normal(jax.random.key(4), (2, 32, 32, 3))
  plain, dropped = _vit(0.0), _vit(0.5)
  variables = _init(plain)
  a = plain.apply(variables, images, train=False)[0]
  b = dropped.apply(variables, images, train=False)[0]
  c = plain.apply(variables, images, train=True, rngs={"dropout": jax.random.key(0)})[0]
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(a, c)


def test_gradients_flow_and_jit_has_one_shape():
  model = _vit(0.75, pool="gap", pre_norm=False)
  variables = _init(model)
  images = jax.random.normal(jax.random.key(5), (2, 32, 32, 3))

  @jax.jit
  def loss(params, rng):
    out, _ = model.apply({"params": params}, images, train=True, rngs={"dropout": rng})
    return jnp.sum(out**2)

  grads = jax.grad(loss)(variables["params"], jax.random.key(0))
  assert float(jnp.abs(nn.meta.unbox(grads)["embedding"]["kernel"]).sum()) > 0
  loss(variables["params"], jax.random.key(1))
  assert loss._cache_size() == 1


def test_in_a_tower_model_config():
  cfg = models.model_config(image="mu/8", text="mu", image_size=32, vocab_size=40, max_len=8)
  cfg.encoders.image.patch_dropout = 0.5
  model = models.make_model(cfg)
  variables = model.init(jax.random.key(0), model.dummy_batch(2), train=False)
  emb, _ = model.apply(
    variables, model.dummy_batch(2), train=True, rngs={"dropout": jax.random.key(1)}
  )
  assert emb["image"].shape == (2, cfg.embed_dim)


@pytest.mark.parametrize("bad", [1.0, -0.1, True, "0.5"])
def test_bad_fraction(bad):
  with pytest.raises(ValueError, match="ViT patch_dropout must be a fraction in \\[0, 1\\)"):
    _vit(bad)
