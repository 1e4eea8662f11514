"""Alignment/uniformity and the contrastive gap's CUA/CUAXU: ring against the dense reference."""

import jax
import numpy as np
import pytest

from contrastive import losses
from contrastive.losses import reference
from tests.losses import loss_testing as lt

B, D, SCALE = 24, 8, 7.0


@pytest.mark.parametrize(
  "name, options, n_devices, block_size",
  [
    ("align_uniform_loss", {}, 1, 5),
    ("align_uniform_loss", {"alpha": 1.0, "t": 3.0, "lam": 0.5}, 8, 2),
    ("contrastive_gap_loss", {}, 8, 2),
    ("contrastive_gap_loss", {"variant": "cua"}, 1, 7),
  ],
)
def test_matches_reference(name, options, n_devices, block_size):
  x, y = lt.unit_embeddings(0, B, D)
  args, argnums = ((x, y), (0, 1)) if name == "align_uniform_loss" else ((x, y, SCALE), (0, 1, 2))
  lt.assert_matches_reference(
    getattr(losses, name),
    getattr(reference, name),
    args,
    argnums=argnums,
    n_devices=n_devices,
    block_size=block_size,
    **options,
  )


def test_gap_terms():
  """CUA = CLIP + align_uniform (lam=1); CUAXU - CUA = the cross-modal log-mean-exp."""
  x, y = lt.unit_embeddings(1, B, D)

  @jax.jit
  def terms(x, y):
    return (
      losses.contrastive_gap_loss(x, y, SCALE, variant="cua", block_size=5),
      losses.contrastive_gap_loss(x, y, SCALE, block_size=5),
      losses.softmax_loss(x, y, SCALE) + losses.align_uniform_loss(x, y),
    )

  cua, cuaxu, clip_plus_au = terms(x, y)
  np.testing.assert_allclose(cua, clip_plus_au, rtol=1e-5)
  x64, y64 = np.asarray(x, np.float64), np.asarray(y, np.float64)
  d2 = ((x64[:, None] - y64[None]) ** 2).sum(-1)
  cross = np.log(np.exp(-2 * d2)[~np.eye(B, dtype=bool)].mean())
  np.testing.assert_allclose(cuaxu - cua, cross, atol=1e-5)


def test_extreme_inputs():
  """Identical embeddings: perfect alignment (0), worst uniformity (log 1 = 0); all finite."""
  values_and_grads = lt.grad_fn(
    lambda x, y, s: (
      losses.align_uniform_loss(x, y, alpha=1.0, block_size=5)
      + losses.contrastive_gap_loss(x, y, s, alpha=1.0, block_size=5)
    ),
    (0, 1, 2),
  )
  for x, y in lt.extreme_cases(B, D):
    lt.assert_finite(values_and_grads(x, y, 100.0))
  same, _ = lt.extreme_cases(B, D)[0]
  np.testing.assert_allclose(jax.jit(losses.align_uniform_loss)(same, same), 0.0, atol=1e-5)


def test_registry():
  x, y = lt.unit_embeddings(3, B, D)
  both = jax.jit(
    lambda x, y: (
      losses.get("contrastive_gap")([x, y], SCALE, None, {}),
      losses.contrastive_gap_loss(x, y, SCALE),
      losses.get("align_uniform")([x, y], SCALE, None, {}, t=3.0),
      losses.align_uniform_loss(x, y, t=3.0),
    )
  )
  gap, gap_direct, au, au_direct = both(x, y)
  lt.assert_close(gap, gap_direct)
  lt.assert_close(au, au_direct)


def test_errors():
  x, y = lt.unit_embeddings(4, B, D)
  with pytest.raises(ValueError, match="variant"):
    losses.contrastive_gap_loss(x, y, SCALE, variant="cuax")
  with pytest.raises(ValueError, match="alpha"):
    losses.align_uniform_loss(x, y, alpha=0.0)
  with pytest.raises(ValueError, match="`t`"):
    losses.align_uniform_loss(x, y, t=-1.0)
  with pytest.raises(ValueError, match="global batch of at least 2"):
    losses.align_uniform_loss(x[:1], y[:1])
  with pytest.raises(ValueError, match=r"\[batch, dim\]"):
    losses.contrastive_gap_loss(x[0], y[0], SCALE)
