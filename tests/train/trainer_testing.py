"""Helpers for the trainer tests: run the CLI in a subprocess, read TensorBoard scalars and
checkpoints back."""

from __future__ import annotations

import glob
import hashlib
import os
import re
import signal
import struct
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
from tensorboardX.proto import event_pb2

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def env(*, devices: int, cache_dir: str | None = None) -> dict[str, str]:
  """The environment of a trainer subprocess: `devices` CPU devices, the compile cache."""
  out = dict(os.environ)
  flags = [
    f
    for f in out.get("XLA_FLAGS", "").split()
    if not f.startswith("--xla_force_host_platform_device_count")
  ]
  # Tiny programs compile several times faster without LLVM's optimizations (every run of a
  # comparison gets the same flags).
  out["XLA_FLAGS"] = " ".join(
    flags
    + [f"--xla_force_host_platform_device_count={devices}", "--xla_backend_optimization_level=0"]
  )
  out["JAX_PLATFORMS"] = "cpu"
  out["PYTHONPATH"] = ROOT + os.pathsep + out.get("PYTHONPATH", "")
  out["CONTRASTIVE_HEARTBEAT_TIMEOUT"] = "10"
  if cache_dir:
    out["JAX_COMPILATION_CACHE_DIR"] = cache_dir
    out["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    out["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"
  return out


def train_command(config: str, workdir: str, *overrides: str) -> list[str]:
  return [
    sys.executable,
    "-m",
    "contrastive.train",
    f"--config={config}",
    f"--workdir={workdir}",
    *overrides,
  ]


def start(cmd: list[str], environ: dict[str, str], log_path: str) -> subprocess.Popen:
  """Starts `cmd` in its own process group (so its grain workers can be killed with it)."""
  log = open(log_path, "w")
  proc = subprocess.Popen(
    cmd, cwd=ROOT, env=environ, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
  )
  proc.log_file = log
  proc.log_path = log_path
  return proc


def finish(proc: subprocess.Popen, timeout: float) -> str:
  """Waits for `proc`; kills its group on timeout; returns its output."""
  try:
    proc.wait(timeout=timeout)
  except subprocess.TimeoutExpired:
    kill_group(proc)
    raise
  finally:
    proc.log_file.close()
  with open(proc.log_path) as f:
    return f.read()


def wait_for_step(proc: subprocess.Popen, step: int, total: int, timeout: float = 240) -> None:
  """Waits until the log of `proc` shows the progress line of `step` (or it ends, or times out)."""
  deadline = time.time() + timeout
  while time.time() < deadline and proc.poll() is None:
    with open(proc.log_path) as f:
      if re.search(rf"step +{step}/{total}", f.read()):
        return
    time.sleep(0.05)


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
  try:
    os.killpg(proc.pid, sig)
  except ProcessLookupError:
    pass
  proc.wait()


def run(
  cmd: list[str], environ: dict[str, str], log_path: str, *, timeout: float = 240
) -> tuple[int, str]:
  proc = start(cmd, environ, log_path)
  out = finish(proc, timeout)
  return proc.returncode, out


def read_scalars(logdir: str) -> dict[str, dict[int, float]]:
  """`{tag: {step: value}}` from every TensorBoard event file under `logdir` (later files win)."""
  out: dict[str, dict[int, float]] = {}
  for path in sorted(
    glob.glob(os.path.join(logdir, "events.out.tfevents.*")), key=os.path.getmtime
  ):
    with open(path, "rb") as f:
      data = f.read()
    pos = 0
    while pos + 12 <= len(data):
      (length,) = struct.unpack("<Q", data[pos : pos + 8])
      record = data[pos + 12 : pos + 12 + length]
      pos += 12 + length + 4
      event = event_pb2.Event()
      event.ParseFromString(record)
      for value in event.summary.value:
        if value.HasField("simple_value"):
          out.setdefault(value.tag, {})[int(event.step)] = float(value.simple_value)
  return out


def digest(root: str) -> dict[str, str]:
  """sha256 of every file below `root`, by relative path: a workdir's bytes, to compare."""
  out = {}
  for folder, _, names in os.walk(root):
    for name in names:
      path = os.path.join(folder, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
  return out


def load_state(workdir: str, step: int) -> dict:
  """The saved train state of `workdir` at `step` as host numpy arrays (a nested dict)."""
  path = os.path.join(workdir, "checkpoints", str(step), "state")
  checkpointer = ocp.PyTreeCheckpointer()
  metadata = checkpointer.metadata(path)
  tree = getattr(metadata, "item_metadata", metadata)
  tree = getattr(tree, "tree", tree)
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  restore_args = jax.tree.map(lambda _: ocp.ArrayRestoreArgs(sharding=device), tree)
  state = checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=restore_args))
  return jax.tree.map(np.asarray, state)


def assert_trees_equal(a, b) -> None:
  """Bitwise equality of two pytrees of arrays, naming the first leaf that differs."""
  fa = jax.tree_util.tree_flatten_with_path(a)[0]
  fb = jax.tree_util.tree_flatten_with_path(b)[0]
  assert [p for p, _ in fa] == [p for p, _ in fb], "the trees differ in structure"
  for (path, x), (_, y) in zip(fa, fb):
    x, y = np.atleast_1d(np.asarray(x)), np.atleast_1d(np.asarray(y))
    assert x.shape == y.shape and x.dtype == y.dtype, jax.tree_util.keystr(path)
    assert np.array_equal(x.view(np.uint8), y.view(np.uint8)), (
      f"{jax.tree_util.keystr(path)} differs: max |diff| {np.max(np.abs(x - y))}"
    )
