"""MFU: the step's FLOPs from XLA's cost analysis, the peak by device kind, the two scalars."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from contrastive.train import mfu


def test_step_flops_counts_a_matmul():
  """A [m, k] x [k, n] product is 2 m k n FLOPs."""
  f = jax.jit(lambda a, b: a @ b)
  flops = mfu.step_flops(lambda: f.lower(jnp.ones((32, 48)), jnp.ones((48, 16))))
  assert flops == 2 * 32 * 48 * 16


def test_step_flops_is_none_when_lowering_fails():
  def broken():
    raise RuntimeError("no lowering")

  assert mfu.step_flops(broken) is None


@pytest.mark.parametrize(
  "kind,peak",
  [
    ("TPU v5 lite", 197e12),
    ("TPU v5p", 459e12),
    ("TPU v4", 275e12),
    ("TPU v6 lite", 918e12),
    ("NVIDIA H100 80GB HBM3", 989e12),
    ("cpu", None),
  ],
)
def test_peak_by_device_kind(kind, peak):
  assert mfu.peak_flops(kind) == peak


def test_scalars_are_the_formula():
  out = mfu.scalars(2e9, 5e3, num_devices=8, device_kind="NVIDIA A100-SXM4-80GB")
  np.testing.assert_allclose(out["train/tflops_per_device"], 2e9 * 5e3 / 8 / 1e12)
  np.testing.assert_allclose(out["train/mfu"], 2e9 * 5e3 / 8 / 312e12)
  assert set(mfu.scalars(2e9, 5e3, num_devices=8, device_kind="cpu")) == {"train/tflops_per_device"}
  assert mfu.scalars(None, 5e3, num_devices=8, device_kind="cpu") == {}
