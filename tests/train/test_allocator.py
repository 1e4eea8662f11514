"""The glibc malloc settings for XLA on the CPU: where they apply, and what they change."""

import os
import subprocess
import sys

import pytest

from contrastive.train import allocator
from tests.train import trainer_testing as tt

# A step's buffers in miniature: a 64 MiB block, allocated, written and freed six times by a
# thread that is not the main one (XLA's threads are not); prints the page faults of each.
_PROBE = r"""
import ctypes, resource, sys, threading
from contrastive.train import allocator
applied = allocator.keep_step_buffers_mapped() if sys.argv[1] == "tuned" else False
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
faults = []
def steps():
  for _ in range(6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(64 << 20)
    ctypes.memset(block, 1, 64 << 20)
    libc.free(block)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
thread = threading.Thread(target=steps)
thread.start()
thread.join()
print(applied, *faults)
"""


def _probe(mode):
  out = subprocess.run(
    [sys.executable, "-c", _PROBE, mode],
    env=tt.env(devices=1),
    check=True,
    capture_output=True,
    text=True,
  ).stdout.split()
  return out[0] == "True", [int(f) for f in out[1:]]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_a_freed_block_is_reused_without_page_faults():
  applied, plain = _probe("plain")
  assert not applied
  pages = (64 << 20) // os.sysconf("SC_PAGE_SIZE")
  assert min(plain) >= pages  # glibc maps every block afresh and faults in each page
  applied, tuned = _probe("tuned")
  assert applied
  assert tuned[0] >= pages // 2  # the first block is new memory
  assert max(tuned[1:]) < pages // 100  # later ones reuse it


@pytest.mark.parametrize(
  "platforms, accelerator, expected",
  [
    ("cpu", True, True),
    ("CPU", False, True),
    ("cuda", False, False),
    ("tpu,cpu", False, False),
    ("", False, True),
    ("", True, False),
  ],
)
def test_runs_on_cpu_only(monkeypatch, platforms, accelerator, expected):
  monkeypatch.setenv("JAX_PLATFORMS", platforms)
  monkeypatch.setattr(allocator, "accelerator_installed", lambda: accelerator)
  assert allocator.runs_on_cpu_only() is expected


@pytest.mark.parametrize(
  "xla_flags, num_cpu_devices, expected",
  [
    ("", None, 1),
    ("--xla_force_host_platform_device_count=8", None, 8),
    ("--xla_cpu_enable_fast_math=false --xla_force_host_platform_device_count=4", "2", 4),
    ("", "2", 2),
  ],
)
def test_cpu_device_count(monkeypatch, xla_flags, num_cpu_devices, expected):
  monkeypatch.setenv("XLA_FLAGS", xla_flags)
  if num_cpu_devices is None:
    monkeypatch.delenv("JAX_NUM_CPU_DEVICES", raising=False)
  else:
    monkeypatch.setenv("JAX_NUM_CPU_DEVICES", num_cpu_devices)
  assert allocator.cpu_device_count() == expected


def _no_libc(name):
  raise AssertionError(f"loaded {name}")


def test_nothing_is_set_where_an_accelerator_may_run(monkeypatch):
  monkeypatch.setenv("JAX_PLATFORMS", "cuda")
  monkeypatch.setenv("XLA_FLAGS", "")
  monkeypatch.setattr(allocator.ctypes, "CDLL", _no_libc)
  assert allocator.keep_step_buffers_mapped() is False


def test_nothing_is_set_for_several_cpu_devices(monkeypatch):
  # Their threads would queue for the one arena.
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
  monkeypatch.setattr(allocator.ctypes, "CDLL", _no_libc)
  assert allocator.keep_step_buffers_mapped() is False


def test_nothing_is_set_without_glibc(monkeypatch):
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv("XLA_FLAGS", "")
  monkeypatch.delenv("JAX_NUM_CPU_DEVICES", raising=False)
  loaded = []

  def missing(name):
    loaded.append(name)
    raise OSError(f"{name}: cannot open shared object file")

  monkeypatch.setattr(allocator.ctypes, "CDLL", missing)
  assert allocator.keep_step_buffers_mapped() is False
  assert loaded == ["libc.so.6"]


@pytest.mark.parametrize("chips", [False, True])
def test_libtpu_counts_as_an_accelerator_only_on_a_tpu_host(monkeypatch, chips):
  # libtpu alone (installed to compile for a topology) leaves JAX on the CPU.
  monkeypatch.setattr(
    allocator.importlib.util, "find_spec", lambda name: object() if name == "libtpu" else None
  )
  monkeypatch.setattr(allocator.importlib.metadata, "entry_points", lambda group: [])
  monkeypatch.setattr(allocator, "tpu_attached", lambda: chips)
  assert allocator.accelerator_installed() is chips
