"""Batch size: softmax vs sigmoid vs DCL from batch 16 to 256, the same examples seen.

Claims (Zhai et al., "Sigmoid Loss for Language Image Pre-Training", ICCV 2023, figure 2 and
section 4; Yeh et al., "Decoupled Contrastive Learning", ECCV 2022): the sigmoid loss beats the
softmax loss at small batch sizes and the two meet as the batch grows; DCL, which drops the
positive from the softmax's denominator, is less sensitive to a small batch than softmax.

This trains the demo (configs/loss_zoo.py) with `softmax`, `sigmoid` (SigLIP's scale and bias
initialization, t' = log 10, b = -10) and `dcl` at each global batch size, with as many steps
as keep the number of examples seen fixed (`--examples`), the demo's learning rate and
optimizer, warmup a twentieth of the steps and cosine decay, and reports zero-shot accuracy
and exact-pair retrieval on held-out test data at the end. A check reruns the smallest batch
with the learning rate scaled by sqrt(batch / 128) (seed 0) before the verdict.

    python experiments/claims/batch.py                      # 19,200 examples, seeds 0,1,2
    python experiments/claims/batch.py --batches 16,256 --seeds 0

Writes experiments/results/claims/batch.{md,png,json}; the runs stay in --workdir.
"""

from __future__ import annotations

import pathlib
import time

import _study
import numpy as np

LOSSES = {"softmax": "softmax (CLIP)", "sigmoid": "sigmoid (SigLIP)", "dcl": "DCL"}
TASKS = ("zeroshot_shape", "zeroshot_colour", "retrieval_exact")
METRICS = [
  ("zeroshot", "zero-shot top-1, shape and colour mean"),
  ("zeroshot_shape/top1", "zero-shot shape top-1"),
  ("zeroshot_colour/top1", "zero-shot colour top-1"),
  ("retrieval_exact/image_to_text/recall@1", "image->text R@1 (exact pair)"),
  ("retrieval_exact/text_to_image/recall@1", "text->image R@1 (exact pair)"),
]
DEMO_LR, DEMO_BATCH = 3e-3, 128


def run_one(loss, batch, seed, args, workdir, lr_factor=1.0):
  steps = args.examples // batch
  config = _study.zoo_config(
    loss,
    steps=steps,
    batch_size=batch,
    seed=seed,
    tasks=TASKS,
    eval_examples=args.eval_examples,
    overrides={"optim.warmup_steps": max(1, steps // 20), "optim.lr": DEMO_LR * lr_factor},
  )
  tag = f"{loss}_b{batch}_s{seed}" + (f"_lr{lr_factor:.2f}" if lr_factor != 1.0 else "")
  run = _study.train_run(config, workdir / tag, tag)
  final = run["final"]
  final["eval/zeroshot"] = (
    final["eval/zeroshot_shape/top1"] + final["eval/zeroshot_colour/top1"]
  ) / 2
  return dict(loss=loss, batch=batch, seed=seed, steps=steps, lr=DEMO_LR * lr_factor, **run)


def summarize(runs):
  out = {}
  for r in runs:
    out.setdefault(r["loss"], {}).setdefault(str(r["batch"]), [])
  for loss, by_batch in out.items():
    for batch in by_batch:
      mine = [r for r in runs if r["loss"] == loss and str(r["batch"]) == batch]
      by_batch[batch] = {
        k: _study.seed_stats([r["final"].get(f"eval/{k}") for r in mine]) for k, _ in METRICS
      }
  return out


def verdict(summary, batches, n_seeds, checks):
  lo, hi = str(batches[0]), str(batches[-1])
  z = lambda loss, b: summary[loss][b]["zeroshot"]
  sig_beats_small = _study.clearly_above(z("sigmoid", lo), z("softmax", lo))
  gap_small = z("sigmoid", lo)["mean"] - z("softmax", lo)["mean"]
  gap_large = z("sigmoid", hi)["mean"] - z("softmax", hi)["mean"]
  meet = abs(gap_large) <= max(abs(gap_small) / 2, 0.02)  # within 2 points, or half the gap
  drop = {loss: z(loss, hi)["mean"] - z(loss, lo)["mean"] for loss in LOSSES}
  dcl_less = drop["dcl"] < drop["softmax"] - 0.02  # by more than 2 points
  parts = [
    f"zero-shot (shape+colour mean) at batch {lo}: softmax "
    f"{100 * z('softmax', lo)['mean']:.1f}%, sigmoid {100 * z('sigmoid', lo)['mean']:.1f}%, "
    f"DCL {100 * z('dcl', lo)['mean']:.1f}%; at batch {hi}: softmax "
    f"{100 * z('softmax', hi)['mean']:.1f}%, sigmoid {100 * z('sigmoid', hi)['mean']:.1f}%, "
    f"DCL {100 * z('dcl', hi)['mean']:.1f}%",
    f"sigmoid minus softmax {100 * gap_small:+.1f} points at batch {lo} "
    f"({'over two seed spreads' if sig_beats_small else 'within two seed spreads'}), "
    f"{100 * gap_large:+.1f} at batch {hi} ({'they meet' if meet else 'they do not meet'})",
    f"the loss from batch {hi} to {lo}: softmax {100 * drop['softmax']:.1f}, sigmoid "
    f"{100 * drop['sigmoid']:.1f}, DCL {100 * drop['dcl']:.1f} points "
    f"(DCL {'less' if dcl_less else 'not less'} sensitive than softmax)",
  ]
  if checks:
    parts.append(
      "with the learning rate scaled by sqrt(batch/128) at batch "
      f"{checks[0]['batch']} (seed 0): "
      + ", ".join(f"{r['loss']} {100 * r['final']['eval/zeroshot']:.1f}%" for r in checks)
    )
  result = "; ".join(parts) + "."
  if n_seeds < 2:
    result += " One seed: the spread is unmeasured."
  claims = [sig_beats_small and meet, dcl_less]
  agree = "yes" if all(claims) else "partly" if any(claims) or sig_beats_small else "no"
  return result, agree


def write_markdown(path, report, summary):
  a = report["args"]
  batches = a["batches"]
  lines = _study.claim_header(
    "Batch size: softmax vs sigmoid vs DCL, the same examples seen",
    "the sigmoid loss beats the softmax loss at small batch and the two meet as the batch "
    "grows (SigLIP, Zhai et al. 2023); DCL is less sensitive to a small batch than softmax "
    "(Yeh et al. 2022).",
    report["result"],
    report["agree"],
  )
  lines += [
    f"Setup: configs/loss_zoo.py (the demo's model, data, AdamW at lr {DEMO_LR:g}, "
    f"cosine decay, weight decay and clipping) with `loss=softmax`, `loss=sigmoid` "
    f"(SigLIP's init, scale 10, bias -10, both learned) and `loss=dcl` (CLIP's learned "
    f"scale); {a['examples']:,} examples seen at every batch size (steps = examples / "
    f"batch), warmup a twentieth of the steps; seeds {a['seeds']}; evaluated at the end "
    f"on {a['eval_examples']} held-out test pairs (zero-shot: {a['eval_examples']} "
    f"images of each view). Values: mean ± sample std over seeds, in %.",
    "",
    "## Zero-shot top-1 (shape and colour mean) by global batch",
    "",
    "| loss | " + " | ".join(f"batch {b} ({a['examples'] // b} steps)" for b in batches) + " |",
    "|---|" + "---:|" * len(batches),
  ]
  for loss, by_batch in summary.items():
    lines.append(
      f"| {LOSSES[loss]} | "
      + " | ".join(_study.fmt(by_batch.get(str(b), {}).get("zeroshot"), pct=True) for b in batches)
      + " |"
    )
  for key, name in METRICS[1:]:
    lines += [
      "",
      f"## {name}",
      "",
      "| loss | " + " | ".join(f"batch {b}" for b in batches) + " |",
      "|---|" + "---:|" * len(batches),
    ]
    for loss, by_batch in summary.items():
      lines.append(
        f"| {LOSSES[loss]} | "
        + " | ".join(_study.fmt(by_batch.get(str(b), {}).get(key), pct=True) for b in batches)
        + " |"
      )
  if report["checks"]:
    lines += [
      "",
      "## Check: the learning rate at the smallest batch",
      "",
      "| loss | batch | lr | zero-shot (mean of shape, colour) | with the demo's lr |",
      "|---|---:|---:|---:|---:|",
    ]
    for r in report["checks"]:
      base = summary[r["loss"]][str(r["batch"])]["zeroshot"]
      lines.append(
        f"| {LOSSES[r['loss']]} | {r['batch']} | {r['lr']:.2g} | "
        f"{100 * r['final']['eval/zeroshot']:.1f} | {_study.fmt(base, pct=True)} |"
      )
  lines += ["", "## Runs", ""]
  lines += _study.runs_table(
    report["runs"] + report["checks"],
    [("loss", "loss"), ("batch", "batch"), ("steps", "steps"), ("lr", "lr"), ("seed", "seed")],
  )
  lines += _study.footer(report["wall_s"], report["command"])
  lines += [
    "Figure: batch.png (zero-shot accuracy against the batch per loss, mean ± std over seeds).",
    "",
  ]
  if report.get("notes"):
    lines += ["## Notes", "", report["notes"], ""]
  path.write_text("\n".join(lines))


def plot(path, summary, batches):
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  for ax, (key, title) in zip(axes, (METRICS[0], METRICS[3])):
    for loss, by_batch in summary.items():
      done = [b for b in batches if str(b) in by_batch]
      stats = [by_batch[str(b)][key] for b in done]
      ax.errorbar(
        done,
        [100 * s["mean"] for s in stats],
        yerr=[100 * (s["std"] or 0) for s in stats],
        marker="o",
        capsize=3,
        label=LOSSES[loss],
      )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("global batch (same examples seen)")
    ax.set_ylabel("%")
    ax.set_title(title, fontsize=10)
  axes[0].legend()
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def write_all(out, runs, checks, batches, seeds, args, wall_s, command):
  summary = summarize(runs)
  complete = all(str(b) in summary.get(loss, {}) for loss in LOSSES for b in batches)
  result, agree = (
    verdict(summary, batches, len(seeds), checks)
    if complete
    else ("not every loss was run at every batch size.", "n/a")
  )
  report = dict(
    result=result,
    agree=agree,
    command=command,
    wall_s=wall_s,
    notes=args.notes,
    args=dict(
      examples=args.examples, batches=batches, seeds=seeds, eval_examples=args.eval_examples
    ),
    summary=summary,
    runs=runs,
    checks=checks,
  )
  _study.write_study(
    out,
    "batch",
    report,
    lambda path, r: write_markdown(path, r, summary),
    lambda path: plot(path, summary, batches),
  )


def main():
  parser = _study.study_parser(__doc__, "batch")
  parser.add_argument("--batches", default="16,32,64,128,256")
  parser.add_argument(
    "--examples",
    type=int,
    default=19_200,
    help="examples seen by every run (steps = examples / batch)",
  )
  parser.add_argument("--eval_examples", type=int, default=500)
  parser.add_argument(
    "--no_checks", action="store_true", help="skip the learning-rate check at the smallest batch"
  )
  args = parser.parse_args()
  out = pathlib.Path(args.out)
  if old := _study.saved_study(args):
    write_all(
      out,
      old["runs"],
      old["checks"],
      old["args"]["batches"],
      old["args"]["seeds"],
      args,
      old["wall_s"],
      old["command"],
    )
    return
  batches = [int(b) for b in args.batches.split(",")]
  seeds = [int(s) for s in args.seeds.split(",")]
  workdir = pathlib.Path(args.workdir).resolve()
  start, runs, checks = time.time(), [], []
  for i, seed in enumerate(seeds):
    for batch in batches:
      for loss in LOSSES:
        runs.append(run_one(loss, batch, seed, args, workdir))
    write_all(
      out, runs, checks, batches, seeds[: i + 1], args, time.time() - start, _study.command()
    )
  if not args.no_checks:
    factor = float(np.sqrt(batches[0] / DEMO_BATCH))
    for loss in LOSSES:
      checks.append(run_one(loss, batches[0], seeds[0], args, workdir, lr_factor=factor))
    write_all(out, runs, checks, batches, seeds, args, time.time() - start, _study.command())


if __name__ == "__main__":
  main()
