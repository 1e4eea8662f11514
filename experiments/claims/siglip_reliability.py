"""SigLIP's sigmoid loss on the loss-zoo recipe's short runs, 5 seeds, before and after the fix.

Before: the sigmoid loss with SigLIP's initialization, scale 10 and bias -10 (the prior of a
positive at a batch of about 22,000). After: the bias starts at the prior of a positive in the
run's own batch, `-log(B - 1)` (`contrastive.models.towers.prior_bias`, what
configs/loss_zoo.py now sets for `loss=sigmoid`). Each run is the batch study's
(experiments/claims/batch.py): configs/loss_zoo.py, 19,200 examples seen (steps = examples /
batch), warmup a twentieth of the steps, AdamW at 3e-3, zero-shot shape and colour top-1 on
500 held-out images per view at the end. A run whose zero-shot colour stays under 0.3 (chance:
1/8; a run that learns reaches 0.75 or more) counts as a collapse. `softmax` (CLIP's loss, the
same recipe) is the reference the fix is held to.

    python experiments/claims/siglip_reliability.py      # batch 32, 128, 256 x seeds 0-4, 3 arms
    python experiments/claims/siglip_reliability.py --batches 512 --arms before,after --append

Writes experiments/results/claims/siglip_reliability.{md,json} after every run; with
`--append`, runs already in the json are kept and not run again.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import _study
import numpy as np

# arm: (loss, config overrides, label).
ARMS = {
  "before": ("sigmoid", {"model.bias_init": -10.0}, "sigmoid, b0 = -10 (before)"),
  "after": ("sigmoid", {}, "sigmoid, b0 = -log(B-1) (after)"),
  "softmax": ("softmax", {}, "softmax (reference)"),
}
TASKS = ("zeroshot_shape", "zeroshot_colour")
COLLAPSED_BELOW = 0.3
LR = 3e-3


def run_one(arm, batch, seed, examples, workdir):
  loss, overrides, _ = ARMS[arm]
  steps = examples // batch
  config = _study.zoo_config(
    loss,
    steps=steps,
    batch_size=batch,
    seed=seed,
    tasks=TASKS,
    eval_examples=500,
    overrides={"optim.warmup_steps": max(1, steps // 20), "optim.lr": LR, **overrides},
  )
  tag = f"{arm}_b{batch}_s{seed}"
  run = _study.train_run(config, workdir / tag, tag)
  final = run["final"]
  return dict(
    arm=arm,
    batch=batch,
    seed=seed,
    steps=steps,
    bias_init=config.model.bias_init,
    colour=final["eval/zeroshot_colour/top1"],
    shape=final["eval/zeroshot_shape/top1"],
    loss=final["train/loss"],
    scale=final.get("train/scale"),
    bias=final.get("train/bias"),
    collapsed=final["eval/zeroshot_colour/top1"] < COLLAPSED_BELOW,
    wall_s=run["wall_s"],
    load_before=run["load_before"],
    load_after=run["load_after"],
  )


def write_markdown(path: pathlib.Path, report: dict) -> None:
  runs = report["runs"]
  batches = sorted({r["batch"] for r in runs})
  seeds = sorted({r["seed"] for r in runs})
  arms = [a for a in ARMS if any(r["arm"] == a for r in runs)]
  lines = [
    "# SigLIP on the loss-zoo recipe's short runs: 5 seeds before and after the bias fix",
    "",
    f"Wall time {report['wall_s'] / 60:.1f} min ({len(runs)} runs, one at a time, on a shared "
    f"machine). Command: `{report['command']}`",
    "",
    "Setup: the batch study's runs (experiments/claims/batch.py): configs/loss_zoo.py, "
    f"{report['examples']:,} examples seen (steps = examples / batch), warmup a twentieth of "
    f"the steps, AdamW at lr {LR:g}, cosine decay, clipping at 1.0. Before: SigLIP's init, "
    "scale 10 and bias -10. After: scale 10 and bias -log(B - 1), the prior of a positive in "
    "the batch (`contrastive.models.towers.prior_bias`; configs/loss_zoo.py). Each cell: "
    "zero-shot colour / shape top-1 in % on 500 held-out images per view (chance 12.5 / 12.5), "
    "then the final train loss. Collapse: zero-shot colour under "
    f"{100 * COLLAPSED_BELOW:.0f}%.",
    "",
    "## Collapses",
    "",
    "| arm | " + " | ".join(f"batch {b}" for b in batches) + " |",
    "|---|" + "---:|" * len(batches),
  ]
  for arm in arms:
    cells = []
    for b in batches:
      mine = [r for r in runs if r["arm"] == arm and r["batch"] == b]
      cells.append(f"{sum(r['collapsed'] for r in mine)} of {len(mine)}" if mine else "n/a")
    lines.append(f"| {ARMS[arm][2]} | " + " | ".join(cells) + " |")
  for b in batches:
    steps = next(r["steps"] for r in runs if r["batch"] == b)
    lines += [
      "",
      f"## Batch {b} ({steps} steps)",
      "",
      "| arm | b0 | "
      + " | ".join(f"seed {s}" for s in seeds)
      + " | zero-shot mean (colour, shape) | collapses |",
      "|---|---:|" + "---:|" * len(seeds) + "---:|---:|",
    ]
    for arm in arms:
      mine = {r["seed"]: r for r in runs if r["arm"] == arm and r["batch"] == b}
      if not mine:
        continue
      cells = [
        f"{100 * mine[s]['colour']:.1f} / {100 * mine[s]['shape']:.1f} ({mine[s]['loss']:.2f})"
        if s in mine
        else "n/a"
        for s in seeds
      ]
      colour = _study.seed_stats([r["colour"] for r in mine.values()])
      shape = _study.seed_stats([r["shape"] for r in mine.values()])
      b0 = next(iter(mine.values()))["bias_init"]
      lines.append(
        f"| {ARMS[arm][2]} | {'' if b0 is None else f'{b0:.2f}'} | "
        + " | ".join(cells)
        + f" | {_study.fmt(colour, pct=True)}, {_study.fmt(shape, pct=True)} | "
        f"{sum(r['collapsed'] for r in mine.values())} of {len(mine)} |"
      )
  lines += [
    "",
    "## Runs",
    "",
    "| arm | batch | seed | steps | final t | final b | wall (s) | load avg before | "
    "load avg after |",
    "|---|---:|---:|---:|---:|---:|---:|---|---|",
  ]
  for r in runs:
    t = "" if r["scale"] is None else f"{r['scale']:.2f}"
    bias = "" if r["bias"] is None else f"{r['bias']:.2f}"
    lines.append(
      f"| {r['arm']} | {r['batch']} | {r['seed']} | {r['steps']} | {t} | {bias} | "
      f"{r['wall_s']:.0f} | {', '.join(f'{v:.1f}' for v in r['load_before'])} | "
      f"{', '.join(f'{v:.1f}' for v in r['load_after'])} |"
    )
  if report.get("notes"):
    lines += ["", "## Notes", "", report["notes"]]
  path.write_text("\n".join(lines) + "\n")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--seeds", default="0,1,2,3,4")
  parser.add_argument("--batches", default="32,128,256")
  parser.add_argument("--arms", default="before,after,softmax", help=f"of {list(ARMS)}")
  parser.add_argument("--examples", type=int, default=19_200)
  parser.add_argument("--workdir", default="runs/claims/siglip_reliability")
  parser.add_argument("--out", default=str(_study.RESULTS / "siglip_reliability"))
  parser.add_argument("--append", action="store_true", help="keep the runs in the json at --out")
  parser.add_argument("--notes", default="")
  parser.add_argument("--from_json", default=None, help="rewrite the markdown from this json")
  args = parser.parse_args()
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)

  def write(report):
    out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    write_markdown(out.with_suffix(".md"), report)

  if args.from_json:
    report = json.loads(pathlib.Path(args.from_json).read_text())
    report["notes"] = args.notes or report.get("notes", "")
    write(report)
    return
  report = dict(runs=[], wall_s=0.0, examples=args.examples, command=_study.command())
  if args.append:
    report = json.loads(out.with_suffix(".json").read_text())
    report["command"] += f"; {_study.command()}"
  report["notes"] = args.notes or report.get("notes", "")
  done = {(r["arm"], r["batch"], r["seed"]) for r in report["runs"]}
  workdir = pathlib.Path(args.workdir).resolve()
  for batch in (int(b) for b in args.batches.split(",")):
    for seed in (int(s) for s in args.seeds.split(",")):
      for arm in args.arms.split(","):
        if arm not in ARMS:
          raise ValueError(f"Unknown arm {arm!r}; known: {list(ARMS)}.")
        if (arm, batch, seed) in done:
          continue
        start = time.time()
        report["runs"].append(run_one(arm, batch, seed, args.examples, workdir))
        report["wall_s"] += time.time() - start
        write(report)
  collapses = {
    arm: int(np.sum([r["collapsed"] for r in report["runs"] if r["arm"] == arm]))
    for arm in ARMS
    if any(r["arm"] == arm for r in report["runs"])
  }
  print(f"Collapses per arm: {collapses}. Wrote {out}.{{md,json}}")


if __name__ == "__main__":
  main()
