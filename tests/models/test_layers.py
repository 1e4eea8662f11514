"""Tests for contrastive/models/layers.py: blocks, scan vs unrolled, remat, stochastic depth."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from contrastive import models
from contrastive.models import layers

WIDTH, HEADS, MLP, DEPTH = 16, 2, 32, 2


def key(seed):
  return jax.random.key(seed, impl="unsafe_rbg")  # compiles much faster than threefry on CPU


def _encoder(**kw):
  return models.Encoder(depth=DEPTH, num_heads=HEADS, mlp_dim=MLP, **kw)


@functools.cache
def _apply_fn(train=False, **kw):
  module = _encoder(**kw)

  def apply(params, x, rng):
    return module.apply({"params": params}, x, train=train, rngs={"dropout": rng})

  return jax.jit(apply)


@functools.cache
def _grad_fn(**kw):
  module = _encoder(**kw)
  return jax.jit(jax.grad(lambda p, x: jnp.sum(module.apply({"params": p}, x, train=False) ** 2)))


@pytest.fixture(scope="module")
def x():
  return np.random.default_rng(1).normal(size=(2, 5, WIDTH)).astype(np.float32)


@pytest.fixture(scope="module")
def unrolled_params(x):
  init = jax.jit(lambda r, x: _encoder().init(r, x, train=False))
  return nn.unbox(init(key(0), x))["params"]


@pytest.fixture(scope="module")
def unrolled_out(x, unrolled_params):
  return _apply_fn()(unrolled_params, x, key(0))


@pytest.fixture(scope="module")
def unrolled_grads(x, unrolled_params):
  return _grad_fn()(unrolled_params, x)


def _assert_grads_close(actual, expected):
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(actual), jax.tree.leaves(expected)):
    tol = 1e-5 * max(1.0, float(jnp.abs(b).max()))  # float reassociation only
    assert float(jnp.abs(a - b).max()) <= tol, jax.tree_util.keystr(path)


def test_activations():
  x = jnp.linspace(-3, 3, 7)
  np.testing.assert_allclose(layers.ACTIVATIONS["quick_gelu"](x), x * jax.nn.sigmoid(1.702 * x))
  np.testing.assert_allclose(layers.ACTIVATIONS["gelu"](x), jax.nn.gelu(x, approximate=False))
  assert not np.allclose(
    layers.ACTIVATIONS["gelu"](x), layers.ACTIVATIONS["gelu_tanh"](x), atol=1e-6, rtol=0
  )


def test_stack_unstack_roundtrip(unrolled_params):
  stacked = models.stack_layers(unrolled_params)
  assert set(stacked) == {"encoderblock"}
  assert stacked["encoderblock"]["mlp"]["fc1"]["kernel"].shape == (DEPTH, WIDTH, MLP)
  back = models.unstack_layers(stacked)
  jax.tree.map(np.testing.assert_array_equal, back, unrolled_params)


def test_scan_and_unrolled_give_the_same_outputs(x, unrolled_params, unrolled_out):
  scanned = _apply_fn(scan=True)(models.stack_layers(unrolled_params), x, key(0))
  np.testing.assert_allclose(scanned, unrolled_out, rtol=1e-5, atol=1e-5)


def test_scanned_params_have_the_layers_axis(x):
  abstract = jax.eval_shape(lambda r: _encoder(scan=True).init(r, x, train=False), key(0))
  box = abstract["params"]["encoderblock"]["attn"]["query"]["kernel"]
  assert box.names == ("layers", "embed", "heads", "kv")
  assert box.value.shape == (DEPTH, WIDTH, HEADS, WIDTH // HEADS)


def test_remat_does_not_change_gradients(x, unrolled_params, unrolled_grads):
  _assert_grads_close(_grad_fn(remat="full")(unrolled_params, x), unrolled_grads)
  # Scanned with another policy: the same gradients, in the stacked layout.
  scanned = _grad_fn(remat="dots", scan=True)(models.stack_layers(unrolled_params), x)
  _assert_grads_close(scanned, models.stack_layers(unrolled_grads))


def test_stochastic_depth_and_dropout(x, unrolled_params, unrolled_out):
  options = dict(stoch_depth=0.5, dropout=0.1)
  evaluated = _apply_fn(**options)(unrolled_params, x, key(0))
  np.testing.assert_allclose(evaluated, unrolled_out, rtol=1e-5)  # inactive at inference
  train = _apply_fn(train=True, **options)
  a, b = train(unrolled_params, x, key(3)), train(unrolled_params, x, key(4))
  assert a.shape == x.shape and not np.allclose(a, b)


def test_scanned_training_with_remat_and_stochastic_depth(x, unrolled_params):
  module = _encoder(scan=True, remat="full", stoch_depth=0.2, dropout=0.1)
  params = models.stack_layers(unrolled_params)
  loss = lambda p, r: jnp.sum(module.apply({"params": p}, x, train=True, rngs={"dropout": r}))
  grads = jax.jit(jax.grad(loss))(params, key(0))
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))


def test_drop_path():
  x = jnp.ones((1000, 3))
  y = jax.jit(layers.drop_path)(x, 0.25, key(0))
  kept = y[:, 0] != 0
  assert 0.65 < kept.mean() < 0.85
  np.testing.assert_allclose(y[kept], 1 / 0.75, rtol=1e-6)
  assert bool(jnp.all((y == 0).all(axis=1) | (y != 0).all(axis=1)))  # whole examples dropped


def test_attention_mask():
  attn = layers.Attention(num_heads=2)
  x = np.random.default_rng(0).normal(size=(1, 4, 8)).astype(np.float32)
  params = jax.jit(attn.init)(key(1), x, x)

  @jax.jit
  def masked_and_sliced(params, x):
    mask = jnp.array([True, True, False, False])[None, None, None, :]
    return attn.apply(params, x, x, mask), attn.apply(params, x, x[:, :2])

  masked, sliced = masked_and_sliced(params, x)
  np.testing.assert_allclose(masked, sliced, rtol=1e-5, atol=1e-6)


def test_dense_general_shapes_and_names():
  dense = layers.DenseGeneral(features=(2, 3), kernel_names=("embed", "heads", "kv"))
  x = jnp.ones((4, 5, 8))
  variables = jax.eval_shape(dense.init, key(0), x)
  assert variables["params"]["kernel"].names == ("embed", "heads", "kv")
  assert variables["params"]["bias"].names == ("heads", "kv")
  assert jax.eval_shape(dense.apply, variables, x).shape == (4, 5, 2, 3)


def test_option_errors():
  with pytest.raises(ValueError, match="Unknown ViT remat policy 'some'.*'dots'"):
    models.ViT("mu/8", remat="some")
  with pytest.raises(ValueError, match="Unknown ViT activation 'swish'.*'quick_gelu'"):
    models.ViT("mu/8", act="swish")
  with pytest.raises(ValueError, match="ViT stoch_depth must be a float in"):
    models.ViT("mu/8", stoch_depth=1.0)
  with pytest.raises(ValueError, match="Unknown dtype 'bf17'"):
    models.ViT("mu/8", dtype="bf17")
