"""Training metrics: TensorBoard scalars, the console (a progress bar or line), and timers.

Only process 0 writes (`MetricWriter` is a no-op elsewhere). Keys carry a prefix: `train/loss`,
`train/lr`, `train/scale`, `train/bias`, `train/grad_norm`, `train/param_norm`,
`train/examples_per_sec`, `train/step_time`, `train/data_wait_share`, `train/skipped_steps`,
and `eval/{task}/{metric}` from the evaluations.

`Progress` is what a person watching the run sees: a `tqdm.auto` bar (a widget in Jupyter and
Colab, text in a terminal) with the loss and throughput beside it, or, where nobody watches
(output to a file, a job log), `progress_line` every `log.every_steps` steps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import contextlib
import math
import os
import sys
import time
from typing import Any, Literal, TextIO

from absl import logging
import jax


class MetricWriter:
  """TensorBoard event files in `logdir` (tensorboardX), written by process 0 only."""

  def __init__(self, logdir: str | os.PathLike):
    self.logdir = os.fspath(logdir)
    self._writer = None
    if jax.process_index() == 0:
      import tensorboardX  # only process 0 needs it

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


def progress_line(
  step: int, total_steps: int, scalars: Mapping[str, float], *, elapsed: float | None = None
) -> str:
  """One console line: step, loss (and each term's, when there are several), learning rate,
  scale/bias, throughput, data share, ETA.

  Example:
    `step   200/2000 (10%) | loss 2.3456 | lr 1.00e-03 | scale 14.2 | bias -9.8 | grad 1.23 |
    1534 ex/s | 0.167 s/step | data 3% | eta 5m00s`
  """
  width = len(str(total_steps))
  parts = [f"step {step:>{width}}/{total_steps} ({100 * step / total_steps:.0f}%)"]
  if "train/loss" in scalars:
    terms = [
      (k[len("train/loss/") :], v) for k, v in scalars.items() if k.startswith("train/loss/")
    ]
    each = f" ({', '.join(f'{name} {v:.4f}' for name, v in terms)})" if terms else ""
    parts.append(f"loss {scalars['train/loss']:.4f}{each}")
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
  if "train/mfu" in scalars:
    parts.append(f"mfu {100 * scalars['train/mfu']:.1f}%")
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


def summary(results: Mapping[str, float], *, steps: int, workdir: str, checkpoint: str) -> str:
  """The closing lines of a run: steps, time, final loss, the evaluation, where things are."""
  lines = [
    f"Done: {steps} steps in {results.get('wall_time', math.nan):.0f} s (final loss "
    f"{results.get('train/loss', math.nan):.4f})."
  ]
  if any(k.startswith("eval/") for k in results):
    lines.append(f"Evaluation: {headline(results)}")
    lines.append(f"Report: {os.path.join(workdir, 'eval')}/metrics.json and PNG plots.")
  lines.append(f"Checkpoint: {checkpoint}")
  lines.append(f"TensorBoard: tensorboard --logdir {os.path.join(workdir, 'tensorboard')}")
  return "\n".join(lines)


def log_lines(text: str) -> None:
  for line in text.splitlines():
    logging.info("%s", line)


def train_scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
  """The step's metrics as `train/...` floats (the `finite` flag dropped)."""
  host = jax.device_get(dict(metrics))
  return {f"train/{k}": float(v) for k, v in host.items() if k != "finite"}


def headline(eval_metrics: Mapping[str, float]) -> str:
  """The accuracies and recalls@1 of an evaluation on one line (the overall ones, not the
  seen/held-out splits, when there are both)."""
  keys = [k for k in eval_metrics if k.endswith(("/top1", "/accuracy", "recall@1", "/rsum"))]
  keys = [k for k in keys if "/seen/" not in k and "/heldout/" not in k] or keys
  return ", ".join(f"{k} {eval_metrics[k]:.3f}" for k in sorted(keys)[:12])


def interactive() -> bool:
  """True in a terminal (stdout is a TTY) or inside IPython (Jupyter, Colab)."""
  ipython = sys.modules.get("IPython")
  try:
    if ipython is not None and ipython.get_ipython() is not None:
      return True
  except AttributeError:
    pass
  return bool(getattr(sys.stdout, "isatty", lambda: False)())


def _log(text: str) -> None:
  log_lines(text)


class Progress:
  """The run's console: a `tqdm.auto` bar, or a `progress_line` every log interval.

  Args:
    mode: `"bar"`, `"lines"`, or `"auto"` (a bar when `interactive()`); `config.log.progress`.
    total_steps, first_step: the run's length and where it starts (a resumed run's bar starts
      there).
    write: where lines and messages go; default `absl.logging` (in bar mode, messages print
      above the bar, as `tqdm.write` does). Processes other than 0 only log.
    file: the bar's stream (default stdout).
  """

  def __init__(
    self,
    mode: Literal["auto", "bar", "lines"],
    *,
    total_steps: int,
    first_step: int = 0,
    write: Callable[[str], None] | None = None,
    file: TextIO | None = None,
  ):
    self.total_steps = int(total_steps)
    self._write = write
    self._file = file or sys.stdout
    self._bar = None
    if (mode == "bar" or (mode == "auto" and interactive())) and jax.process_index() == 0:
      from tqdm import auto as tqdm_auto

      self._bar = tqdm_auto.tqdm(
        total=total_steps,
        initial=first_step,
        unit="step",
        dynamic_ncols=True,
        file=self._file,
        leave=True,
      )

  @property
  def bar(self):
    """The tqdm bar, or None in lines mode."""
    return self._bar

  def advance(self, steps: int = 1) -> None:
    """Called after every step: moves the bar."""
    if self._bar is not None:
      self._bar.update(steps)

  def log(self, step: int, scalars: Mapping[str, float], *, elapsed: float | None = None) -> None:
    """Every log interval: the progress line (in bar mode, to the log; the bar shows the loss,
    learning rate and throughput)."""
    line = progress_line(step, self.total_steps, scalars, elapsed=elapsed)
    if self._bar is None:
      (self._write or _log)(line)
      return
    logging.info("%s", line)
    parts = (
      ("loss", "train/loss", ".4f"),
      ("lr", "train/lr", ".2e"),
      ("ex/s", "train/examples_per_sec", ".0f"),
    )
    self._bar.set_postfix_str(
      ", ".join(f"{name} {scalars[key]:{spec}}" for name, key, spec in parts if key in scalars),
      refresh=False,
    )

  def message(self, text: str) -> None:
    """An evaluation's headline, the closing summary, a notice."""
    if self._bar is None:
      (self._write or _log)(text)
    elif self._write is None:
      logging.info("%s", text)
      self._bar.write(text, file=self._file)
    else:
      with self._bar.external_write_mode():
        self._write(text)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
      self._bar = None


class Profile(contextlib.AbstractContextManager):
  """A `jax.profiler` trace of the steps after `log.profile_start_step` (`log.profile_num_steps`
  of them) into `logdir`; nothing when the start step is None. The loop calls `before(step)` and
  `after(step, state)` around each step; leaving the context stops a trace still running."""

  def __init__(self, log_config, logdir: str | os.PathLike):
    self.start = log_config.profile_start_step
    self.stop = None if self.start is None else self.start + log_config.profile_num_steps
    self.logdir = os.fspath(logdir)
    self.running = False

  def before(self, step: int) -> None:
    if self.start is not None and step - 1 == self.start and not self.running:
      jax.profiler.start_trace(self.logdir)
      self.running = True

  def after(self, step: int, state: Any) -> None:
    if self.running and step == self.stop:
      jax.block_until_ready(state)
      jax.profiler.stop_trace()
      self.running = False
      logging.info("Profile of steps %d-%d written to %s.", self.start + 1, step, self.logdir)

  def __exit__(self, *exc) -> None:
    if self.running:
      jax.profiler.stop_trace()
      self.running = False
