"""The gap study's controlled case: CLIP's loss between two image towers on the same images.

Two CNN towers of the demo's image tower (`image` and `view`, independently initialized) are
trained with the softmax loss on the built-in training images, the second tower seeing each
image with Gaussian pixel jitter (sigma `JITTER` in the normalized [-1, 1] range). The run goes
through the library's train step (`contrastive.train.assemble`), with this small loop instead of
the trainer's because the trainer's data and evaluation have one image and one text modality.
The evaluation embeds the clean held-out test images with both towers and reports the same
geometry and exact-pair retrieval (tower `image` -> tower `view` as "image -> text") as the
trainer runs, with and without GR-CLIP's removal of each side's mean (taken on other images).
"""

from __future__ import annotations

import os
import pathlib
import time

import jax
import ml_collections
import numpy as np

JITTER = 0.1


def _evaluate(model, params, config, mesh, source, reference):
  from contrastive import parallel
  from contrastive.evaluate import configured
  from contrastive.evaluate import gap_removal
  from contrastive.evaluate import geometry
  from contrastive.evaluate import retrieval
  from contrastive.evaluate.context import Context

  prepare = configured.make_prepare(config.data)

  def embeddings(tower, src):
    fn = jax.jit(
      lambda b: {
        "image": model.apply({"params": params}, {tower: b["image"]}, train=False)[0][tower]
      }
    )
    ctx = Context(
      embed_fn=fn,
      prepare=prepare,
      batch_size=int(config.eval.batch_size),
      mesh=mesh,
      sources=configured.eval_sources(config.data),
    )
    return ctx.load(src)[0]

  with parallel.use_rules(mesh):
    x, y = embeddings("image", source), embeddings("view", source)
    xr, yr = embeddings("image", reference), embeddings("view", reference)
  out = {f"geometry/{k}": v for k, v in geometry.geometry_metrics(x, y, mesh=mesh).items()}
  pairs = np.arange(len(x), dtype=np.int32)
  for name, (a, b) in {
    "retrieval_exact": (x, y),
    "retrieval_exact_gr": (
      gap_removal.remove_gap(x, xr.mean(0)),
      gap_removal.remove_gap(y, yr.mean(0)),
    ),
  }.items():
    r = retrieval.retrieval_metrics(a, b, y_to_x=pairs, mesh=mesh)
    out.update({f"{name}/{k}": float(v) for k, v in r.items()})
  return {k: float(v) for k, v in out.items()}


def run(config, args, workdir: pathlib.Path, seed: int) -> dict:
  """Trains and evaluates the controlled case; the same fields as the study's trainer runs."""
  from _gap_report import METRICS

  from contrastive import data
  from contrastive import losses
  from contrastive import models
  from contrastive import parallel
  from contrastive.run import config as run_config
  from contrastive.train import assemble
  from contrastive.train import step as step_lib

  source = dict(config.eval.tasks["retrieval_exact"]["source"].to_dict())
  reference = dict(source, seed=1)
  config.eval.tasks = ml_collections.ConfigDict()
  image = config.model.encoders["image"].to_dict()
  config.model.encoders = ml_collections.ConfigDict({"image": image, "view": dict(image)})
  config = run_config.resolve(config)
  model = models.make_model(config.model)
  mesh = parallel.make_mesh(**config.mesh)
  step_config = step_lib.StepConfig(
    modalities=("image", "view"), max_scale=model.max_scale, seed=config.seed
  )
  load_before = os.getloadavg()
  start = time.time()
  print(f"[same-modality seed {seed}] -> {workdir} (no checkpoints)", flush=True)
  state, shardings, tx = assemble.create_train_state(config, model, mesh)
  train_step = assemble.make_train_step(
    config, model, losses.get("softmax"), tx, mesh, shardings, step_config
  )
  history = [{"step": 0, **_evaluate(model, state.params, config, mesh, source, reference)}]
  it = data.make_pipeline(
    config.data, training=True, mesh=mesh, batch_axes=parallel.batch_axes(mesh)
  )
  rng = np.random.default_rng(seed)
  sharding = parallel.batch_sharding(mesh)
  metrics = {}
  try:
    for step in range(1, args.steps + 1):
      images = np.asarray(next(it)["image"])
      view = images + JITTER * rng.standard_normal(images.shape).astype(images.dtype)
      batch = data.to_global({"image": images, "view": view}, sharding)
      state, metrics = train_step(state, batch)
      if step % args.eval_every == 0 or step == args.steps:
        history.append(
          {"step": step, **_evaluate(model, state.params, config, mesh, source, reference)}
        )
  finally:
    if hasattr(it, "close"):
      it.close()
  wall = time.time() - start
  train_loss = float(jax.device_get(metrics["loss"]))
  print(f"[same-modality seed {seed}] {wall:.0f} s, train loss {train_loss:.3f}", flush=True)
  return dict(
    wall_s=wall,
    load_before=list(load_before),
    load_after=list(os.getloadavg()),
    final={k: history[-1].get(k) for k, _ in METRICS},
    train_loss=train_loss,
    logit_scale=float(jax.device_get(metrics["scale"])),
    history=[{"step": h["step"], **{k: h.get(k) for k, _ in METRICS}} for h in history],
  )
