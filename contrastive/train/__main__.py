r"""Trains a contrastive model from a config file.

    python -m contrastive.train --config configs/demo.py --workdir runs/demo
    python -m contrastive.train --config configs/clip_vit_b16.py --workdir runs/clip \
        --config.optim.lr=3e-4 --config.data.batch_size=4096

Rerunning the same command resumes from the workdir's latest checkpoint. Several processes
(one per host of a TPU pod or GPU cluster): add `--distributed` where JAX detects the cluster,
or give `--coordinator_address=HOST:PORT --num_processes=N --process_id=I`.

Will it fit? `--compile_for=v5e:16x16` (any libtpu topology, or `cpu:8`) compiles the run's train
step for that topology's chips without them or any data, prints its memory per chip and exits 0
when it fits, 1 when not (`contrastive/train/compile_cli.py`); no `--workdir` is needed.
"""

import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from contrastive import multihost

_DEFAULT_CONFIG = "configs/demo.py"
try:
  _CONFIG = config_flags.DEFINE_config_file(
    "config", _DEFAULT_CONFIG, "A config file (`configs/NAME.py[:arg]`).", lock_config=True
  )
except Exception as e:
  from contrastive.run import overrides

  overrides.fail(sys.argv, e, config=_DEFAULT_CONFIG)
_WORKDIR = flags.DEFINE_string("workdir", None, "The run's directory (checkpoints, logs).")
_COMPILE_FOR = flags.DEFINE_string(
  "compile_for",
  None,
  "Only compile the run's step for this topology (v5e:16x16, v4:2x2x1, "
  "cpu:8, ...) and report whether it fits each chip's memory; needs no --workdir.",
)
flags.register_multi_flags_validator(
  ["workdir", "compile_for"],
  lambda f: f["workdir"] is not None or bool(f["compile_for"]),
  "--workdir is required (or --compile_for=TOPOLOGY to compile only).",
)
_HOSTS = multihost.define_host_flags()
_TUNE_MALLOC = flags.DEFINE_bool(
  "tune_malloc",
  True,
  "On a run on one CPU device, set glibc malloc to keep XLA's step "
  "buffers mapped (faster steps, the same numbers; see docs/hardware.md).",
)


def _print(line: str) -> None:
  print(line, flush=True)  # the CLI's progress line: the one place that prints


def _setup_logging(workdir: str) -> None:
  """Full logs to `{workdir}/logs/`; the console gets the progress lines and warnings only
  (pass `--verbosity=0` or `--alsologtostderr` to see everything there too)."""
  import os

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
  if _COMPILE_FOR.value:
    sys.exit(_compile_only(_COMPILE_FOR.value))
  # Imported here so that `--help` and flag errors come back without starting JAX.
  from contrastive.train import allocator
  from contrastive.train import loop

  _setup_logging(_WORKDIR.value)
  if _TUNE_MALLOC.value:
    allocator.keep_step_buffers_mapped()  # before JAX starts its backend
  _HOSTS.initialize()
  import jax

  logging.info(
    "JAX %s: process %d of %d, %d local devices (%s).",
    jax.__version__,
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.devices()[0].platform,
  )
  progress = _print if jax.process_index() == 0 else (lambda line: logging.info("%s", line))
  try:
    loop.train_and_evaluate(_CONFIG.value, _WORKDIR.value, progress=progress)
  except (ValueError, FileNotFoundError, loop.NonFiniteLossError) as e:
    logging.info("error: %s", e)  # to the log file; the console gets the line below
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(1)
  except KeyboardInterrupt:
    sys.exit(130)  # the loop saved what it could and said so; no traceback


def _compile_only(topology: str) -> int:
  from contrastive.train import compile_cli

  if not flags.FLAGS["stderrthreshold"].present:
    flags.FLAGS.stderrthreshold = "warning"
  compile_cli.prepare_backend(topology)  # before JAX starts its backend
  try:
    return compile_cli.main(_CONFIG.value, topology, write=_print)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    return 1


def _parse_flags(argv):
  from contrastive.run import overrides

  return overrides.parse_flags(argv)  # a bad config file or override: one line, no traceback


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
