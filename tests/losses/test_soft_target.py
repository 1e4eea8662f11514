"""Soft-target InfoNCE: ring against the dense reference for each target family, special cases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from contrastive import losses
from contrastive.losses import reference
from tests.losses import loss_testing as lt

B, D, SCALE = 24, 8, 7.0


def side_data(seed=3):
  teacher_x, teacher_y, frozen = lt.unit_embeddings(seed, B, 6, n=3)
  return {
    "frozen": frozen,
    "teacher_x": teacher_x,
    "teacher_y": teacher_y,
    "mix_lambda": jax.random.uniform(jax.random.key(seed), (B,)),
    "mix_partner": jax.random.permutation(jax.random.key(seed + 1), B).astype(jnp.int32),
  }


def one_hot_logits(tile):
  return jnp.where(tile.diagonal, 0.0, -jnp.inf)


@pytest.mark.parametrize(
  "options, n_devices, block_size",
  [
    ({"targets": losses.cwcl_targets()}, 1, 5),
    ({"targets": losses.mixup_targets(), "normalize": False}, 8, 2),
    ({"targets": losses.teacher_logits(5.0), "space": "logits"}, 8, 2),
  ],
)
def test_matches_reference(options, n_devices, block_size):
  """Value and gradients in x, y, scale and the float side data (frozen/teacher/mixing)."""
  x, y = lt.unit_embeddings(0, B, D)
  lt.assert_matches_reference(
    losses.soft_target_loss,
    reference.soft_target_loss,
    (x, y, SCALE, side_data()),
    n_devices=n_devices,
    block_size=block_size,
    **options,
  )


def test_one_hot_and_label_smoothing_give_the_softmax_loss():
  x, y = lt.unit_embeddings(1, B, D)

  @jax.jit
  def pairs(x, y):
    soft = lambda **kw: losses.soft_target_loss(x, y, SCALE, block_size=5, **kw)
    return (
      (soft(targets=losses.one_hot_targets), losses.softmax_loss(x, y, SCALE)),
      (soft(targets=one_hot_logits, space="logits"), losses.softmax_loss(x, y, SCALE)),
      (
        soft(targets=losses.label_smoothing_targets(0.1)),
        losses.softmax_loss(x, y, SCALE, label_smoothing=0.1),
      ),
    )

  for soft, softmax in pairs(x, y):
    np.testing.assert_allclose(soft, softmax, rtol=1e-5)


def test_targets_are_never_a_global_matrix():
  """A target function only ever sees tiles of at most block_size rows and columns."""
  seen = []

  def spy(tile):
    seen.append((tile.row_ids.shape[0], tile.col_ids.shape[0]))
    return losses.one_hot_targets(tile)

  x, y = lt.unit_embeddings(2, B, D)
  jax.jit(lambda x, y: losses.soft_target_loss(x, y, SCALE, targets=spy, block_size=5))(x, y)
  assert seen and all(rows <= 5 and cols <= 5 for rows, cols in seen)


def test_extreme_inputs_stay_finite():
  teacher = losses.teacher_logits()
  values_and_grads = lt.grad_fn(
    lambda x, y, s, side: (
      losses.soft_target_loss(x, y, s, side, targets=teacher, space="logits", block_size=5)
      + losses.soft_target_loss(x, y, s, side, targets=losses.cwcl_targets(), block_size=5)
    ),
    (0, 1, 2, 3),
  )
  for x, y in lt.extreme_cases(B, D):
    side = {"teacher_x": x, "teacher_y": y, "frozen": x}
    lt.assert_finite(values_and_grads(x, y, 100.0, side))


def test_registry():
  x, y = lt.unit_embeddings(4, B, D)
  side = side_data()

  @jax.jit
  def pairs(x, y):
    return (
      (
        losses.get("cwcl")([x, y], SCALE, None, side),
        losses.soft_target_loss(x, y, SCALE, side, targets=losses.cwcl_targets()),
      ),
      (
        losses.get("distill")([x, y], SCALE, None, side, teacher_scale=5.0),
        losses.soft_target_loss(
          x, y, SCALE, side, targets=losses.teacher_logits(5.0), space="logits"
        ),
      ),
      (
        losses.get("m3col")([x, y], SCALE, None, side),
        losses.soft_target_loss(x, y, SCALE, side, targets=losses.mixup_targets(), normalize=False),
      ),
    )

  for registered, direct in pairs(x, y):
    lt.assert_close(registered, direct)


def test_errors():
  x, y = lt.unit_embeddings(5, B, D)
  soft = losses.soft_target_loss
  with pytest.raises(ValueError, match="space"):
    soft(x, y, SCALE, targets=losses.one_hot_targets, space="probs")
  with pytest.raises(ValueError, match="normalize"):
    soft(x, y, SCALE, targets=one_hot_logits, space="logits", normalize=False)
  with pytest.raises(ValueError, match="leading dimension"):
    soft(x, y, SCALE, {"frozen": x[:-1]}, targets=losses.cwcl_targets())
  with pytest.raises(TypeError, match="targets"):
    soft(x, y, SCALE, targets=jnp.eye(B))
  with pytest.raises(ValueError, match="eps"):
    losses.label_smoothing_targets(1.0)
