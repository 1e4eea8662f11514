"""Tests for contrastive/models/mlp.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from contrastive import models


def key(seed):
  return jax.random.key(seed, impl="unsafe_rbg")  # compiles much faster than threefry on CPU


@pytest.mark.parametrize("depth", [0, 2])
def test_shapes_and_dtypes(depth):
  enc = models.MLPEncoder(in_features=5, width=8, depth=depth, dtype="bfloat16")
  x = jnp.ones((3, 5))
  variables = jax.eval_shape(lambda r: enc.init(r, x, train=False), key(0))
  out, aux = jax.eval_shape(lambda v: enc.apply(v, x, train=False), variables)
  assert out.shape == (3, 8) and out.dtype == jnp.bfloat16 and aux == {}
  assert enc.dummy_input(4).shape == (4, 5)


def test_runs_with_dropout():
  enc = models.MLPEncoder(in_features=5, width=8, depth=1, dropout=0.5)
  x = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
  variables = jax.jit(lambda r: enc.init(r, x, train=False))(key(1))
  run = jax.jit(lambda v, r: enc.apply(v, x, train=True, rngs={"dropout": r})[0])
  a, b = run(variables, key(2)), run(variables, key(3))
  assert np.isfinite(a).all() and not np.allclose(a, b)


def test_errors():
  with pytest.raises(ValueError, match="MLPEncoder needs in_features, a positive int; got None"):
    models.MLPEncoder()
  enc = models.MLPEncoder(in_features=5)
  with pytest.raises(ValueError, match=r"inputs of shape \[batch, 5\], got \(3, 4\)"):
    jax.eval_shape(lambda r: enc.init(r, jnp.ones((3, 4)), train=False), key(0))
