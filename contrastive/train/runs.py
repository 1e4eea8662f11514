"""A trained run, back in Python: its model, parameters and input preparation, ready to embed.

emb = train.load_run("runs/demo")            # the latest checkpoint, the run's own config
emb.embed("text", ["a red circle"])           # [1, embed_dim]
emb.zeroshot(images, class_names, templates)  # see `contrastive.evaluate.Embedder`
"""

from __future__ import annotations

import os

import jax
import ml_collections

from contrastive import models
from contrastive.evaluate import configured
from contrastive.evaluate import interactive
from contrastive.run import config as run_config
from contrastive.run import workdir as workdir_lib


def load_run(
  workdir: str | os.PathLike,
  *,
  config: ml_collections.ConfigDict | None = None,
  step: int | None = None,
  ema: bool = False,
) -> interactive.Embedder:
  """The model of a run's checkpoint as an `evaluate.Embedder` (host arrays, one device).

  Args:
    workdir: the run's directory.
    config: the run config; default the one the run saved (`{workdir}/config.json`).
    step: the checkpoint; None for the latest.
    ema: the EMA of the weights (`optim.ema_decay`) in place of the weights; export them with
      `models.save_pretrained(config.model, run.params, path, family=...)`.

  Raises:
    FileNotFoundError: no checkpoint, or no config given and none saved.
    ValueError: `ema` for a run without an EMA.
  """
  workdir = os.fspath(workdir)
  if config is None:
    saved = workdir_lib.saved_config(workdir)
    if saved is None:
      raise FileNotFoundError(f"No {workdir_lib.CONFIG_FILE} in {workdir}: pass the run's config.")
    config = ml_collections.ConfigDict(saved)
  config = run_config.resolve(config)
  params, _ = workdir_lib.restore_params(workdir, step=step, ema=ema)
  return interactive.Embedder(
    models.make_model(config.model), jax.device_get(params), configured.make_prepare(config.data)
  )
