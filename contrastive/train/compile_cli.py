"""`python -m contrastive.train --config C --compile_for=TOPOLOGY`: the report on the console.

    python -m contrastive.train --config configs/siglip_vit_b16.py --compile_for=v5e:16x16
    python -m contrastive.train --config configs/demo.py --compile_for=cpu:8 \
        --config.data.batch_size=4096

prints, per chip, what the run's compiled train step holds (parameters and optimizer state, the
batch, temporaries), its peak against the chip's HBM less the margin, the collectives in the
step, the evaluation step, and the compile times; then one line: `fits`, or `does not fit` with
by how much and the settings that would help. The exit status is 0 when it fits, 1 when it does
not or the config or topology is bad (one line, `error: ...`).
"""

from __future__ import annotations

from collections.abc import Callable
import math
import os

import ml_collections

from contrastive.train import compile as compile_lib

Write = Callable[[str], None]


def prepare_backend(topology: str) -> None:
  """Before JAX starts its backend: eager work on the CPU (unless `JAX_PLATFORMS` says
  otherwise), and `N` CPU devices for `cpu:N` (unless `XLA_FLAGS` sets a count)."""
  import jax

  if not os.environ.get("JAX_PLATFORMS"):
    jax.config.update("jax_platforms", "cpu")
  family, _, grid = topology.partition(":")
  if family == "cpu" and grid.isdigit() and int(grid) > 0:
    if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
      jax.config.update("jax_num_cpu_devices", int(grid))


def size(n: int | float) -> str:
  """Bytes in GiB, or MiB below one GiB."""
  return f"{n / 2**30:.2f} GiB" if abs(n) >= 2**30 else f"{n / 2**20:.2f} MiB"


def report_lines(report: compile_lib.CompileReport) -> list[str]:
  """The report, per chip, as console lines."""
  r = report
  mesh = " ".join(f"{k}={v}" for k, v in r.mesh.items())
  accum = f", {r.accum_steps} GradCache micro-batches" if r.accum_steps > 1 else ""
  lines = [
    f"Compiled for {r.topology}: {r.num_chips} x {r.device_kind}, mesh {mesh}, global batch "
    f"{r.batch_size:,}{accum}; train step in {r.compile_seconds:.1f} s.",
    "Per chip (train step):",
    f"  parameters + optimizer state  {size(r.param_bytes)} + {size(r.opt_state_bytes)}",
    f"  batch                         {size(r.batch_bytes)}",
    f"  arguments / outputs / aliased {size(r.argument_bytes)} / {size(r.output_bytes)} / "
    f"{size(r.alias_bytes)}",
    f"  temporaries                   {size(r.temp_bytes)}",
    f"  peak                          {size(r.peak_bytes)} of {size(r.hbm_per_chip)} HBM; limit "
    f"{size(r.limit_bytes)} with a {r.margin:.0%} margin",
  ]
  if r.refused:
    lines.append(f"  refused by the compiler       {r.refused}")
  else:
    kinds = ", ".join(
      f"{k} {n}" + (f" ({r.async_collectives[k]} async)" if r.async_collectives.get(k) else "")
      for k, n in sorted(r.collectives.items())
    )
    lines.append(f"  collectives                   {kinds or 'none'}")
  if r.eval_batch_size is not None:
    lines.append(
      f"Evaluation embedding step (batch {r.eval_batch_size:,}, compiled in "
      f"{r.eval_compile_seconds:.1f} s): peak {size(r.eval_peak_bytes)} (train state, batch, "
      f"temporaries {size(r.eval_temp_bytes)})."
    )
  return lines


def _remat(config: ml_collections.ConfigDict) -> str:
  """The remat policy the encoders use (`model.remat`, or the first encoder's own)."""
  own = [e.get("remat") for e in config.model.encoders.values() if e.get("remat")]
  return own[0] if own else config.model.get("remat", "none")


def advice(report: compile_lib.CompileReport, config: ml_collections.ConfigDict) -> str:
  """One line: `fits, ...` with the room left, or `does not fit` with by how much and which
  settings would help (remat, GradCache, FSDP, the batch, the loss's block size)."""
  r = report
  if r.run_fits:
    return (
      f"fits: {size(r.peak_bytes)} of {size(r.limit_bytes)} per chip "
      f"({size(r.limit_bytes - r.peak_bytes)} to spare)."
    )
  if not r.fits:
    over = r.peak_bytes - r.limit_bytes
    state = r.alias_bytes  # the donated train state, as the chip lays it out
    tips = []
    if _remat(config) == "none":
      tips.append("--config.model.remat=full (now none: every activation is kept)")
    if r.temp_bytes > over:
      k = r.accum_steps * 2 ** math.ceil(math.log2(r.temp_bytes / (r.temp_bytes - over)))
      tips.append(
        f"--config.optim.accum_steps={k} (GradCache: same loss, 1/{k} of the activations)"
      )
    fsdp = int(r.mesh.get("fsdp", 1))
    if state > 0.1 * r.peak_bytes and fsdp < r.num_chips:
      tips.append(
        f"--config.mesh.fsdp={min(fsdp * 4, r.num_chips)} (parameters and optimizer "
        f"state {size(state)} per chip now)"
      )
    live = r.peak_bytes - state
    if live > over:
      shards = math.prod(r.mesh.get(a, 1) for a in ("data", "fsdp")) * r.accum_steps
      smaller = int(r.batch_size * (live - over) / live) // shards * shards
      if smaller > 0:
        tips.append(f"--config.data.batch_size={smaller}")
    block = config.loss.get("block_size")
    if block:
      tips.append(f"a smaller --config.loss.block_size (now {block})")
    return (
      f"does not fit: the train step needs {size(r.peak_bytes)} per chip, {size(over)} over "
      f"the {size(r.limit_bytes)} limit; try {'; '.join(tips) or 'a larger topology'}."
    )
  over = r.eval_peak_bytes - r.limit_bytes
  return (
    f"does not fit: the evaluation step needs {size(r.eval_peak_bytes)} per chip, "
    f"{size(over)} over the {size(r.limit_bytes)} limit; try a smaller "
    f"--config.eval.batch_size (now {r.eval_batch_size})."
  )


def main(config: ml_collections.ConfigDict, topology: str, *, write: Write) -> int:
  """Compiles, writes the report and the verdict; returns the exit status (0: it fits)."""
  report = compile_lib.compile_for(config, topology)
  for line in report_lines(report):
    write(line)
  write(advice(report, config))
  return 0 if report.run_fits else 1
