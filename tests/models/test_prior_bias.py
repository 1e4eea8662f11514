"""Tests for contrastive/models/towers.py `prior_bias`: the sigmoid loss's bias at the prior of a
positive, and configs/loss_zoo.py starting SigLIP's bias there (docs/losses.md, "SigLIP at a
small batch")."""

import importlib.util
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from contrastive import losses
from contrastive import models
from contrastive.models import towers

ZOO = pathlib.Path(__file__).parents[2] / "configs" / "loss_zoo.py"


@pytest.mark.parametrize("batch", [2, 16, 128, 32_768])
def test_prior_bias_is_the_log_odds_of_one_positive_in_the_batch(batch):
  b0 = towers.prior_bias(batch)
  np.testing.assert_allclose(1 / (1 + math.exp(-b0)), 1 / batch, rtol=1e-12)


def test_siglips_minus_ten_is_the_prior_of_a_batch_of_about_22000():
  np.testing.assert_allclose(towers.prior_bias(22_027), -10.0, atol=1e-4)
  np.testing.assert_allclose(towers.prior_bias(32_768), -math.log(32_767), rtol=1e-12)
  np.testing.assert_allclose(towers.prior_bias(128), -4.844187, rtol=1e-6)


def _bias_grad(batch, bias):
  """d(sigmoid loss)/d(bias) with every pair's cosine 0 (x_i = e_i, y_j = e_{B+j})."""
  eye = jnp.eye(2 * batch)
  x, y = eye[:batch], eye[batch:]
  return float(jax.grad(losses.sigmoid_loss, argnums=3)(x, y, 10.0, jnp.float32(bias)))


@pytest.mark.parametrize("batch", [16, 128])
def test_at_the_prior_the_negatives_pull_as_hard_as_the_positive(batch):
  # dL/db = -(1 - s) + (B - 1) s with s = sigmoid(b): zero at the prior.
  np.testing.assert_allclose(_bias_grad(batch, towers.prior_bias(batch)), 0.0, atol=1e-5)
  # From SigLIP's -10 the positive's pull is almost all there is: (B - 1) e^-10 against 1.
  s = 1 / (1 + math.exp(10.0))
  np.testing.assert_allclose(_bias_grad(batch, -10.0), -(1 - s) + (batch - 1) * s, rtol=1e-5)
  assert _bias_grad(batch, -10.0) < -0.99


@pytest.mark.parametrize("bad", [1, 0, -4, 2.5, True, "128"])
def test_prior_bias_refuses_a_batch_without_negatives_or_not_an_int(bad):
  with pytest.raises(ValueError, match="global batch size of at least 2") as info:
    towers.prior_bias(bad)
  assert "\n" not in str(info.value)


def _zoo(arg):
  spec = importlib.util.spec_from_file_location("loss_zoo", ZOO)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


@pytest.mark.parametrize("loss", ["sigmoid", "sigmoid_focal"])
@pytest.mark.parametrize("batch", [32, 128])
def test_loss_zoo_starts_the_sigmoid_bias_at_the_batchs_prior(loss, batch):
  config = _zoo(f"loss={loss},batch_size={batch}")
  model = models.make_model(config.model)
  assert model.bias_init == pytest.approx(-math.log(batch - 1), rel=1e-12)
  assert model.scale_init == pytest.approx(10.0)  # SigLIP's scale is kept


def test_loss_zoo_runlocal_uses_its_own_batch_and_softmax_has_no_bias():
  config = _zoo("loss=sigmoid,runlocal")
  assert config.model.bias_init == pytest.approx(-math.log(config.data.batch_size - 1))
  assert models.make_model(_zoo("loss=softmax").model).bias_init is None
