"""Every test sees 8 simulated CPU devices, so the ring and the mesh run as on a pod slice."""

import atexit
import os
import shutil
import tempfile

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The trainer turns JAX's persistent compilation cache on (contrastive.train.compile_cache); the
# tests keep theirs in a directory of their own, never the user's.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="contrastive-tests-")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
# Tests that compile for a TPU topology load libtpu, which allows one process per machine
# unless told otherwise: pytest-xdist runs several.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

import jax

jax.config.update("jax_enable_x64", False)
