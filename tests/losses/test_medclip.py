"""MedCLIP's semantic-matching targets in the soft-target kernel: ring against the reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from contrastive import losses
from tests.losses import loss_testing as lt

B, D, SCALE = 24, 8, 7.0


def multi_hot(seed=0, findings=5):
  labels = jax.random.bernoulli(jax.random.key(seed), 0.4, (B, findings)).astype(jnp.float32)
  return labels.at[0].set(0.0)  # one sample with no finding: cosine 0 with every other


@pytest.mark.parametrize(
  "n_devices, block_size, temperature", [(1, 5, None), (2, 7, 0.5), (4, None, 0.2), (8, 2, 1.0)]
)
def test_matches_reference(n_devices, block_size, temperature):
  x, y = lt.unit_embeddings(0, B, D)
  objective = losses.get("medclip")
  side = {"findings": multi_hot()}
  options = {} if temperature is None else {"label_temperature": temperature}
  lt.assert_matches_reference(
    lambda x, y, s, side, **kw: objective([x, y], s, None, side, **kw),
    lambda x, y, s, side, **kw: objective.dense([x, y], s, None, side, **kw),
    (x, y, SCALE, side),
    argnums=(0, 1, 2),
    n_devices=n_devices,
    block_size=block_size,
    **options,
  )


def test_targets_by_hand():
  """The loss equals the symmetric cross-entropy against softmax_j(cos(l_i, l_j) / tau'), written
  out; distinct one-hot labels at a small tau' give CLIP's softmax loss."""
  x, y = lt.unit_embeddings(1, B, D)
  labels, tau = multi_hot(1), 0.3
  unit = labels / jnp.maximum(jnp.linalg.norm(labels, axis=1, keepdims=True), 1e-30)
  q = jax.nn.softmax(unit @ unit.T / tau, axis=1)
  logits = SCALE * x @ y.T
  want = -(
    jnp.sum(q * jax.nn.log_softmax(logits, axis=1)) + jnp.sum(q.T * jax.nn.log_softmax(logits, 0))
  ) / (2 * B)
  fn = jax.jit(
    lambda x, y, labels, tau: losses.soft_target_loss(
      x, y, SCALE, {"findings": labels}, targets=losses.medclip_targets(tau), space="logits"
    ),
    static_argnums=3,
  )
  np.testing.assert_allclose(fn(x, y, labels, tau), want, rtol=1e-5)
  sharp = fn(x, y, jnp.eye(B), 1e-3)
  np.testing.assert_allclose(sharp, jax.jit(losses.softmax_loss)(x, y, SCALE), rtol=1e-5)


def test_errors():
  x, y = lt.unit_embeddings(2, B, D)
  objective = losses.get("medclip")
  with pytest.raises(KeyError, match="findings"):
    objective([x, y], SCALE, None, {})
  with pytest.raises(ValueError, match="multi-hot"):
    objective([x, y], SCALE, None, {"findings": jnp.arange(B)})
  with pytest.raises(ValueError, match="temperature"):
    losses.medclip_targets(0.0)
