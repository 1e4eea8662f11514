"""Every test sees 8 simulated CPU devices, so the ring and the mesh run as on a pod slice."""

import os

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402  (imported after the flag on purpose)

jax.config.update("jax_enable_x64", False)
