"""Hard-negative InfoNCE, own and shared (NegCLIP) negatives: ring against the dense reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from contrastive import losses
from contrastive.losses import reference
from tests.losses import loss_testing as lt

B, D, SCALE = 24, 8, 7.0


def negatives(seed, k):
  return jnp.stack(lt.unit_embeddings(seed, B, D, n=k), axis=1)  # [B, k, D]


@pytest.mark.parametrize(
  "shared, with_neg_x, n_devices, block_size",
  [
    (False, False, 1, 5),
    (False, True, 8, 2),
    (True, True, 8, 2),
    (True, False, 1, 7),
  ],
)
def test_matches_reference(shared, with_neg_x, n_devices, block_size):
  """Value and gradients in x, y, scale and both sets of hard negatives."""
  x, y = lt.unit_embeddings(0, B, D)
  args = (x, y, SCALE, negatives(5, 3)) + ((negatives(6, 2),) if with_neg_x else ())
  lt.assert_matches_reference(
    losses.hard_negative_loss,
    reference.hard_negative_loss,
    args,
    n_devices=n_devices,
    block_size=block_size,
    shared=shared,
  )


def test_duplicated_captions_add_log_two():
  """Shared negatives equal to the captions double every x-anchor's denominator: the softmax
  loss plus log(2)/2 (the y anchors are untouched)."""
  x, y = lt.unit_embeddings(1, B, D)
  both = jax.jit(
    lambda x, y: (
      losses.hard_negative_loss(x, y, SCALE, y[:, None, :], shared=True, block_size=5),
      losses.softmax_loss(x, y, SCALE),
    )
  )
  hard, softmax = both(x, y)
  np.testing.assert_allclose(hard, softmax + np.log(2) / 2, rtol=1e-5)


def test_extreme_inputs_stay_finite():
  values_and_grads = lt.grad_fn(
    lambda x, y, s, n: (
      losses.hard_negative_loss(x, y, s, n, n, block_size=5)
      + losses.hard_negative_loss(x, y, s, n, n, shared=True, block_size=5)
    ),
    (0, 1, 2, 3),
  )
  for x, y in lt.extreme_cases(B, D):
    lt.assert_finite(values_and_grads(x, y, 100.0, jnp.stack([x, -y], axis=1)))


def test_registry():
  x, y = lt.unit_embeddings(2, B, D)
  neg_y, neg_x = negatives(5, 2), negatives(6, 1)
  side = {"neg_y": neg_y, "neg_x": neg_x}
  both = jax.jit(
    lambda x, y: (
      losses.get("hard_negative")([x, y], SCALE, None, side, shared=True),
      losses.hard_negative_loss(x, y, SCALE, neg_y, neg_x, shared=True),
    )
  )
  lt.assert_close(*both(x, y))


def test_errors():
  x, y = lt.unit_embeddings(3, B, D)
  with pytest.raises(ValueError, match=r"\[batch, k, dim\]"):
    losses.hard_negative_loss(x, y, SCALE, y)
  with pytest.raises(ValueError, match=r"\[batch, k, dim\]"):
    losses.hard_negative_loss(x, y, SCALE, negatives(5, 2)[:, :, :4])
  with pytest.raises(ValueError, match="neg_x"):
    losses.hard_negative_loss(x, y, SCALE, negatives(5, 2), negatives(5, 2)[:-1])
  with pytest.raises(TypeError, match="floating"):
    losses.hard_negative_loss(x, y, SCALE, jnp.ones((B, 2, D), jnp.int32))
