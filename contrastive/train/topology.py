"""The devices of a named topology, for compiling without them: TPU generations and grids as
libtpu names them (`v5e:16x16`, `v4:2x2x1`), hosts of H100 GPUs (`h100:8`, `h100:4x8`: hosts x
GPUs), or `cpu:N`, and the memory each chip has."""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

import jax

GiB = 2**30

# HBM per chip that the TPU compiler lets one program use, in bytes: the "available HBM" of its
# out-of-memory message (libtpu 0.0.42.1; `test_compile.py` checks two of them). The chips'
# spec sheets (cloud.google.com/tpu/docs/v4, /v5e, /v5p, /v6e) give 32, 16, 95 and 32 GiB; the
# runtime keeps the rest. v4 and v5p run as one device per chip (megacore), as JAX runs them.
TPU_HBM: dict[str, int] = {
  "v4": int(30.75 * GiB),
  "v5e": int(15.75 * GiB),
  "v5p": int(95.74 * GiB),
  "v6e": int(31.25 * GiB),
}
_MEGACORE = ("v4", "v5p")

# An H100 SXM (80 GB HBM3) as XLA:GPU's deviceless compiler takes it (a GpuTargetConfigProto;
# the numbers of XLA's own H100 spec). The CUDA plugin (`jax-cuda12-plugin`, `jax-cuda12-pjrt`)
# compiles for it with no GPU. A program gets 75% of the memory: JAX preallocates that share
# (XLA_PYTHON_CLIENT_MEM_FRACTION=.75).
H100_TARGET_CONFIG = """
gpu_device_info {
  threads_per_block_limit: 1024 threads_per_warp: 32 shared_memory_per_block: 49152
  shared_memory_per_core: 233472 threads_per_core_limit: 2048 core_count: 132 fpus_per_core: 128
  block_dim_limit_x: 2147483647 block_dim_limit_y: 65535 block_dim_limit_z: 65535
  memory_bandwidth: 3352320000000 l2_cache_size: 52428800 clock_rate_ghz: 1.98
  device_memory_size: 84978434048 shared_memory_per_block_optin: 232448
  cuda_compute_capability { major: 9 } registers_per_core_limit: 65536
  registers_per_block_limit: 65536
}
platform_name: "CUDA"
dnn_version_info { major: 9 minor: 3 }
device_description_str: "NVIDIA H100 80GB HBM3"
"""
GPU_HBM: dict[str, int] = {"h100": int(0.75 * 84978434048)}
FAMILIES = ("cpu",) + tuple(TPU_HBM) + tuple(GPU_HBM)


@dataclasses.dataclass(frozen=True)
class Target:
  """The devices of a topology and what each has."""

  topology: str
  family: str
  devices: tuple[Any, ...]
  hbm_per_chip: int
  # For the compile. XLA:GPU cannot autotune Triton's GEMM tiles without a GPU (some shapes then
  # fail to compile): deviceless, GEMMs go to cuBLAS.
  compiler_options: dict[str, Any] = dataclasses.field(default_factory=dict)


def _unknown(topology: str) -> ValueError:
  return ValueError(
    f"Unknown topology {topology!r}: give FAMILY:GRID with FAMILY one of "
    f"{', '.join(FAMILIES)} (e.g. v5e:2x2, v4:2x2x1, v5p:2x2x1, v6e:4x4, h100:8, cpu:8)."
  )


def _first_line(error: Exception) -> str:
  """The first line of an error (libtpu's and the CUDA plugin's run to many lines)."""
  return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


def host_memory_bytes() -> int:
  """This machine's physical memory."""
  return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def target(topology: str) -> Target:
  """The compile-only devices of `topology` (`"v5e:2x2"`, `"cpu:8"`, ...).

  Raises:
    ValueError: an unknown family or grid (one line naming the known families), `libtpu`
      missing, or `cpu:N` with fewer than `N` CPU devices in this process.
  """
  family, sep, grid = str(topology).partition(":")
  if not sep or family not in FAMILIES or not re.fullmatch(r"[1-9][0-9]*(x[1-9][0-9]*)*", grid):
    raise _unknown(topology)
  if family == "cpu":
    n = int(grid)
    cpus = jax.devices("cpu")
    if len(cpus) < n:
      raise ValueError(
        f"Topology {topology!r} needs {n} CPU devices; this process has "
        f"{len(cpus)} (start it with XLA_FLAGS=--xla_force_host_platform_device_"
        f"count={n}, or jax.config.update('jax_num_cpu_devices', {n}) first)."
      )
    return Target(topology, family, tuple(cpus[:n]), host_memory_bytes() // n)
  if family in GPU_HBM:
    return _gpu(topology, family, grid)
  try:
    import libtpu  # noqa: F401
  except ImportError:
    raise ValueError(
      f"Compiling for {topology!r} needs libtpu: pip install 'contrastive[tpu]' (or \"jax[tpu]\")."
    ) from None
  from jax.experimental import topologies

  # libtpu takes a machine-wide lock (/tmp/libtpu_lockfile) when it loads, meant for the chips;
  # compile-only devices touch none, so two processes may compile at once.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

  kwargs = {"chip_config_name": "megacore"} if family in _MEGACORE else {}
  try:
    desc = topologies.get_topology_desc(platform="tpu", topology_name=f"{family}:{grid}", **kwargs)
  except Exception as e:  # libtpu's refusal of a grid runs to many lines
    raise ValueError(f"libtpu has no topology {topology!r} ({_first_line(e)}).") from None
  return Target(topology, family, tuple(desc.devices), TPU_HBM[family])


def _gpu(topology: str, family: str, grid: str) -> Target:
  """`h100:G` (one host of `G` GPUs) or `h100:HxG` (`H` hosts)."""
  sizes = [int(n) for n in grid.split("x")]
  if len(sizes) > 2:
    raise _unknown(topology)
  hosts, gpus = ([1] + sizes)[-2:]
  from jax.experimental import topologies

  try:
    desc = topologies.get_topology_desc(
      platform="cuda", target_config=H100_TARGET_CONFIG, topology=f"1x{hosts}x{gpus}"
    )
  except Exception as e:  # no CUDA plugin: "Unknown backend cuda" and the like
    raise ValueError(
      f"Compiling for {topology!r} needs JAX's CUDA plugin: pip install jax-cuda12-plugin "
      f"jax-cuda12-pjrt matching jax {jax.__version__} ({_first_line(e)})."
    ) from None
  return Target(
    topology, family, tuple(desc.devices), GPU_HBM[family], {"xla_gpu_enable_triton_gemm": False}
  )
