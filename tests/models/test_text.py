"""Tests for contrastive/models/text.py: shapes, padding invariance, causality, errors."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from contrastive import models
from contrastive.models import sizes

VOCAB, MAX_LEN = 64, 8
POOLS = ("eot", "last", "mean")


def key(seed):
  return jax.random.key(seed, impl="unsafe_rbg")  # compiles much faster than threefry on CPU


def _model(causal, pool="last", **kw):
  return models.TextTransformer(
    "mu", depth=2, vocab_size=VOCAB, max_len=MAX_LEN, causal=causal, pool=pool, **kw
  )


@functools.cache
def _params(causal):
  model = _model(causal)
  init = jax.jit(lambda r: model.init(r, jnp.zeros((1, MAX_LEN), jnp.int32), train=False))
  return nn.unbox(init(key(0)))["params"]


@functools.cache
def _encode_fn(causal):
  """One compiled function giving every pooling and the token outputs, for the same params."""

  def encode(params, tokens):
    pooled = {
      pool: _model(causal, pool).apply({"params": params}, tokens, train=False)[0] for pool in POOLS
    }
    return pooled, _model(causal).apply({"params": params}, tokens, train=False)[1]["tokens"]

  return jax.jit(encode)


def _encode(causal, tokens):
  return _encode_fn(causal)(_params(causal), jnp.asarray(tokens, jnp.int32))


TEXTS = np.array(
  [
    [5, 9, 3, 63, 0, 0, 0, 0],  # 63, the largest id, ends the text ("eot")
    [7, 63, 0, 0, 0, 0, 0, 0],
  ]
)


@pytest.mark.parametrize("name", sorted(sizes.TEXT_SIZES))
def test_output_shapes_and_dtypes_per_size(name):
  model = models.TextTransformer(name, vocab_size=VOCAB, max_len=MAX_LEN, scan=True)
  tokens = jax.ShapeDtypeStruct((2, 5), jnp.int32)
  variables = jax.eval_shape(
    lambda r: model.init(r, jnp.zeros((2, 5), jnp.int32), train=False), key(0)
  )
  pooled, aux = jax.eval_shape(lambda v, t: model.apply(v, t, train=False), variables, tokens)
  width = sizes.TEXT_SIZES[name].width
  assert pooled.shape == (2, width) and pooled.dtype == jnp.float32
  assert aux["tokens"].shape == (2, 5, width)


@pytest.mark.parametrize("causal", [True, False])
def test_padding_does_not_change_the_embedding(causal):
  long, _ = _encode(causal, TEXTS)
  short, _ = _encode(causal, TEXTS[:, :5])
  for pool in POOLS:
    np.testing.assert_allclose(short[pool], long[pool], rtol=1e-5, atol=1e-6, err_msg=pool)
  # Pooling reads the end-of-text token: "eot" (largest id) and "last" (last non-padding) agree.
  np.testing.assert_allclose(long["eot"], long["last"], rtol=1e-6)
  assert not np.allclose(long["mean"], long["last"], atol=1e-3)


def test_causal_mask_is_causal():
  tokens = np.array([[5, 9, 3, 11, 12, 13, 14, 63]])
  changed = tokens.copy()
  changed[0, 4] = 40
  _, before = _encode(True, tokens)
  _, after = _encode(True, changed)
  np.testing.assert_allclose(after[:, :4], before[:, :4], rtol=1e-5)  # earlier tokens: unchanged
  assert not np.allclose(after[:, 4:], before[:, 4:], atol=1e-4)  # the token and later: not
  _, before = _encode(False, tokens)
  _, after = _encode(False, changed)
  assert not np.allclose(after[:, :4], before[:, :4], atol=1e-4)  # bidirectional sees it


def test_no_padding_mode_sees_every_position():
  model = _model(False, pad_id=None)
  pooled, _ = jax.jit(lambda p, t: model.apply({"params": p}, t, train=False))(
    _params(False), jnp.asarray(TEXTS, jnp.int32)
  )
  long, _ = _encode(False, TEXTS)
  assert not np.allclose(pooled, long["last"], atol=1e-4)  # pools the last position, a pad


def test_text_longer_than_the_position_table():
  model = _model(True)
  with pytest.raises(
    ValueError,
    match=r"Text of length 9 is longer than the position table "
    r"\(max_len=8\)",
  ):
    jax.eval_shape(lambda r: model.init(r, jnp.zeros((1, 9), jnp.int32), train=False), key(0))


def test_bad_inputs_and_options():
  model = _model(True)
  with pytest.raises(ValueError, match=r"int token ids of shape \[batch, seq_len\], got float32"):
    jax.eval_shape(lambda r: model.init(r, jnp.zeros((1, 4)), train=False), key(0))
  with pytest.raises(ValueError, match="needs vocab_size, a positive int; got None"):
    models.TextTransformer("mu", max_len=8)
  with pytest.raises(ValueError, match="Unknown text pool 'cls'.*'eot'"):
    models.TextTransformer("mu", vocab_size=8, max_len=8, pool="cls")
