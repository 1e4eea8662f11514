"""Multi-host start-up: when `initialize` connects processes, and the host flags."""

from absl import flags
import jax

from contrastive import multihost


def test_initialize_does_nothing_without_an_address(monkeypatch):
  for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
    monkeypatch.delenv(name, raising=False)
  called = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: called.append(kw))
  assert not multihost.initialize(num_processes=2, process_id=0)
  assert not called


def test_initialize_takes_the_flags_then_the_environment(monkeypatch):
  called = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: called.append(kw))
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
  monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
  monkeypatch.setenv("JAX_PROCESS_ID", "3")
  monkeypatch.setenv("CONTRASTIVE_HEARTBEAT_TIMEOUT", "30")
  assert multihost.initialize(process_id=1)
  assert called[-1] == dict(
    coordinator_address="10.0.0.1:1234", num_processes=4, process_id=1, heartbeat_timeout_seconds=30
  )
  monkeypatch.delenv("JAX_COORDINATOR_ADDRESS")
  monkeypatch.delenv("CONTRASTIVE_HEARTBEAT_TIMEOUT")
  assert multihost.initialize(distributed=True)  # a cluster JAX detects: no address needed
  assert called[-1] == dict(coordinator_address=None, num_processes=4, process_id=3)


def test_host_flags_pass_their_values_to_initialize(monkeypatch):
  for name in (
    "JAX_COORDINATOR_ADDRESS",
    "JAX_NUM_PROCESSES",
    "JAX_PROCESS_ID",
    "CONTRASTIVE_HEARTBEAT_TIMEOUT",
  ):
    monkeypatch.delenv(name, raising=False)
  called = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: called.append(kw))
  flag_values = flags.FlagValues()
  hosts = multihost.define_host_flags(flag_values)
  flag_values(["prog"])
  assert not hosts.initialize() and not called
  flag_values(["prog", "--coordinator_address=127.0.0.1:5", "--num_processes=2", "--process_id=1"])
  assert hosts.initialize()
  assert called == [dict(coordinator_address="127.0.0.1:5", num_processes=2, process_id=1)]
  names = {"distributed", "coordinator_address", "num_processes", "process_id"}
  assert {f.name for f in flag_values.get_key_flags_for_module(__name__)} == names  # --help
