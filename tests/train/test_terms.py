"""Objectives of several terms: the weighted sum of the terms, value and gradient, on 8 devices;
the caption term (GradCache exact for it too); the terms' metrics."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from contrastive import losses
from contrastive import models
from contrastive import parallel
from contrastive.train import step as step_lib
from contrastive.train import terms as terms_lib

FAST = {"xla_backend_optimization_level": 0}
VOCAB = 64


def _towers(convention="siglip"):
  cfg = models.model_config(
    image="mu/8",
    text="mu",
    image_size=16,
    vocab_size=VOCAB,
    max_len=8,
    embed_dim=16,
    convention=convention,
  )
  return models.make_model(cfg)


class Captioner(nn.Module):
  """A tower model with a stand-in decoder: the logits of token l+1 from token l and the
  image's embedding (causal by construction), as a CoCa model returns them."""

  towers: models.TowerModel
  has_decoder = True

  @property
  def modalities(self):
    return self.towers.modalities

  def dummy_batch(self, n=1):
    return self.towers.dummy_batch(n)

  @nn.compact
  def __call__(self, batch, *, train):
    emb, extras = self.towers(batch, train=train)
    if "image" in batch and "text" in batch:
      tokens = nn.Embed(VOCAB, 16, name="tok")(batch["text"][:, :-1])
      hidden = tokens + nn.Dense(16, name="img")(emb["image"])[:, None, :]
      extras["caption_logits"] = nn.Dense(VOCAB, name="out")(jnp.tanh(hidden))
    return emb, extras


def _params(model, mesh):
  init = lambda: model.init(jax.random.key(0), model.dummy_batch(1), train=False)
  shardings = parallel.logical_shardings(jax.eval_shape(init), mesh)["params"]
  params = jax.jit(lambda: nn.unbox(init())["params"], out_shardings=shardings)()
  return params, shardings


def _batch(mesh, n=32):
  rng = np.random.default_rng(0)
  text = rng.integers(1, VOCAB, size=(n, 8)).astype(np.int32)
  text[::3, 5:] = 0  # padding at the end of every third caption
  batch = {"image": rng.normal(size=(n, 16, 16, 3)).astype(np.float32), "text": text}
  return jax.device_put(batch, parallel.batch_sharding(mesh))


def _grad(model, objective, mesh, params, shardings, batch, **config):
  config = step_lib.StepConfig(modalities=("image", "text"), **config)
  grad_fn = step_lib.make_grad_fn(model, objective, mesh, config, shardings)
  with parallel.use_rules(mesh):
    return jax.jit(grad_fn, compiler_options=FAST)(params, batch, jax.random.key(1))


def _close(a, b, rtol=2e-5):
  """To float32 rounding of sums in another order, relative to the largest gradient (a leaf
  whose gradient is zero holds rounding noise only)."""
  scale = max(float(np.abs(y).max()) for y in jax.tree.leaves(b))
  close = lambda x, y: np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * scale)
  jax.tree.map(close, a, b)


@pytest.mark.parametrize("accum_steps", [1, 2])
def test_two_terms_are_the_weighted_sum_of_each(accum_steps):
  """0.3 softmax + 0.5 sigmoid, computed as one objective, equals the two computed alone."""
  mesh = parallel.make_mesh()
  model = _towers()
  params, shardings = _params(model, mesh)
  batch = _batch(mesh)
  softmax, sigmoid = losses.get("softmax"), losses.get("sigmoid")
  both = _grad(
    model,
    softmax,
    mesh,
    params,
    shardings,
    batch,
    weight=0.3,
    terms=(terms_lib.RingTerm("sig", sigmoid, weight=0.5),),
    accum_steps=accum_steps,
  )
  (loss, (_, _, values)), grads = both
  (l1, _), g1 = _grad(model, softmax, mesh, params, shardings, batch)
  (l2, _), g2 = _grad(model, sigmoid, mesh, params, shardings, batch)
  np.testing.assert_allclose(values["softmax"], l1, rtol=1e-5)
  np.testing.assert_allclose(values["sig"], l2, rtol=1e-5)
  np.testing.assert_allclose(loss, 0.3 * l1 + 0.5 * l2, rtol=1e-5)
  _close(grads, jax.tree.map(lambda a, b: 0.3 * a + 0.5 * b, g1, g2))


def test_caption_term_is_the_decoder_cross_entropy_and_gradcache_keeps_it_exact():
  """softmax + 2 caption: the caption value is `caption_loss` of the model's logits (padding
  not counted), and two micro-batches give the one-batch value and gradient."""
  mesh = parallel.make_mesh()
  model = Captioner(_towers("clip"))
  params, shardings = _params(model, mesh)
  batch = _batch(mesh)
  caption = terms_lib.CaptionTerm("caption", weight=2.0, label_smoothing=0.1)
  results = {
    k: _grad(
      model, losses.get("softmax"), mesh, params, shardings, batch, terms=(caption,), accum_steps=k
    )
    for k in (1, 2)
  }
  (loss, (_, _, values)), grads = results[1]
  emb, extras = model.apply(
    {"params": params}, batch, train=True, rngs={"dropout": jax.random.key(1)}
  )
  expected = losses.caption_loss(
    extras["caption_logits"], batch["text"][:, 1:], label_smoothing=0.1
  )
  np.testing.assert_allclose(values["caption"], expected, rtol=1e-5)
  np.testing.assert_allclose(loss, values["softmax"] + 2.0 * values["caption"], rtol=1e-6)
  (loss_k, (_, _, values_k)), grads_k = results[2]
  np.testing.assert_allclose(loss_k, loss, rtol=1e-5)
  np.testing.assert_allclose(values_k["caption"], values["caption"], rtol=1e-5)
  _close(grads_k, grads)
  assert float(jnp.abs(grads["out"]["kernel"]).max()) > 0  # the decoder learns from it


def test_one_term_has_no_per_term_metrics():
  assert terms_lib.values_metrics({"softmax": 1.0}) == {}
  assert terms_lib.values_metrics({"softmax": 1.0, "caption": 2.0}) == {
    "loss/softmax": 1.0,
    "loss/caption": 2.0,
  }


def test_a_teacher_needs_a_loss_that_reads_teacher_embeddings():
  with pytest.raises(ValueError, match=r"loss\.terms\.t: loss 'sigmoid' reads no teacher.*distill"):
    terms_lib.teacher_of("t", {"teacher": "ema", "momentum": 0.9}, losses.get("sigmoid"))
  with pytest.raises(ValueError, match=r"loss\.terms\.t\.momentum must be a number in \[0, 1\]"):
    terms_lib.teacher_of("t", {"teacher": "ema"}, losses.get("distill"))
  with pytest.raises(ValueError, match=r"loss\.terms\.t\.teacher_from must name"):
    terms_lib.teacher_of("t", {"teacher": "frozen"}, losses.get("distill"))
  with pytest.raises(ValueError, match=r"loss\.terms\.t\.teacher must be one of"):
    terms_lib.teacher_of("t", {"teacher": "best"}, losses.get("distill"))
  ema = terms_lib.teacher_of("t", {"teacher": "ema", "momentum": 0.995}, losses.get("distill"))
  assert ema == terms_lib.Teacher("ema", momentum=0.995)


def test_caption_term_options_are_checked():
  with pytest.raises(ValueError, match=r"loss\.terms\.cap: a caption term takes .* 'smoothing'"):
    terms_lib.caption_term("cap", {"name": "caption", "smoothing": 0.1})
  with pytest.raises(ValueError, match=r"label_smoothing must be a number in \[0, 1\)"):
    terms_lib.caption_term("cap", {"name": "caption", "label_smoothing": 1.0})


def test_one_term_is_the_plain_loss_bitwise():
  """`loss.name` alone (weight 1, no terms) is the step as it was before terms: the loss of the
  embeddings and its gradient, the same bits."""
  mesh = parallel.make_mesh()
  model = _towers("clip")
  params, shardings = _params(model, mesh)
  batch = _batch(mesh)
  objective = losses.get("softmax")
  (loss, (_, _, values)), grads = _grad(model, objective, mesh, params, shardings, batch)
  loss_fn = step_lib.make_loss_fn(
    objective, mesh, step_lib.StepConfig(modalities=("image", "text"))
  )

  def plain(p):
    emb, extras = model.apply({"params": p}, batch, train=True, rngs={"dropout": jax.random.key(1)})
    return loss_fn([emb["image"], emb["text"]], extras["scale"], extras["bias"], {})

  with parallel.use_rules(mesh):
    want, want_grads = jax.jit(jax.value_and_grad(plain), compiler_options=FAST)(params)
  np.testing.assert_array_equal(loss, want)
  assert values == {"softmax": loss}
  jax.tree.map(np.testing.assert_array_equal, grads, want_grads)
