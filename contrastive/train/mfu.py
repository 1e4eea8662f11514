"""Model FLOPs utilization: the train step's FLOPs, the device's peak, and their ratio.

`train/tflops_per_device = F * (examples/s) / n / 1e12` with `F` the step's FLOPs per example
and `n` the devices; `train/mfu` divides it by the device's peak dense bf16 rate (where known:
TPU and GPU generations; none on CPU).

`F` is XLA's cost analysis of the lowered (not yet optimized) step, the whole program over the
global batch, divided by the global batch: every matmul of the forward and backward passes,
the optimizer and the loss. XLA counts the body of a loop once, so with a scanned layer stack
(`model.scan`) or GradCache micro-batches (`optim.accum_steps > 1`) it undercounts, and the
logged figures are lower bounds; a rematerialized forward (`model.remat`) is not in it (MFU,
unlike hardware utilization, counts the model's FLOPs, not the recomputed ones).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from absl import logging

# Peak dense bf16 FLOP/s per chip, from the vendors' spec sheets, by `device_kind` prefix.
PEAK_FLOPS: dict[str, float] = {
  "TPU v4": 275e12,
  "TPU v5 lite": 197e12,  # v5e
  "TPU v5p": 459e12,
  "TPU v5": 459e12,  # v5p reports "TPU v5"
  "TPU v6 lite": 918e12,  # v6e (Trillium)
  "NVIDIA H100": 989e12,  # SXM
  "NVIDIA H200": 989e12,
  "NVIDIA A100": 312e12,
}


def peak_flops(device_kind: str) -> float | None:
  """The peak of `device_kind` (`jax.devices()[0].device_kind`), None where unknown (CPU)."""
  for prefix in sorted(PEAK_FLOPS, key=len, reverse=True):
    if device_kind.startswith(prefix):
      return PEAK_FLOPS[prefix]
  return None


def step_flops(lower: Callable[[], Any]) -> float | None:
  """The FLOPs of one step from `lower()` (a `jax.stages.Lowered`); None if XLA gives none."""
  try:
    cost = lower().cost_analysis()
  except Exception:  # cost analysis is a diagnostic: never fail the run for it
    logging.warning("No cost analysis of the train step; train/mfu is not logged.", exc_info=True)
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  flops = (cost or {}).get("flops")
  return float(flops) if flops and flops > 0 else None


def scalars(
  flops_per_example: float | None,
  examples_per_sec: float | None,
  *,
  num_devices: int,
  device_kind: str,
) -> Mapping[str, float]:
  """`{"train/tflops_per_device": ..., "train/mfu": ...}`, each where it can be computed.

  Example:
    >>> s = scalars(6e9, 1e4, num_devices=4, device_kind="TPU v5 lite")
    >>> round(s["train/tflops_per_device"], 3), round(s["train/mfu"], 4)
    (15.0, 0.0761)
  """
  if not flops_per_example or not examples_per_sec:
    return {}
  per_device = flops_per_example * examples_per_sec / num_devices
  out = {"train/tflops_per_device": per_device / 1e12}
  peak = peak_flops(device_kind)
  if peak:
    out["train/mfu"] = per_device / peak
  return out
