"""AMCL: the ring (top-k and all negatives) against the dense reference, its special cases, the
registry's model-free split, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from contrastive import losses
from contrastive.losses import reference
from tests.losses import loss_testing as lt

B, D, H, P = 24, 12, 3, 4
OPTIONS = {"beta": 0.05, "tau_min": 0.05, "tau_max": 1.5}


def _inputs(phi):
  x, y = lt.unit_embeddings(0, B, D)
  phi_x, phi_y = lt.unit_embeddings(1, B, P * (H if phi == "per_head" else 1))
  if phi is None:
    return (x, y)
  if phi == "per_head":
    phi_x, phi_y = phi_x.reshape(B, H, P), phi_y.reshape(B, H, P)
  return (x, y, 2.0 * phi_x, 2.0 * phi_y)


@pytest.mark.parametrize(
  "phi, top_k, n_devices, block_size",
  [
    (None, 5, 1, 5),
    ("shared", 7, 2, 5),
    ("per_head", 5, 4, 4),
    ("shared", 5, 8, 2),
    ("shared", None, 8, None),
    (None, None, 2, 3),
  ],
)
def test_matches_reference(phi, top_k, n_devices, block_size):
  args = _inputs(phi)
  lt.assert_matches_reference(
    losses.amcl_loss,
    reference.amcl_loss,
    args,
    n_devices=n_devices,
    block_size=block_size,
    num_heads=H,
    top_k=top_k,
    **OPTIONS,
  )


def test_top_k_is_capped_at_the_negatives_and_ties_go_to_the_smaller_id():
  x, y = _inputs(None)
  fn = jax.jit(
    lambda x, y, k: losses.amcl_loss(x, y, num_heads=H, top_k=k, block_size=5, **OPTIONS),
    static_argnums=2,
  )
  np.testing.assert_allclose(fn(x, y, None), fn(x, y, 100), rtol=1e-5)  # capped at B - 1
  # every negative tied: the selection follows the ids, on the ring as in jax.lax.top_k
  same = jnp.ones((B, D)) / np.sqrt(D)
  twisted = same.at[:, 0].add(jnp.arange(B) * 1e-3)  # temperatures differ, similarities tie
  args = (same, same, twisted[:, :P], twisted[:, :P])
  want = reference.amcl_loss(*args, num_heads=H, top_k=4, **OPTIONS)
  got = jax.jit(lambda *a: losses.amcl_loss(*a, num_heads=H, top_k=4, block_size=5, **OPTIONS))
  np.testing.assert_allclose(got(*args), want, rtol=1e-5)


def test_one_head_at_fixed_temperature_is_the_mean_negative_similarity():
  """tau_min ~ tau_max: a fixed temperature t; with beta = 0 the loss is
  mean_i (-s_ii + mean_{j != i} s_ij) / t, the contrastive part without the softmax."""
  x, y = _inputs(None)
  t = 0.5
  loss = losses.amcl_loss(x, y, beta=0.0, tau_min=t, tau_max=t * (1 + 1e-7))
  s = np.asarray(x, np.float64) @ np.asarray(y, np.float64).T
  negatives = (s.sum(1) - np.diag(s)) / (B - 1)
  np.testing.assert_allclose(loss, np.mean(-np.diag(s) + negatives) / t, rtol=1e-5)


def test_registry_splits_heads_and_phi_from_the_embedding():
  x, y = lt.unit_embeddings(3, B, D + P)
  options = {"num_heads": H, "top_k": 6, **OPTIONS}
  objective = losses.get("amcl")
  both = jax.jit(
    lambda x, y: (
      objective([x, y], 1.0, None, {}, phi_dim=P, phi_scale=3.0, **options),
      losses.amcl_loss(x[:, :D], y[:, :D], 3.0 * x[:, D:], 3.0 * y[:, D:], **options),
    )
  )
  lt.assert_close(*both(x, y))
  with pytest.raises(ValueError, match=r"num_heads=5 must divide dim - phi_dim = 16 - 4"):
    objective([x, y], 1.0, None, {}, phi_dim=P, num_heads=5)


def test_extreme_inputs_stay_finite():
  values_and_grads = lt.grad_fn(
    lambda x, y: losses.amcl_loss(x, y, num_heads=2, top_k=3, block_size=5), (0, 1)
  )
  for x, y in lt.extreme_cases(B, 8):
    lt.assert_finite(values_and_grads(x, y))


def test_errors():
  x, y = _inputs(None)
  with pytest.raises(ValueError, match="num_heads=5 does not divide the embedding dim 12"):
    losses.amcl_loss(x, y, num_heads=5)
  with pytest.raises(ValueError, match="top_k must be a positive int or None, got 0"):
    losses.amcl_loss(x, y, top_k=0)
  with pytest.raises(ValueError, match="phi_x/phi_y must be"):
    losses.amcl_loss(x, y, x[:, :, None], y[:, :, None], num_heads=H)
  with pytest.raises(ValueError, match="both phi_x and phi_y"):
    losses.amcl_loss(x, y, x)
  with pytest.raises(ValueError, match="0 < tau_min < tau_max"):
    losses.amcl_loss(x, y, tau_min=1.0, tau_max=0.5)
