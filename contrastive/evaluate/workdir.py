"""Evaluating a run's checkpoint: what `python -m contrastive.evaluate --workdir DIR` calls.

The model, the data transforms and the tasks all come from the run config (resolved over the
trainer's defaults by `contrastive.run.config`); the parameters from
`{workdir}/checkpoints/{step}` (the latest by default, read by `contrastive.run.workdir`). A
workdir without a checkpoint is evaluated at initialization (seed `config.seed`), which gives the
untrained baseline. The evaluation itself is `contrastive.evaluate.configured.run`, the one the
trainer runs.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from absl import logging
import jax
import ml_collections

from contrastive import models
from contrastive import parallel
from contrastive.evaluate import configured
from contrastive.evaluate import runner
from contrastive.run import config as run_config
from contrastive.run import workdir as workdir_lib


def evaluate_workdir(
  config: ml_collections.ConfigDict,
  workdir: str | os.PathLike,
  *,
  step: int | None = None,
  output_dir: str | os.PathLike | None = None,
) -> dict[str, float]:
  """Evaluates the checkpoint of `workdir` on `config.eval.tasks`; writes the report.

  Args:
    config: the run config (as for `python -m contrastive.train`).
    workdir: the run's directory.
    step: the checkpoint to evaluate; None: the latest, or the initial parameters when there
      is no checkpoint yet.
    output_dir: where the report goes; default `{workdir}/eval`.

  Returns:
    The metrics (also in `{output_dir}/metrics.json`).

  Raises:
    FileNotFoundError: `step` was given and there is no such checkpoint.
    ValueError: a bad config (unknown keys, tasks, sources...), before anything runs.
  """
  config = run_config.resolve(config)
  if not config.eval.tasks:
    raise ValueError(
      "config.eval.tasks is empty: nothing to evaluate (see contrastive.evaluate.default_tasks)."
    )
  runner.check_tasks(config.eval.tasks)
  mesh = parallel.make_mesh(**config.mesh.to_dict())
  model = models.make_model(config.model)
  init = functools.partial(model.init, train=False)
  args = (jax.random.key(int(config.seed)), model.dummy_batch(2))
  shardings = parallel.logical_shardings(jax.eval_shape(init, *args), mesh)["params"]
  params: Any
  try:
    params, step = workdir_lib.restore_params(workdir, step=step)
    params = jax.device_put(params, shardings)
    logging.info("Evaluating checkpoint %d of %s.", step, workdir)
  except FileNotFoundError:
    if step is not None:
      raise
    logging.warning(
      "No checkpoint in %s: evaluating the initial parameters (seed %d).", workdir, config.seed
    )
    params, step = parallel.sharded_init(init, mesh, *args)[0]["params"], 0
  output_dir = os.path.join(os.fspath(workdir), "eval") if output_dir is None else output_dir
  return configured.run(model, params, config, mesh=mesh, workdir=output_dir, step=step)
