"""Every test sees 8 simulated CPU devices, so the ring and the mesh run as on a pod slice."""

import os

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Tests that compile for a TPU topology load libtpu, which allows one process per machine
# unless told otherwise: pytest-xdist runs several.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

import jax

jax.config.update("jax_enable_x64", False)
