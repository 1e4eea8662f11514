"""Per-process batches to global arrays: one process with 8 devices, and two real processes."""

import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from contrastive import parallel
from contrastive.data import config as config_lib
from contrastive.data import pipeline
from contrastive.data import sharding


def _config(**kwargs):
  cfg = config_lib.default_config()
  cfg.update(dict(image_size=16, batch_size=8, max_len=16))
  cfg.update(kwargs)
  return cfg


def test_to_global_shards_the_batch():
  mesh = parallel.make_mesh()
  it = pipeline.make_pipeline(_config(batch_size=16, hard_negatives=True), split="train", mesh=mesh)
  batch = next(it)
  arrays = sharding.to_global(batch, mesh)
  assert set(arrays) == set(batch)
  for key, array in arrays.items():
    assert isinstance(array, jax.Array) and array.shape == batch[key].shape
    assert array.sharding.spec[0] == ("data", "fsdp")
    assert len(array.addressable_shards) == 8
    np.testing.assert_array_equal(np.asarray(array), batch[key])
  assert arrays["image"].addressable_shards[1].data.shape == (2, 16, 16, 3)
  data_only = parallel.batch_sharding(mesh, batch_axes=("data",))
  assert sharding.to_global(batch, data_only)["text"].sharding == data_only
  with pytest.raises(ValueError, match="12 rows.*8 devices"):
    sharding.to_global({"x": np.zeros((12, 2))}, mesh)
  with pytest.raises(ValueError, match="does not divide over the 8 devices"):
    pipeline.make_pipeline(_config(batch_size=12), split="train", mesh=mesh)
  with pytest.raises(ValueError, match="batch axes \\('model',\\)"):
    sharding.to_global(batch, mesh, batch_axes=("model",))


_TWO_PROCESS_SCRIPT = r"""
import sys
import jax
jax.config.update("jax_num_cpu_devices", 4)
jax.distributed.initialize(f"127.0.0.1:{sys.argv[1]}", num_processes=2,
                           process_id=int(sys.argv[2]), heartbeat_timeout_seconds=10)
import numpy as np
from jax.experimental import multihost_utils
from contrastive import parallel
from contrastive import data

cfg = data.default_config()
cfg.update(dict(image_size=8, batch_size=8, max_len=8))
cfg.synthetic.train_size = 16
mesh = parallel.make_mesh()
it = data.make_pipeline(cfg, split="train", mesh=mesh)
assert it.batch_size == 4, it.batch_size
seen = []
for _ in range(2):  # one epoch of 16
  local = next(it)
  batch = data.to_global(local, mesh)
  assert batch["image"].shape == (8, 8, 8, 3), batch["image"].shape
  assert batch["text"].sharding.spec[0] == ("data", "fsdp")
  seen.append(np.asarray(multihost_utils.process_allgather(batch["index"], tiled=True)))
seen = np.concatenate(seen)
assert sorted(seen.tolist()) == list(range(16)), seen
print("OK", jax.process_index())
"""


def test_two_jax_processes_assemble_the_global_batch(tmp_path, repo_root):
  """Two real JAX processes: disjoint per-process batches become one global array."""
  script = tmp_path / "two.py"
  script.write_text(_TWO_PROCESS_SCRIPT)
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(PYTHONPATH=repo_root, JAX_PLATFORMS="cpu")
  procs = [
    subprocess.Popen(
      [sys.executable, str(script), str(port), str(i)],
      cwd=repo_root,
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
      start_new_session=True,
    )
    for i in range(2)
  ]
  outs = []
  for p in procs:
    try:
      outs.append(p.communicate(timeout=120))
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
    assert "OK" in out.splitlines()[-1]
