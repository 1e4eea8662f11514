"""iSogCLR: the ring surrogate and its batch statistics against the dense reference, the
surrogate's gradient against the objective's, the moving average and the temperature step."""

import functools

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from contrastive import losses
from contrastive.losses import reference
from tests.losses import loss_testing as lt

B, D = 24, 8


def inputs(seed=0, tau_range=(0.005, 0.05)):
  """Embeddings, temperatures in the authors' range and log u near this batch's log g."""
  x, y = lt.unit_embeddings(seed, B, D)
  rng = np.random.default_rng(seed)
  tau_x, tau_y = (jnp.asarray(rng.uniform(*tau_range, B), jnp.float32) for _ in range(2))
  log_g_x, log_g_y = reference.isogclr_estimates(x, y, tau_x, tau_y)
  noise = lambda: jnp.asarray(rng.normal(0, 0.3, B), jnp.float32)
  return x, y, tau_x, tau_y, log_g_x + noise(), log_g_y + noise()


@pytest.mark.parametrize("n_devices, block_size", [(1, 5), (2, 7), (4, None), (8, 2)])
def test_loss_matches_reference(n_devices, block_size):
  _, grads = lt.assert_matches_reference(
    losses.isogclr_loss,
    reference.isogclr_loss,
    inputs(n_devices),
    n_devices=n_devices,
    block_size=block_size,
  )
  assert np.all(np.asarray(grads[2:]) == 0)  # temperatures and log u: constants
  assert np.any(np.asarray(grads[0]) != 0)


@functools.cache
def per_row(name, n_devices, block_size):
  """A batch statistic (a tuple of [B] arrays) on one device or over a ring of `n_devices`."""
  fn = functools.partial(getattr(losses, name), block_size=block_size)
  if n_devices == 1:
    return jax.jit(fn)
  mesh = lt.sub_mesh(n_devices)
  body = lambda *a: fn(*a, axis_name="data")
  return jax.jit(jax.shard_map(body, mesh=mesh, in_specs=P("data"), out_specs=P("data")))


@pytest.mark.parametrize("n_devices, block_size", [(1, 5), (2, 7), (4, None), (8, 2)])
def test_batch_statistics_match_reference(n_devices, block_size):
  args = inputs(10 + n_devices)
  got = per_row("isogclr_estimates", n_devices, block_size)(*args[:4])
  lt.assert_close(got, reference.isogclr_estimates(*args[:4]), relative_to="element", atol=1e-4)
  got = per_row("isogclr_weighted_z", n_devices, block_size)(*args)
  # exp(d / tau) at tau = 0.005 turns the similarities' float32 rounding (~1e-7) into ~2e-5.
  want = reference.isogclr_weighted_z(*args)
  lt.assert_close(got, want, relative_to="element", rtol=1e-4, atol=1e-3)


def test_gradient_is_the_objectives():
  """With u the batch's own inner mean (gamma = 1), the surrogate's gradient is that of
  (1/B) sum_i tau_i log (1/(B-1)) sum_{j != i} exp(d_ij / tau_i) (and the text side)."""
  x, y, tau_x, tau_y, _, _ = inputs(3)
  log_g_x, log_g_y = losses.isogclr_estimates(x, y, tau_x, tau_y)

  def objective(x, y):
    log_x, log_y = reference.isogclr_estimates(x, y, tau_x, tau_y)
    return (jnp.sum(tau_x * log_x) + jnp.sum(tau_y * log_y)) / B

  surrogate = lambda x, y: losses.isogclr_loss(x, y, tau_x, tau_y, log_g_x, log_g_y, block_size=5)
  got = jax.grad(surrogate, argnums=(0, 1))(x, y)
  lt.assert_close(got, jax.grad(objective, argnums=(0, 1))(x, y), rtol=1e-4)


def test_survives_sharp_temperatures():
  """tau = 0.005 puts d/tau at -400..400: no overflow (the authors guard it with a running max)."""
  x, y = lt.extreme_cases(B, D)[1]
  tau = jnp.full(B, 0.005)
  log_g_x, log_g_y = losses.isogclr_estimates(x, y, tau, tau, block_size=5)
  lt.assert_finite((log_g_x, log_g_y))
  lt.assert_finite_losses(
    lambda x, y: losses.isogclr_loss(x, y, tau, tau, log_g_x, log_g_y, block_size=5), (x, y)
  )


def test_moving_average():
  log_u = jnp.array([-jnp.inf, 0.0, 2.0])
  log_g = jnp.array([1.0, 1.0, -1.0])
  got = losses.isogclr_moving_average(log_u, log_g, 0.8)
  want = [1.0, np.log(0.2 + 0.8 * np.e), np.log(0.2 * np.e**2 + 0.8 * np.e**-1)]
  np.testing.assert_allclose(got, want, rtol=1e-6)  # an unseen example takes its estimate


def test_tau_step_clips_the_gradient_and_projects():
  opts = losses.IsogclrOptions()
  tau, momentum = losses.isogclr_tau_step(
    jnp.array([0.01, 0.03, 0.049]),
    jnp.array([0.0, 1.0, 0.0]),
    jnp.array([-5.0, -8.0, -20.0]),
    jnp.array([0.0, 0.0, 0.0]),
    opts,
  )
  # gradients log u + rho - q = 3, 0, -12 (clipped to -5); momentum halfway to them.
  np.testing.assert_allclose(momentum, [1.5, 0.5, -2.5], rtol=1e-6)
  np.testing.assert_allclose(tau, [0.005, 0.03 - 0.03 * 0.5, 0.05], rtol=1e-6)


@pytest.mark.parametrize(
  "call, match",
  [
    (lambda a: losses.isogclr_loss(a[0], a[1], a[2][:5], *a[3:]), r"`tau_x` must be \[batch\]"),
    (lambda a: losses.isogclr_loss(a[0][:, :3], *a[1:]), "same .*shape"),
    (lambda a: losses.isogclr_estimates(*a[:4], block_size=0), "block_size"),
    (lambda a: losses.IsogclrOptions(tau_min=0.1), "tau_min <= tau_init"),
    (lambda a: losses.IsogclrOptions(gamma=0.0), r"gamma must be in \(0, 1\]"),
  ],
)
def test_bad_input_fails_with_one_line(call, match):
  with pytest.raises(ValueError, match=match):
    call(inputs(0))


def test_registry_objective_reads_state_rows_and_checks_update_options():
  x, y, tau_x, tau_y, log_u_x, log_u_y = inputs(4)
  objective = losses.get("isogclr")
  side = dict(index=jnp.arange(B), tau_x=tau_x, tau_y=tau_y, log_u_x=log_u_x, log_u_y=log_u_y)
  got = objective([x, y], 1.0, None, side, rho=6.0, gamma=0.9)
  np.testing.assert_allclose(
    got, reference.isogclr_loss(x, y, tau_x, tau_y, log_u_x, log_u_y), 1e-5
  )
  with pytest.raises(KeyError, match="needs batch keys"):
    objective([x, y], 1.0, None, {"tau_x": tau_x})
  with pytest.raises(ValueError, match="rho|gamma"):
    objective([x, y], 1.0, None, side, gamma=2.0)
