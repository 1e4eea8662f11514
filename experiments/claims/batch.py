"""Batch size: softmax vs sigmoid vs DCL at fixed examples seen and at fixed steps, lr tuned.

Claims (Zhai et al., "Sigmoid Loss for Language Image Pre-Training", ICCV 2023, figure 2 and
section 4; Yeh et al., "Decoupled Contrastive Learning", ECCV 2022): the sigmoid loss beats the
softmax loss at small batch sizes and the two meet as the batch grows; DCL, which drops the
positive from the softmax's denominator, is less sensitive to a small batch than softmax.

This trains the demo (configs/loss_zoo.py) with `softmax`, `sigmoid` (the zoo's init: scale 10,
bias at the batch's prior -log(B - 1), `models.towers.prior_bias`) and `dcl` at each global
batch in two regimes: (a) the same examples seen (`--examples`, steps = examples / batch) and
(b) the same steps (`--steps`); a (batch, steps) cell in both is run once. Each (loss, batch,
regime) gets its learning rate from a sweep on seed 0 (the demo's 3e-3 times sqrt(batch / 128)
times each of `--lr_factors`), picked by zero-shot accuracy on validation draws (dataset seed 1,
not the test draws of seed 0), then runs on every seed at that rate (seed 0 is the sweep's run).
A run whose test zero-shot colour stays under 30% (chance 12.5%) is a collapse: counted apart,
left out of the means.

    python experiments/claims/batch.py        # batches 32,256; 19,200 examples; 75 steps
    python experiments/claims/batch.py --batches 32,128,256 --steps 150 --lr_factors 0.5,1,2

A study cut short resumes: a run whose `result.json` exists in --workdir is read, not rerun.
Writes experiments/results/claims/batch.{md,png,json}; the runs stay in --workdir.
"""

from __future__ import annotations

import json
import pathlib

import _study
import numpy as np

LOSSES = {"softmax": "softmax (CLIP)", "sigmoid": "sigmoid (SigLIP)", "dcl": "DCL"}
TASKS = ("zeroshot_shape", "zeroshot_colour", "retrieval_exact")
METRICS = [
  ("zeroshot", "zero-shot top-1, shape and colour mean"),
  ("zeroshot_shape/top1", "zero-shot shape top-1"),
  ("zeroshot_colour/top1", "zero-shot colour top-1"),
  ("retrieval_exact/image_to_text/recall@1", "image->text R@1 (exact pair)"),
]
DEMO_LR, DEMO_BATCH = 3e-3, 128
COLLAPSED_BELOW = 0.3  # test zero-shot colour; chance is 1/8, a run that learns reaches 0.75+
VAL_SEED = 1  # the dataset seed of the validation draws (the test tasks use 0)
SWEEP_SEED = 0  # the training seed of the lr sweep, also the first seed of every cell


def run_one(loss, batch, steps, lr, seed, args, workdir):
  """One run (or its saved `result.json` when the settings match): test and validation scores."""
  tag = f"{loss}_b{batch}_n{steps}_lr{lr:.2e}_s{seed}"
  settings = dict(
    loss=loss, batch=batch, steps=steps, lr=lr, seed=seed, val_examples=args.val_examples
  )
  saved = workdir / tag / "result.json"
  if saved.exists():
    result = json.loads(saved.read_text())
    if all(result.get(k) == v for k, v in settings.items()):
      return result
  config = _study.zoo_config(
    loss,
    steps=steps,
    batch_size=batch,
    seed=seed,
    tasks=TASKS,
    eval_examples=args.eval_examples,
    overrides={"optim.warmup_steps": max(1, steps // 20), "optim.lr": lr},
  )
  for view in ("shape", "colour"):  # validation: other draws of the same views
    task = config.eval.tasks[f"zeroshot_{view}"].to_dict()
    task["source"].update(seed=VAL_SEED, num_examples=args.val_examples)
    config.eval.tasks[f"val_{view}"] = task
  run = _study.train_run(config, workdir / tag, tag)
  f = run["final"]
  f["eval/zeroshot"] = (f["eval/zeroshot_shape/top1"] + f["eval/zeroshot_colour/top1"]) / 2
  result = dict(
    settings,
    bias_init=config.model.bias_init,
    val=(f["eval/val_shape/top1"] + f["eval/val_colour/top1"]) / 2,
    collapsed=f["eval/zeroshot_colour/top1"] < COLLAPSED_BELOW,
    **run,
  )
  saved.write_text(json.dumps(result))
  return result


def regimes(args):
  """regime -> [(batch, steps)]."""
  return {
    "examples": [(b, args.examples // b) for b in args.batches],
    "steps": [(b, args.steps) for b in args.batches],
  }


def sweep_lrs(batch, args):
  centre = DEMO_LR * np.sqrt(batch / DEMO_BATCH)
  return [float(f"{centre * f:.3g}") for f in args.lr_factors]


def chosen_lr(runs, loss, batch, steps):
  """The sweep's (seed 0) lr with the best validation zero-shot; None before the sweep ends."""
  sweep = [
    r
    for r in runs
    if (r["loss"], r["batch"], r["steps"], r["seed"]) == (loss, batch, steps, SWEEP_SEED)
  ]
  return max(sweep, key=lambda r: r["val"])["lr"] if sweep else None


def summarize(runs, args):
  """regime -> loss -> batch -> {lr, steps, collapses, n, metric: seed stats without collapses}."""
  out = {}
  for regime, cells in regimes(args).items():
    for loss in LOSSES:
      for batch, steps in cells:
        lr = chosen_lr(runs, loss, batch, steps)
        mine = [
          r
          for r in runs
          if (r["loss"], r["batch"], r["steps"], r["lr"]) == (loss, batch, steps, lr)
          and r["seed"] in {SWEEP_SEED, *args.seeds}
        ]
        kept = [r for r in mine if not r["collapsed"]]
        cell = dict(lr=lr, steps=steps, n=len(mine), collapses=len(mine) - len(kept))
        for key, _ in METRICS:
          cell[key] = _study.seed_stats([r["final"].get(f"eval/{key}") for r in kept])
        # Where every run collapsed, the verdict compares the collapsed runs' own accuracy.
        cell["zeroshot_all"] = _study.seed_stats([r["final"]["eval/zeroshot"] for r in mine])
        out.setdefault(regime, {}).setdefault(loss, {})[str(batch)] = cell
  return out


def verdict(summary, args):
  lo, hi = str(args.batches[0]), str(args.batches[-1])
  parts, claims = [], []
  for regime, name in (
    ("examples", f"{args.examples:,} examples"),
    ("steps", f"{args.steps} steps"),
  ):
    cell = lambda loss, b, regime=regime: summary[regime][loss][b]
    if any(cell(loss, b)["n"] == 0 for loss in LOSSES for b in (lo, hi)):
      parts.append(f"{name}: incomplete")
      continue
    z = lambda loss, b, cell=cell: cell(loss, b)[
      "zeroshot" if cell(loss, b)["zeroshot"]["mean"] is not None else "zeroshot_all"
    ]
    gap_lo = z("sigmoid", lo)["mean"] - z("softmax", lo)["mean"]
    gap_hi = z("sigmoid", hi)["mean"] - z("softmax", hi)["mean"]
    beats = _study.clearly_above(z("sigmoid", lo), z("softmax", lo))
    meet = abs(gap_hi) <= max(abs(gap_lo) / 2, 0.02)
    drop = {loss: z(loss, hi)["mean"] - z(loss, lo)["mean"] for loss in LOSSES}
    dcl_less = drop["softmax"] > 0.02 and drop["dcl"] < drop["softmax"] - 0.02
    claims += [beats and meet, dcl_less]
    cells = lambda b, z=z: ", ".join(f"{k} {100 * z(k, b)['mean']:.1f}" for k in LOSSES)
    parts.append(
      f"{name}: zero-shot at batch {lo} {cells(lo)}; at batch {hi} {cells(hi)}; sigmoid minus "
      f"softmax {100 * gap_lo:+.1f} points at {lo} "
      f"({'sigmoid below' if gap_lo <= 0 else 'over' if beats else 'within'}"
      f"{'' if gap_lo <= 0 else ' two seed spreads'}), {100 * gap_hi:+.1f} at {hi}; "
      f"from batch {hi} to {lo} softmax {'loses' if drop['softmax'] > 0 else 'gains'} "
      f"{100 * abs(drop['softmax']):.1f}, DCL {'loses' if drop['dcl'] > 0 else 'gains'} "
      f"{100 * abs(drop['dcl']):.1f} points ("
      + (
        "softmax loses under 2 points at the small batch: no penalty for DCL to lessen"
        if drop["softmax"] <= 0.02
        else f"DCL {'less' if dcl_less else 'not less'} sensitive"
      )
      + ")"
    )
  # A cell in both regimes is one set of runs: count it once.
  cells = {
    (k, b, c["steps"]): c for reg in summary.values() for k in LOSSES for b, c in reg[k].items()
  }
  parts.append(
    "collapses at the chosen lrs: "
    + ", ".join(
      f"{k} {sum(c['collapses'] for (l, *_), c in cells.items() if l == k)} of "
      f"{sum(c['n'] for (l, *_), c in cells.items() if l == k)}"
      for k in LOSSES
    )
  )
  agree = "n/a" if not claims else "yes" if all(claims) else "partly" if any(claims) else "no"
  return "; ".join(parts) + ".", agree


def write_markdown(path, report, summary):
  a = report["args"]
  runs = report["runs"]
  bias = {r["batch"]: r["bias_init"] for r in runs if r["loss"] == "sigmoid"}
  lines = _study.claim_header(
    "Batch size: softmax vs sigmoid vs DCL, at fixed examples and at fixed steps",
    "the sigmoid loss beats the softmax loss at small batch and the two meet as the batch "
    "grows (SigLIP, Zhai et al. 2023); DCL is less sensitive to a small batch than softmax "
    "(Yeh et al. 2022).",
    report["result"],
    report["agree"],
  )
  lines += [
    "Setup: configs/loss_zoo.py (the demo's model and data, AdamW, cosine decay, weight decay "
    "0.2, clipping at 1.0, warmup a twentieth of the steps) with `loss=softmax`, `loss=dcl` "
    "(CLIP's learned scale) and `loss=sigmoid` with the zoo's init: scale 10 and the bias at "
    "the prior of a positive in the batch, -log(B - 1) (`models.towers.prior_bias`: "
    + ", ".join(f"{v:.2f} at {b}" for b, v in sorted(bias.items()))
    + "), both learned; not SigLIP's -10, from which short runs collapse "
    "(siglip_reliability.md). Two regimes: (a) "
    f"{a['examples']:,} examples seen at every batch (steps = examples / batch); (b) "
    f"{a['steps']} steps at every batch; the cell in both is one set of runs. Learning rate "
    "per (loss, batch, regime): a sweep on seed 0 over 3e-3 x sqrt(batch/128) x "
    f"{a['lr_factors']}, picked by validation zero-shot (mean of shape and colour top-1 on "
    f"{a['val_examples']} images per view drawn with dataset seed {VAL_SEED}, not the test "
    f"images); then seeds {a['seeds']} at that rate. Test: {a['eval_examples']} held-out "
    "images per view (chance 12.5%) and test pairs for retrieval, at the end. Collapse: test "
    f"zero-shot colour under {100 * COLLAPSED_BELOW:.0f}%; collapsed runs are counted apart "
    "and left out of the means. Cells: mean ± sample std over the non-collapsed seeds in %, "
    "then [collapsed of runs]; the chosen lr under each table.",
  ]
  for regime, title in (
    ("examples", f"(a) {a['examples']:,} examples seen"),
    ("steps", f"(b) {a['steps']} steps"),
  ):
    by_loss = summary[regime]
    batches = list(next(iter(by_loss.values())))
    for key, name in METRICS:
      lines += [
        "",
        f"## {title}: {name}",
        "",
        "| loss | "
        + " | ".join(f"batch {b} ({by_loss['softmax'][b]['steps']} steps)" for b in batches)
        + " |",
        "|---|" + "---:|" * len(batches),
      ]
      for loss, cells in by_loss.items():
        lines.append(
          f"| {LOSSES[loss]} | "
          + " | ".join(
            f"{_study.fmt(c[key], pct=True)} [{c['collapses']} of {c['n']}]" for c in cells.values()
          )
          + " |"
        )
    lines += [
      "",
      "Chosen lr: "
      + "; ".join(
        f"{loss} "
        + ", ".join("n/a" if c["lr"] is None else f"{c['lr']:.3g}" for c in cells.values())
        for loss, cells in by_loss.items()
      )
      + f" (batches {', '.join(batches)}).",
    ]
  lines += [
    "",
    "## The lr sweep (seed 0): validation / test zero-shot in %, * the chosen lr",
    "",
    "| loss | batch | steps | " + " | ".join(f"lr x {f:g}" for f in a["lr_factors"]) + " |",
    "|---|---:|---:|" + "---:|" * len(a["lr_factors"]),
  ]
  cells = sorted(
    {(r["loss"], r["batch"], r["steps"]) for r in runs},
    key=lambda c: (list(LOSSES).index(c[0]), c[1], c[2]),
  )
  for loss, batch, steps in cells:
    sweep = sorted(
      (
        r
        for r in runs
        if (r["loss"], r["batch"], r["steps"], r["seed"]) == (loss, batch, steps, SWEEP_SEED)
      ),
      key=lambda r: r["lr"],
    )
    best = chosen_lr(runs, loss, batch, steps)
    lines.append(
      f"| {loss} | {batch} | {steps} | "
      + " | ".join(
        f"{r['lr']:.3g}: {100 * r['val']:.1f} / {100 * r['final']['eval/zeroshot']:.1f}"
        + ("*" if r["lr"] == best else "")
        + (" (collapsed)" if r["collapsed"] else "")
        for r in sweep
      )
      + " |"
    )
  lines += ["", "## Runs", ""]
  lines += _study.runs_table(
    runs,
    [
      ("loss", "loss"),
      ("batch", "batch"),
      ("steps", "steps"),
      ("lr", "lr"),
      ("seed", "seed"),
      ("collapsed", "collapsed"),
    ],
  )
  lines += _study.footer(
    report["wall_s"],
    report["command"],
    figure=(
      "batch.png (test zero-shot against the batch per loss and regime: mean ± std over "
      "the non-collapsed seeds; a cross marks a collapsed run)."
    ),
    notes=report.get("notes"),
  )
  path.write_text("\n".join(lines))


def plot(path, summary, runs):
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
  for ax, (regime, title) in zip(
    axes, (("examples", "same examples seen"), ("steps", "same steps"))
  ):
    for i, (loss, cells) in enumerate(summary[regime].items()):
      done = [b for b, c in cells.items() if c["zeroshot"]["mean"] is not None]
      stats = [cells[b]["zeroshot"] for b in done]
      line = ax.errorbar(
        [int(b) * (1 + 0.04 * (i - 1)) for b in done],  # side by side, not on top
        [100 * s["mean"] for s in stats],
        yerr=[100 * (s["std"] or 0) for s in stats],
        marker="o",
        capsize=3,
        label=LOSSES[loss],
      )
      for b, c in cells.items():
        bad = [
          r
          for r in runs
          if (r["loss"], r["batch"], r["steps"], r["lr"]) == (loss, int(b), c["steps"], c["lr"])
          and r["collapsed"]
        ]
        ax.plot(
          [int(b)] * len(bad),
          [100 * r["final"]["eval/zeroshot"] for r in bad],
          "x",
          color=line[0].get_color(),
        )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("global batch")
    ax.set_title(title, fontsize=10)
  axes[0].set_ylabel("test zero-shot top-1, shape and colour mean (%)")
  axes[0].legend()
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def write_all(out, runs, args, wall_s, command):
  summary = summarize(runs, args)
  result, agree = verdict(summary, args)
  report = dict(
    result=result,
    agree=agree,
    command=command,
    wall_s=wall_s,
    notes=args.notes,
    args={k: getattr(args, k) for k in ARGS},
    summary=summary,
    runs=runs,
  )
  write = lambda path, r: write_markdown(path, r, summary)
  _study.write_study(out, "batch", report, write, lambda path: plot(path, summary, runs))


ARGS = ("batches", "examples", "steps", "lr_factors", "seeds", "eval_examples", "val_examples")


def main():
  parser = _study.study_parser(__doc__, "batch")
  parser.add_argument("--batches", default="32,256")
  parser.add_argument("--examples", type=int, default=19_200, help="regime (a): examples per run")
  parser.add_argument("--steps", type=int, default=75, help="regime (b): steps per run")
  parser.add_argument("--lr_factors", default="0.5,1", help="the sweep, times the sqrt-scaled lr")
  parser.add_argument("--eval_examples", type=int, default=500)
  parser.add_argument("--val_examples", type=int, default=250)
  args = parser.parse_args()
  out = pathlib.Path(args.out)
  if old := _study.saved_study(args):
    write_all(out, old["runs"], args, old["wall_s"], old["command"])
    return
  args.batches = [int(b) for b in args.batches.split(",")]
  args.seeds = [int(s) for s in args.seeds.split(",")]
  args.lr_factors = [float(f) for f in args.lr_factors.split(",")]
  workdir = pathlib.Path(args.workdir).resolve()
  cells = sorted({c for regime in regimes(args).values() for c in regime})
  runs = []

  def add(loss, batch, steps, lr, seed):
    runs.append(run_one(loss, batch, steps, lr, seed, args, workdir))
    # The runs' own walls: a study resumed from --workdir counts the time of every run.
    write_all(out, runs, args, sum(r["wall_s"] for r in runs), _study.command())

  # Every cell's sweep first, then one seed at a time over all cells at the chosen rates, so
  # that a study cut short has every cell at as many seeds as the time allowed; within a seed,
  # a cell both regimes share first, then the shorter runs.
  for batch, steps in cells:
    for loss in LOSSES:
      for lr in sweep_lrs(batch, args):
        add(loss, batch, steps, lr, SWEEP_SEED)
  shared = lambda c: sum(c in regime for regime in regimes(args).values())
  for seed in (s for s in args.seeds if s != SWEEP_SEED):
    for batch, steps in sorted(cells, key=lambda c: (-shared(c), c[1], c[0])):
      for loss in LOSSES:
        add(loss, batch, steps, chosen_lr(runs, loss, batch, steps), seed)


if __name__ == "__main__":
  main()
