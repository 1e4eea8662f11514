"""Is the gap there from step 0, does CLIP open it, do CUA/CUAXU and the gap tools close it?

Liang et al., "Mind the Gap" (2022): the gap exists at initialization (each random tower maps
its inputs into a narrow cone of its own) and contrastive training preserves it. Fahim, Murphy &
Fyshe, "It's Not a Modality Gap" (2024): the gap is a *contrastive* gap, which appears even with
the same modality on both sides; adding alignment and per-modality uniformity (CUA), and also a
cross-modal uniformity (CUAXU), closes it and keeps zero-shot accuracy.

This trains the demo (configs/loss_zoo.py through the trainer) with `softmax` (CLIP),
`contrastive_gap` `variant="cua"` (CUA) and `"cuaxu"` (CUAXU), and CLIP with each gap tool of
`contrastive.losses.gap_tools` (C³'s centering and noise, a temperature schedule, modality
swapping); every run is also scored with GR-CLIP's gap removal at evaluation (task kind
`gap_removed`). The controlled case trains CLIP's loss between two CNN towers of the demo's
image tower on the same images (the second view with Gaussian pixel jitter), through the
library's train step with its own small loop (the trainer's data and evaluation have one image
and one text modality). The geometry is measured at step 0 (the initial parameters) and every
`--eval_every` steps on held-out test pairs.

    python experiments/claims/gap.py            # 150 steps, seeds 0,1,2 (the tools: seed 0)
    python experiments/claims/gap.py --steps 300 --seeds 0 --rows CLIP,same-modality

Writes experiments/results/claims/gap.{md,png,json}; the runs stay in --workdir.
"""

from __future__ import annotations

import argparse
import pathlib
import time

import _gap_controlled
import _gap_report
import _study
import numpy as np

# label -> (zoo loss, `config.loss` options); "same-modality" is the controlled case.
ROWS = {
  "CLIP": ("softmax", {}),
  "same-modality": ("softmax", {}),
  "CUA": ("contrastive_gap", {"variant": "cua"}),
  "CUAXU": ("contrastive_gap", {"variant": "cuaxu"}),
  "CLIP+C3": ("softmax", {"center": True, "embedding_noise": 0.03}),
  "CLIP+tau": ("softmax", {"scale_schedule": {"start_tau": 0.1, "end_tau": 0.04}}),
  "CLIP+swap": ("softmax", {"swap_fraction": 0.5}),
}
TASKS = ("zeroshot_shape", "zeroshot_colour", "retrieval_exact", "geometry")
# GR-CLIP: the same tasks with each modality's mean, taken on 500 other test pairs, removed.
REMOVED = {"zeroshot_shape_gr": "zeroshot_shape", "retrieval_exact_gr": "retrieval_exact"}


def _with_removal(config, eval_examples: int):
  """`config` with the `REMOVED` tasks: the task wrapped in `gap_removed`, the reference set
  the retrieval source drawn with another seed."""
  import ml_collections

  tasks = config.eval.tasks.to_dict()
  reference = dict(tasks["retrieval_exact"]["source"], seed=1, num_examples=eval_examples)
  for name, inner in REMOVED.items():
    tasks[name] = dict(kind="gap_removed", task=tasks[inner], reference=reference)
  config.eval.tasks = ml_collections.ConfigDict(tasks)
  return config


def step0_metrics(config) -> dict:
  """The evaluation of the initial parameters (those the trainer starts from)."""
  from contrastive import models
  from contrastive import parallel
  from contrastive.evaluate import configured
  from contrastive.run import config as run_config
  from contrastive.train import assemble

  config = run_config.resolve(config)
  model = models.make_model(config.model)
  mesh = parallel.make_mesh(**config.mesh)
  state, _, _ = assemble.create_train_state(config, model, mesh)
  out = configured.run(model, state.params, config, mesh=mesh, workdir=None, step=0)
  return {f"eval/{k}": float(v) for k, v in out.items()}


def run_one(label: str, seed: int, args, workdir: pathlib.Path) -> dict:
  loss, options = ROWS[label]
  config = _study.zoo_config(
    loss,
    steps=args.steps,
    batch_size=args.batch_size,
    seed=seed,
    tasks=TASKS,
    eval_examples=args.eval_examples,
    eval_every=args.eval_every,
  )
  config.loss.update(options)
  if label == "same-modality":
    return dict(label=label, seed=seed, **_gap_controlled.run(config, args, workdir, seed))
  config = _with_removal(config, args.eval_examples)
  start = time.time()
  first = step0_metrics(config)
  step0_s = time.time() - start
  run = _study.train_run(config, workdir / f"{label.lower()}_s{seed}", f"{label} seed {seed}")
  history = [{"step": 0, **{k[len("eval/") :]: v for k, v in first.items()}}] + run["history"]
  final = run["final"]
  return dict(
    label=label,
    seed=seed,
    wall_s=run["wall_s"] + step0_s,
    load_before=run["load_before"],
    load_after=run["load_after"],
    final={k: final.get(f"eval/{k}") for k, _ in _gap_report.METRICS},
    train_loss=final.get("train/loss"),
    logit_scale=final.get("train/scale"),
    history=[{"step": h["step"], **{k: h.get(k) for k, _ in _gap_report.METRICS}} for h in history],
  )


def main():
  parser = _study.study_parser(__doc__, "gap")
  parser.add_argument("--steps", type=int, default=150)
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--eval_every", type=int, default=None, help="default: steps // 3")
  parser.add_argument("--eval_examples", type=int, default=500)
  parser.add_argument("--rows", default=",".join(ROWS))
  parser.add_argument(
    "--tool_seeds", default="0", help="the seeds of the CLIP+ rows (the gap tools; all: --seeds)"
  )
  args = parser.parse_args()
  old = _study.saved_study(args)
  out = pathlib.Path(args.out)
  if old is not None:
    _gap_report.write(out, old["runs"], args, old["wall_s"], old["command"], ROWS)
    return
  args.eval_every = args.eval_every or max(args.steps // 3, 1)
  seeds = [int(s) for s in args.seeds.split(",")]
  labels = args.rows.split(",")
  unknown = [k for k in labels if k not in ROWS]
  if unknown:
    parser.error(f"unknown --rows {unknown}; known: {list(ROWS)}")
  tool_seeds = [int(s) for s in (args.tool_seeds or args.seeds).split(",")]
  args.seeds, args.tool_seeds = seeds, tool_seeds
  workdir = pathlib.Path(args.workdir).resolve()
  start = time.time()
  runs = []
  for i, seed in enumerate(seeds):  # seed-major, written after each seed
    for label in labels:
      if label.startswith("CLIP+") and seed not in tool_seeds:
        continue
      runs.append(run_one(label, seed, args, workdir))
      runs[-1]["history"] = [
        {k: (None if v is None else float(np.asarray(v))) for k, v in h.items()}
        | {"step": int(h["step"])}
        for h in runs[-1]["history"]
      ]
    args_now = dict(vars(args), seeds=seeds[: i + 1])
    _gap_report.write(
      out, runs, argparse.Namespace(**args_now), time.time() - start, _study.command(), ROWS
    )


if __name__ == "__main__":
  main()
