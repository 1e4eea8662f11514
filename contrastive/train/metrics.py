"""Training metrics: TensorBoard scalars, the progress line, and timers for steps and data.

Only process 0 writes (`MetricWriter` is a no-op elsewhere). Keys carry a prefix: `train/loss`,
`train/lr`, `train/scale`, `train/bias`, `train/grad_norm`, `train/param_norm`,
`train/examples_per_sec`, `train/step_time`, `train/data_wait_share`, `train/skipped_steps`,
and `eval/{task}/{metric}` from the evaluations.
"""

from __future__ import annotations

from collections.abc import Mapping
import math
import os
import time

from absl import logging
import jax


class MetricWriter:
  """TensorBoard event files in `logdir` (tensorboardX), written by process 0 only."""

  def __init__(self, logdir: str | os.PathLike):
    self.logdir = os.fspath(logdir)
    self._writer = None
    if jax.process_index() == 0:
      import tensorboardX  # pylint: disable=g-import-not-at-top  (only process 0 needs it)
      os.makedirs(self.logdir, exist_ok=True)
      self._writer = tensorboardX.SummaryWriter(self.logdir, flush_secs=30)

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    if self._writer is None:
      return
    for key, value in scalars.items():
      value = float(value)
      if math.isfinite(value):
        self._writer.add_scalar(key, value, global_step=int(step))

  def write_text(self, step: int, key: str, text: str) -> None:
    if self._writer is not None:
      self._writer.add_text(key, text, global_step=int(step))

  def flush(self) -> None:
    if self._writer is not None:
      self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
      self._writer = None


class IntervalTimer:
  """Wall time and time spent waiting for data since the last `reset`, over some steps.

  The loop wraps the fetching of each batch in `waiting()`/`done_waiting()`; the rest of the
  interval is dispatching and running steps (measured at a point where the device has caught
  up, so it is real step time, not dispatch time).
  """

  def __init__(self):
    self.reset()

  def reset(self) -> None:
    self._start = time.perf_counter()
    self._data = 0.0
    self._wait_start = None
    self.steps = 0

  def waiting(self) -> None:
    self._wait_start = time.perf_counter()

  def done_waiting(self) -> None:
    if self._wait_start is not None:
      self._data += time.perf_counter() - self._wait_start
      self._wait_start = None

  def step(self) -> None:
    self.steps += 1

  def summary(self, batch_size: int) -> dict[str, float]:
    """`examples_per_sec`, `step_time` (seconds per step) and `data_wait_share` (0..1)."""
    elapsed = max(time.perf_counter() - self._start, 1e-9)
    steps = max(self.steps, 1)
    return {
        "examples_per_sec": batch_size * self.steps / elapsed,
        "step_time": elapsed / steps,
        "data_wait_share": min(self._data / elapsed, 1.0),
    }


def _duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  if seconds >= 3600:
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
  if seconds >= 60:
    return f"{seconds // 60}m{seconds % 60:02d}s"
  return f"{seconds}s"


def progress_line(step: int, total_steps: int, scalars: Mapping[str, float], *,
                  elapsed: float | None = None) -> str:
  """One console line: step, loss, learning rate, scale/bias, throughput, data share, ETA.

  Example:
    `step   200/2000 (10%) | loss 2.3456 | lr 1.00e-03 | scale 14.2 | bias -9.8 | grad 1.23 |
    1534 ex/s | 0.167 s/step | data 3% | eta 5m00s`
  """
  width = len(str(total_steps))
  parts = [f"step {step:>{width}}/{total_steps} ({100 * step / total_steps:.0f}%)"]
  if "train/loss" in scalars:
    parts.append(f"loss {scalars['train/loss']:.4f}")
  if "train/lr" in scalars:
    parts.append(f"lr {scalars['train/lr']:.2e}")
  if "train/scale" in scalars:
    parts.append(f"scale {scalars['train/scale']:.1f}")
  if "train/bias" in scalars:
    parts.append(f"bias {scalars['train/bias']:.2f}")
  if "train/grad_norm" in scalars:
    parts.append(f"grad {scalars['train/grad_norm']:.3g}")
  if "train/examples_per_sec" in scalars:
    parts.append(f"{scalars['train/examples_per_sec']:.0f} ex/s")
  if "train/step_time" in scalars:
    parts.append(f"{scalars['train/step_time']:.3f} s/step")
    parts.append(f"eta {_duration(scalars['train/step_time'] * (total_steps - step))}")
  if "train/data_wait_share" in scalars:
    parts.insert(-1, f"data {100 * scalars['train/data_wait_share']:.0f}%")
  if scalars.get("train/skipped_steps"):
    parts.append(f"skipped {int(scalars['train/skipped_steps'])}")
  if elapsed is not None:
    parts.append(f"elapsed {_duration(elapsed)}")
  return " | ".join(parts)


def log_lines(text: str) -> None:
  for line in text.splitlines():
    logging.info("%s", line)
