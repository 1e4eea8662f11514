r"""Trains a contrastive model from a config file.

    python -m contrastive.train --config configs/demo.py --workdir runs/demo
    python -m contrastive.train --config configs/clip_vit_b16.py --workdir runs/clip \
        --config.optim.lr=3e-4 --config.data.batch_size=4096

Rerunning the same command resumes from the workdir's latest checkpoint. Several processes
(one per host of a TPU pod or GPU cluster): add `--distributed` where JAX detects the cluster,
or give `--coordinator_address=HOST:PORT --num_processes=N --process_id=I`.
"""

import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/demo.py", "A config file (`configs/NAME.py[:arg]`).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The run's directory (checkpoints, logs).",
                               required=True)
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize() with cluster auto-detection.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 (or $JAX_COORDINATOR_ADDRESS).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
_TUNE_MALLOC = flags.DEFINE_bool(
    "tune_malloc", True, "On a run on one CPU device, set glibc malloc to keep XLA's step "
    "buffers mapped (about 15% faster steps; see contrastive/train/allocator.py).")


def _print(line: str) -> None:
  print(line, flush=True)  # the CLI's progress line: the one place that prints


def _setup_logging(workdir: str) -> None:
  """Full logs to `{workdir}/logs/`; the console gets the progress lines and warnings only
  (pass `--verbosity=0` or `--alsologtostderr` to see everything there too)."""
  import os  # pylint: disable=g-import-not-at-top
  log_dir = os.path.join(workdir, "logs")
  os.makedirs(log_dir, exist_ok=True)
  logging.get_absl_handler().use_absl_log_file("train", log_dir)
  if not flags.FLAGS["stderrthreshold"].present:
    flags.FLAGS.stderrthreshold = "warning"
  if flags.FLAGS["verbosity"].present and not flags.FLAGS["alsologtostderr"].present:
    flags.FLAGS.alsologtostderr = True


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  # Imported here so that `--help` and flag errors come back without starting JAX.
  from contrastive.train import allocator  # pylint: disable=g-import-not-at-top
  from contrastive.train import hosts  # pylint: disable=g-import-not-at-top
  from contrastive.train import loop  # pylint: disable=g-import-not-at-top
  _setup_logging(_WORKDIR.value)
  if _TUNE_MALLOC.value:
    allocator.keep_step_buffers_mapped()  # before JAX starts its backend
  hosts.initialize(coordinator_address=_COORDINATOR.value, num_processes=_NUM_PROCESSES.value,
                   process_id=_PROCESS_ID.value, distributed=_DISTRIBUTED.value)
  import jax  # pylint: disable=g-import-not-at-top
  logging.info("JAX %s: process %d of %d, %d local devices (%s).", jax.__version__,
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.devices()[0].platform)
  progress = _print if jax.process_index() == 0 else (lambda line: logging.info("%s", line))
  try:
    loop.train_and_evaluate(_CONFIG.value, _WORKDIR.value, progress=progress)
  except (ValueError, FileNotFoundError, loop.NonFiniteLossError) as e:
    logging.error("%s", e)
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
