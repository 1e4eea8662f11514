"""glibc malloc settings that keep XLA's per-step buffers mapped on a CPU-only run.

XLA's CPU runtime allocates a step's temporary buffers as one large block and frees it when the
step ends. glibc serves a block that large with `mmap` (a thread's own arena cannot hold it, and
the main heap gives it back above the trim threshold), so every step maps fresh pages and faults
each one in. One arena, no `mmap` below 1 GiB and no trimming keep the block in the heap from
step to step, with the same numbers computed.

Only for one CPU device: with several simulated ones (`--xla_force_host_platform_device_count`),
their threads would queue for the single arena. The settings only take effect before JAX starts
its CPU backend (XLA's threads pick their arenas then), and they cost what a long-running
process would keep anyway: the heap stays at its peak. What they save is measured in
docs/hardware.md ("The allocator").
"""

from __future__ import annotations

import ctypes
import glob
import importlib.metadata
import importlib.util
import os
import re

from absl import logging

# mallopt(3) parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_MMAP_THRESHOLD = 1 << 30
_TRIM_THRESHOLD = 2**31 - 1


def tpu_attached() -> bool:
  """Whether this host has TPU chips: their device files (`/dev/accel*` on v2-v4,
  `/dev/vfio/<n>` from v5 on)."""
  return bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"))


def accelerator_installed() -> bool:
  """Whether JAX may pick a GPU or TPU: a PJRT plugin is installed, or libtpu on a TPU host.

  libtpu without TPU chips is there to compile for a topology (`contrastive.train.compile_for`);
  JAX then runs on the CPU.
  """
  if importlib.util.find_spec("libtpu") is not None and tpu_attached():
    return True
  if importlib.util.find_spec("jax_plugins") is not None:  # the namespace plugins install into
    return True
  return bool(importlib.metadata.entry_points(group="jax_plugins"))


def runs_on_cpu_only() -> bool:
  """Whether this process's JAX backend will be the CPU, judged without starting it."""
  platforms = os.environ.get("JAX_PLATFORMS", "")
  if platforms:
    return platforms.split(",")[0].strip().lower() == "cpu"
  return not accelerator_installed()


def cpu_device_count() -> int:
  """The CPU devices JAX will make: `--xla_force_host_platform_device_count` or
  `$JAX_NUM_CPU_DEVICES`, else 1."""
  counts = re.findall(
    r"--xla_force_host_platform_device_count=(\d+)", os.environ.get("XLA_FLAGS", "")
  )
  if counts:
    return int(counts[-1])
  return int(os.environ.get("JAX_NUM_CPU_DEVICES") or 1)


def keep_step_buffers_mapped() -> bool:
  """Sets glibc malloc for XLA on one CPU device (see the module docstring); returns whether it
  did.

  Does nothing where JAX may use an accelerator, where it simulates several CPU devices, or
  where the C library is not glibc. Call it before the first JAX computation.
  """
  if not runs_on_cpu_only() or cpu_device_count() > 1:
    return False
  try:
    mallopt = ctypes.CDLL("libc.so.6").mallopt
  except (OSError, AttributeError):
    return False
  mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
  done = all(
    mallopt(param, value) == 1
    for param, value in (
      (_M_ARENA_MAX, 1),
      (_M_MMAP_THRESHOLD, _MMAP_THRESHOLD),
      (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD),
    )
  )
  logging.info("glibc malloc set for XLA on the CPU: %s.", "done" if done else "refused")
  return done
