"""SupCon and multi-positive InfoNCE: ring against the dense reference, the softmax special case."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from contrastive import losses
from contrastive.losses import reference
from tests.losses import loss_testing as lt

B, D, SCALE = 24, 8, 7.0
LABELS = jax.random.randint(jax.random.key(1), (B,), 0, 5)  # repeated labels: several positives


@pytest.mark.parametrize(
  "name, options, n_devices, block_size",
  [
    ("supcon_loss", {}, 1, 5),
    ("supcon_loss", {"intra_modal": True}, 8, 2),
    ("multi_positive_loss", {}, 8, 2),
  ],
)
def test_matches_reference(name, options, n_devices, block_size):
  x, y = lt.unit_embeddings(0, B, D)
  lt.assert_matches_reference(
    getattr(losses, name),
    getattr(reference, name),
    (x, y, SCALE, LABELS),
    argnums=(0, 1, 2),
    n_devices=n_devices,
    block_size=block_size,
    **options,
  )


def test_distinct_labels_give_the_softmax_loss():
  x, y = lt.unit_embeddings(1, B, D)
  distinct = jnp.arange(B)

  @jax.jit
  def all_three(x, y):
    return (
      losses.supcon_loss(x, y, SCALE, distinct, block_size=5),
      losses.multi_positive_loss(x, y, SCALE, distinct, block_size=5),
      losses.softmax_loss(x, y, SCALE),
    )

  supcon, multi, softmax = all_three(x, y)
  np.testing.assert_allclose(supcon, softmax, rtol=1e-5)
  np.testing.assert_allclose(multi, softmax, rtol=1e-5)


def test_captions_of_one_image_are_positives_of_each_other():
  """Two captions per image, the image repeated: multi_positive counts both captions (and both
  copies of the image) as positives, so swapping the captions of an image changes nothing."""
  images, captions = lt.unit_embeddings(2, B, D)
  images = jnp.repeat(images[: B // 2], 2, axis=0)
  image_ids = jnp.repeat(jnp.arange(B // 2), 2)
  swapped = captions.reshape(B // 2, 2, D)[:, ::-1].reshape(B, D)
  fn = jax.jit(lambda c: losses.multi_positive_loss(images, c, SCALE, image_ids, block_size=5))
  np.testing.assert_allclose(fn(captions), fn(swapped), rtol=1e-5)


def test_extreme_inputs_stay_finite():
  values_and_grads = lt.grad_fn(
    lambda x, y, s: (
      losses.supcon_loss(x, y, s, LABELS, intra_modal=True, block_size=5)
      + losses.multi_positive_loss(x, y, s, LABELS, block_size=5)
    ),
    (0, 1, 2),
  )
  for x, y in lt.extreme_cases(B, D):
    lt.assert_finite(values_and_grads(x, y, 100.0))


def test_registry():
  x, y = lt.unit_embeddings(3, B, D)
  both = jax.jit(
    lambda x, y: (
      losses.get("supcon")([x, y], SCALE, None, {"labels": LABELS}),
      losses.supcon_loss(x, y, SCALE, LABELS),
    )
  )
  lt.assert_close(*both(x, y))
  with pytest.raises(KeyError, match="labels"):
    losses.get("multi_positive")([x, y], SCALE, None, {})


def test_errors():
  x, y = lt.unit_embeddings(4, B, D)
  with pytest.raises(TypeError, match="integer"):
    losses.supcon_loss(x, y, SCALE, jnp.zeros(B))
  with pytest.raises(ValueError, match="labels"):
    losses.multi_positive_loss(x, y, SCALE, LABELS[:-1])
