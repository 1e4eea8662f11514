r"""Evaluates a checkpoint written by the trainer on the config's `eval.tasks`.

    python -m contrastive.evaluate --config configs/demo.py --workdir runs/demo   # latest
    python -m contrastive.evaluate --workdir runs/demo --checkpoint 400           # its config.json
    python -m contrastive.evaluate --config configs/demo.py --workdir runs/demo \
        --config.eval.tasks.retrieval.source.num_examples=2000 --output runs/demo/eval_2k

Without `--config`, the run's resolved config (`{workdir}/config.json`, written by the trainer)
is used. A workdir without checkpoints is evaluated at initialization (the untrained baseline).
The report (`metrics.json`, `history.jsonl`, PNG plots) goes to `--output`, by default
`{workdir}/eval`. The work is done by `contrastive.evaluate.workdir.evaluate_workdir`.
"""

import json
import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "A config file (`configs/NAME.py[:arg]`); default: {workdir}/config.json.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The training run's directory.", required=True)
_CHECKPOINT = flags.DEFINE_integer("checkpoint", None, "The step to evaluate (default: latest).")
_OUTPUT = flags.DEFINE_string("output", None, "Where the report goes (default {workdir}/eval).")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize() with cluster auto-detection.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")


def _run_config(workdir: str):
  import ml_collections  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"No --config given and no {path} (written by the trainer).")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["stderrthreshold"].present:
    flags.FLAGS.stderrthreshold = "warning"
  # Imported here so that `--help` and flag errors come back without starting JAX.
  from contrastive.evaluate import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  from contrastive.train import hosts  # pylint: disable=g-import-not-at-top
  hosts.initialize(coordinator_address=_COORDINATOR.value, num_processes=_NUM_PROCESSES.value,
                   process_id=_PROCESS_ID.value, distributed=_DISTRIBUTED.value)
  import jax  # pylint: disable=g-import-not-at-top
  try:
    config = _CONFIG.value if _CONFIG.value is not None else _run_config(_WORKDIR.value)
    metrics = workdir_lib.evaluate_workdir(config, _WORKDIR.value, step=_CHECKPOINT.value,
                                           output_dir=_OUTPUT.value)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(1)
  if jax.process_index() == 0:  # the CLI's output: the one place that prints
    width = max((len(k) for k in metrics), default=0)
    for key in sorted(metrics):
      print(f"{key:<{width}}  {metrics[key]:.4f}")
    output = _OUTPUT.value or os.path.join(_WORKDIR.value, "eval")
    print(f"Report: {output}/metrics.json and PNG plots.", flush=True)


if __name__ == "__main__":
  app.run(main)
