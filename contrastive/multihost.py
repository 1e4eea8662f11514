"""Multi-host start-up: `jax.distributed.initialize()` when the flags or the environment say so.

The same command runs on one process or many. `initialize` connects the processes when

- a coordinator address is given (`--coordinator_address`, or `JAX_COORDINATOR_ADDRESS` in the
  environment), with `--num_processes` and `--process_id` (or `JAX_NUM_PROCESSES`,
  `JAX_PROCESS_ID`); this is how a GPU host runs one process per GPU group, or how processes on
  one machine are tested; or
- `--distributed` is set, for clusters JAX detects by itself (Cloud TPU pods, SLURM, Open MPI
  and others), which need no address.

Otherwise it does nothing: a single process with all local devices. `define_host_flags` gives a
command line those four flags.
"""

from __future__ import annotations

import dataclasses
import os

from absl import flags
from absl import logging
import jax

# The flags `define_host_flags` declares belong to the module that calls it (its `--help` lists
# them), not to this one.
flags.disclaim_key_flags()


def _env_int(name: str) -> int | None:
  value = os.environ.get(name)
  return None if value in (None, "") else int(value)


def initialize(
  *,
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
  distributed: bool = False,
  heartbeat_timeout_seconds: int | None = None,
) -> bool:
  """Connects this process to the others if asked; returns whether it did.

  Call it before anything starts JAX's backend (`jax.devices()`, a first array).

  Args:
    coordinator_address: `host:port` of process 0; default `$JAX_COORDINATOR_ADDRESS`.
    num_processes, process_id: default `$JAX_NUM_PROCESSES`, `$JAX_PROCESS_ID`.
    distributed: initialize even without an address (cluster auto-detection).
    heartbeat_timeout_seconds: how long the others wait for a process that stopped answering
      before they abort (JAX's default is about 100 s); default `$CONTRASTIVE_HEARTBEAT_TIMEOUT`.
  """
  coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
  if num_processes is None:
    num_processes = _env_int("JAX_NUM_PROCESSES")
  if process_id is None:
    process_id = _env_int("JAX_PROCESS_ID")
  if heartbeat_timeout_seconds is None:
    heartbeat_timeout_seconds = _env_int("CONTRASTIVE_HEARTBEAT_TIMEOUT")
  if not (coordinator_address or distributed):
    return False
  kwargs = {}
  if heartbeat_timeout_seconds is not None:
    kwargs["heartbeat_timeout_seconds"] = int(heartbeat_timeout_seconds)
  jax.distributed.initialize(
    coordinator_address=coordinator_address,
    num_processes=num_processes,
    process_id=process_id,
    **kwargs,
  )
  logging.info(
    "Process %d of %d started (%d local devices, %d in all).",
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
  )
  return True


@dataclasses.dataclass(frozen=True)
class HostFlags:
  """The multi-host flags of a command line (see `define_host_flags`)."""

  distributed: flags.FlagHolder[bool]
  coordinator_address: flags.FlagHolder[str | None]
  num_processes: flags.FlagHolder[int | None]
  process_id: flags.FlagHolder[int | None]

  def initialize(self) -> bool:
    """`initialize` with the parsed flags' values; returns whether it connected processes."""
    return initialize(
      coordinator_address=self.coordinator_address.value,
      num_processes=self.num_processes.value,
      process_id=self.process_id.value,
      distributed=self.distributed.value,
    )


def define_host_flags(flag_values: flags.FlagValues = flags.FLAGS) -> HostFlags:
  """Declares `--distributed`, `--coordinator_address`, `--num_processes` and `--process_id`.

  They are declared as the calling module's flags, so its `--help` lists them.

  Example (a `__main__` module):
    >>> _HOSTS = multihost.define_host_flags()
    >>> def main(argv):
    ...   _HOSTS.initialize()   # before anything starts JAX's backend
  """
  return HostFlags(
    distributed=flags.DEFINE_bool(
      "distributed",
      False,
      "Call jax.distributed.initialize() with cluster auto-detection.",
      flag_values=flag_values,
    ),
    coordinator_address=flags.DEFINE_string(
      "coordinator_address",
      None,
      "host:port of process 0 (or $JAX_COORDINATOR_ADDRESS).",
      flag_values=flag_values,
    ),
    num_processes=flags.DEFINE_integer(
      "num_processes", None, "Number of processes (or $JAX_NUM_PROCESSES).", flag_values=flag_values
    ),
    process_id=flags.DEFINE_integer(
      "process_id", None, "This process's index (or $JAX_PROCESS_ID).", flag_values=flag_values
    ),
  )
