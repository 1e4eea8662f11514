"""The softmax loss's temperature: hard negatives, uniformity and tolerance, trained to a plateau.

Claim (Wang & Liu, "Understanding the Behaviour of Contrastive Loss", CVPR 2021): the
temperature tau controls how hard the loss is. A lower tau puts more of the gradient on the
hardest negatives and spreads the embeddings more uniformly, at a cost in tolerance: samples of
the same meaning (semantically similar negatives) are pushed apart; accuracy peaks at an
intermediate tau.

This trains the demo (configs/loss_zoo.py:loss=softmax) with the logit scale fixed at 1/tau for
a range of tau (initialized there and locked, `model.locked=("log_scale",)`), same seeds, data
and schedule, each tau at its own learning rate (`--lrs`), and reports on held-out data:

  convergence    from the train loss logged every 5 steps: the change over the last 10% of
                 the steps (a least-squares line through them) and the share of the run's whole
                 drop made in its second half, beside the loss floor at this tau,
  hardest share  each anchor's hardest negative's share of the gradient on negatives, at the
                 run's scale, in batches of the training batch (`evaluate.hardest_negative_share`;
                 a uniform push gives 1 / (batch - 1)),
  uniformity     log E exp(-2 |u - v|^2) per modality (lower: more uniform); alignment,
  tolerance      mean cosine of distinct images of the same scene meaning (`meaning_id`: shape,
                 colour, size and position of a one-object image), and that mean less the mean
                 cosine of all pairs (how much closer the same meaning sits than any image),
  accuracy       zero-shot shape and colour top-1, exact-pair retrieval R@1.

    python experiments/claims/temperature.py                  # 300 steps, seeds 0,1,2
    python experiments/claims/temperature.py --taus 0.03,0.1 --lrs 3e-3,3e-3 --seeds 0

A study cut short resumes: a run whose `result.json` exists in --workdir is read, not rerun.
Writes experiments/results/claims/temperature.{md,png,json}; the runs stay in --workdir.
"""

from __future__ import annotations

import pathlib
import re
import time

import _study
import numpy as np

TASKS = ("zeroshot_shape", "zeroshot_colour", "retrieval_exact", "geometry")
LOG_EVERY = 5
METRICS = [
  ("last10", "loss change, last 10% of steps"),
  ("last10_se", "its std error"),
  ("second_half", "share of the drop in the 2nd half"),
  ("hardest_share", "hardest-negative share"),
  ("geometry/uniformity/image", "uniformity, image"),
  ("geometry/uniformity/text", "uniformity, text"),
  ("geometry/alignment", "alignment"),
  ("tolerance/meaning", "tolerance (same meaning)"),
  ("tolerance/gap", "tolerance less mean cosine"),
  ("zeroshot_shape/top1", "zero-shot shape top-1"),
  ("zeroshot_colour/top1", "zero-shot colour top-1"),
  ("retrieval_exact/image_to_text/recall@1", "image->text R@1 (exact pair)"),
  ("loss", "train loss, mean of the last 10%"),
]


def loss_floor(tau: float, batch: int) -> float:
  """The softmax loss at scale 1/tau when positives meet (cosine 1) and the negatives form a
  regular simplex (cosine -1/(B-1)), its minimum for B <= dim + 1: what a run can approach."""
  s = 1.0 / tau
  return float(np.log(np.exp(s) + (batch - 1) * np.exp(-s / (batch - 1))) - s)


def convergence(run_dir: pathlib.Path) -> dict[str, float]:
  """The loss curve of `progress.log` reduced to the last 10%'s change (with its standard
  error: single-batch losses are noisy) and the share of the whole drop made in the 2nd half."""
  text = (run_dir / "progress.log").read_text()
  pts = re.findall(r"step\s+(\d+)/\d+.*?loss ([\d.]+)", text)
  steps, loss = np.array(pts, float).T
  total = steps.max()
  tail = steps > 0.9 * total
  (slope, _), cov = np.polyfit(steps[tail], loss[tail], 1, cov=True)
  final = loss[tail].mean()
  mid = (steps > 0.4 * total) & (steps <= 0.5 * total)
  drop = loss[0] - final
  return {
    "last10": float(slope * 0.1 * total),
    "last10_se": float(np.sqrt(cov[0, 0]) * 0.1 * total),
    "second_half": float((loss[mid].mean() - final) / drop) if drop > 0 else float("nan"),
    "loss": float(final),
  }


def probe(run_dir: pathlib.Path, config, batch_size: int, tolerance_examples: int) -> dict:
  """The hardest-negative share and the same-meaning tolerance of a trained run."""
  from contrastive import evaluate
  from contrastive import train
  from contrastive.data import shapes
  from contrastive.evaluate import sources

  embedder = train.load_run(run_dir)
  pairs = sources.make_source(config.eval.tasks.geometry.source).source
  records = [pairs[i] for i in range(len(pairs))]
  shares = []
  for start in range(0, len(records) - batch_size + 1, batch_size):
    batch = records[start : start + batch_size]
    x = embedder.embed("image", [r["image"] for r in batch])
    y = embedder.embed("text", [r["caption"] for r in batch])
    shares.append(evaluate.hardest_negative_share(x, y, scale=embedder.scale, k=1))
  # One-object images over every (colour, shape): 640 meanings, ~5 images each.
  view = shapes.ShapesSource(split="shape", num_examples=tolerance_examples, image_size=32, seed=3)
  labelled = [view[i] for i in range(len(view))]
  z = np.concatenate(
    [
      embedder.embed("image", [r["image"] for r in labelled[i : i + 256]])
      for i in range(0, len(labelled), 256)
    ]
  )
  same = evaluate.tolerance(z, [r["meaning_id"] for r in labelled])
  u = z / np.linalg.norm(z, axis=1, keepdims=True)
  s, n = u.sum(0), len(u)
  every = float((s @ s - n) / (n * (n - 1)))  # mean cosine of all distinct pairs
  return {
    "hardest_share": float(np.mean(shares)),
    "tolerance/meaning": same,
    "tolerance/gap": same - every,
  }


def run_one(tau, lr, seed, args, workdir):
  run_dir = workdir / f"tau_{tau}_lr{lr}_s{seed}"
  if result := _study.saved_run(run_dir):
    result["final"].update({f"eval/{k}": v for k, v in convergence(run_dir).items()})
    return result
  if args.collect:
    return None
  config = _study.zoo_config(
    "softmax",
    steps=args.steps,
    batch_size=args.batch_size,
    seed=seed,
    tasks=TASKS,
    eval_examples=args.eval_examples,
    overrides={
      "model.scale_init": 1.0 / tau,
      "model.locked": ("log_scale",),
      "optim.lr": lr,
      "log.every_steps": LOG_EVERY,
    },
  )
  start = time.time()
  run = _study.train_run(config, run_dir, f"tau {tau} lr {lr} seed {seed}")
  extra = probe(run_dir, config, args.batch_size, args.tolerance_examples)
  extra.update(convergence(run_dir))
  run["final"].update({f"eval/{k}": v for k, v in extra.items()})
  result = dict(tau=tau, lr=lr, seed=seed, total_s=time.time() - start, **run)
  return _study.save_run(run_dir, result)


def summarize(runs, taus):
  return {
    str(t): {
      k: _study.seed_stats([r["final"].get(f"eval/{k}") for r in runs if r["tau"] == t])
      for k, _ in METRICS
    }
    for t in taus
    if any(r["tau"] == t for r in runs)
  }


def _rank_corr(a, b) -> float:
  """Spearman's rank correlation (no ties expected among seed means)."""
  ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
  return float(np.corrcoef(ra, rb)[0, 1])


def verdict(summary, n_seeds, converged_below):
  taus = sorted(float(t) for t in summary)
  m = lambda key: [summary[str(t)][key]["mean"] for t in taus]
  corr = {
    name: _rank_corr(taus, m(key))
    for key, name in (
      ("hardest_share", "hardest share"),
      ("geometry/uniformity/image", "image uniformity"),
      ("tolerance/meaning", "tolerance"),
      ("tolerance/gap", "tolerance gap"),
    )
  }
  # Lower tau: a larger hardest share (corr < 0), a more uniform space (lower value, corr > 0),
  # a lower tolerance (corr > 0).
  signs = {"hardest share": -1, "image uniformity": 1, "tolerance": 1, "tolerance gap": 1}
  holds = {k: signs[k] * c >= 0.8 for k, c in corr.items()}
  peaks = {}
  for key, name in (
    ("zeroshot_shape/top1", "shape"),
    ("retrieval_exact/image_to_text/recall@1", "R@1"),
  ):
    acc = m(key)
    best = int(np.argmax(acc))
    peaks[name] = (taus[best], 0 < best < len(taus) - 1, acc[best])
  late = [t for t in taus if abs(summary[str(t)]["second_half"]["mean"]) > converged_below]
  flat = "every tau" if not late else "all but tau " + ", ".join(map(str, late))
  parts = [
    f"the loss flattened at {flat}"
    f" (under {100 * converged_below:.0f}% of its drop in the second half)",
    f"over tau {taus[0]}..{taus[-1]}, Spearman correlation of tau with "
    + ", ".join(f"{k} {c:+.2f}" for k, c in corr.items())
    + f" ({', '.join(k for k, v in holds.items() if v) or 'none'} as claimed)",
    "accuracy peaks at "
    + ", ".join(
      f"tau = {t} for {name} ({100 * a:.1f}%, {'intermediate' if mid else 'an end of the range'})"
      for name, (t, mid, a) in peaks.items()
    ),
  ]
  result = "; ".join(parts) + "."
  if n_seeds < 2:
    result += " One seed: the spread is unmeasured."
  interior = all(mid for _, mid, _ in peaks.values())
  core = holds["hardest share"] and holds["image uniformity"] and holds["tolerance"]
  agree = "yes" if core and interior else "partly" if any(holds.values()) or interior else "no"
  return result, agree


def write_markdown(path, report, summary):
  a = report["args"]
  lines = _study.claim_header(
    "Temperature: hard negatives, uniformity and tolerance at fixed scales",
    "a lower temperature weights the hardest negatives more and spreads the embeddings more "
    "uniformly, at a cost in tolerance to semantically similar samples; accuracy peaks at an "
    "intermediate temperature (Wang & Liu, CVPR 2021).",
    report["result"],
    report["agree"],
  )
  lrs = ", ".join(f"{t}: {lr:g}" for t, lr in zip(a["taus"], a["lrs"]))
  lines += [
    f"Setup: configs/loss_zoo.py:loss=softmax (the demo's model, data with its contrast pairs, "
    f"AdamW and cosine schedule); the logit scale fixed at 1/tau (initialized there, "
    f'`model.locked=("log_scale",)`); {a["steps"]} steps at batch {a["batch_size"]}, peak '
    f"learning rate per tau ({lrs}), seeds {a['seeds']}. Convergence from the train loss "
    f"logged every {LOG_EVERY} steps: the change over the last 10% of the steps (slope of a "
    f"least-squares line times 10% of the steps) and the share of the whole drop made in the "
    f"second half (mean loss at 40-50% of the steps less the mean over the last 10%, over "
    f"the first logged loss less that). Evaluated at the end on {a['eval_examples']} held-out "
    f"test pairs; tolerance on {a['tolerance_examples']} one-object images of the `shape` view "
    f"(seed 3), the class their `meaning_id` (shape, colour, size, position: 640 meanings). "
    f"Hardest share: mean over the test pairs in batches of {a['batch_size']} (uniform: "
    f"{1 / (a['batch_size'] - 1):.4f}). Values: mean ± sample std over seeds.",
    "",
    "| tau | loss floor | " + " | ".join(name for _, name in METRICS) + " |",
    "|---:|---:|" + "---:|" * len(METRICS),
  ]
  for t, stats in summary.items():
    cells = [_study.fmt(stats[k], pct="top1" in k or "recall" in k) for k, _ in METRICS]
    floor = loss_floor(float(t), a["batch_size"])
    lines.append(f"| {t} | {floor:.3f} | " + " | ".join(cells) + " |")
  lines += [
    "",
    "Accuracies are in %. Uniformity: lower is more uniform. Loss floor: the loss at this "
    "scale with every positive at cosine 1 and the negatives a regular simplex (its minimum "
    "at batch <= dim + 1); the built-in data's repeated meanings keep a run above it.",
    "",
    "## Runs",
    "",
  ]
  lines += _study.runs_table(report["runs"], [("tau", "tau"), ("lr", "lr"), ("seed", "seed")])
  lines += _study.footer(
    report["wall_s"],
    report["command"],
    figure=(
      "temperature.png (each quantity against tau, mean ± std over seeds; the train "
      "loss curves of seed 0 with each tau's floor)."
    ),
    notes=report.get("notes"),
  )
  path.write_text("\n".join(lines))


def plot(path, summary, runs, workdir, batch_size):
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  panels = [
    ("hardest_share", "hardest-negative share"),
    ("geometry/uniformity/image", "uniformity (image; lower = more uniform)"),
    ("tolerance/meaning", "tolerance (same-meaning cosine)"),
    ("zeroshot_shape/top1", "zero-shot shape top-1"),
    ("retrieval_exact/image_to_text/recall@1", "image->text R@1 (exact)"),
  ]
  taus = sorted(float(t) for t in summary)
  fig, axes = plt.subplots(1, len(panels) + 1, figsize=(22, 3.8))
  for ax, (key, title) in zip(axes[1:], panels):
    stats = [summary[str(t)][key] for t in taus]
    ax.errorbar(
      taus,
      [s["mean"] for s in stats],
      yerr=[s["std"] or 0 for s in stats],
      marker="o",
      capsize=3,
    )
    ax.set_xscale("log")
    ax.set_xlabel("tau")
    ax.set_title(title, fontsize=10)
  ax = axes[0]
  for i, r in enumerate(r for r in runs if r["seed"] == runs[0]["seed"]):
    log = pathlib.Path(workdir) / f"tau_{r['tau']}_lr{r['lr']}_s{r['seed']}" / "progress.log"
    if not log.exists():
      continue
    pts = re.findall(r"step\s+(\d+)/\d+.*?loss ([\d.]+)", log.read_text())
    ax.plot([int(s) for s, _ in pts], [float(v) for _, v in pts], color=f"C{i}", lw=1)
    ax.axhline(loss_floor(r["tau"], batch_size), color=f"C{i}", ls=":", lw=1)
    ax.plot([], [], color=f"C{i}", label=f"tau {r['tau']}")
  ax.set_xlabel("step")
  ax.set_title("train loss, seed 0 (dotted: floor)", fontsize=10)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def write_all(out, runs, args, wall_s, command):
  taus = [float(t) for t in args.taus.split(",")]
  seeds = sorted({r["seed"] for r in runs})
  summary = summarize(runs, taus)
  result, agree = (
    verdict(summary, len(seeds), args.converged_below)
    if len(summary) >= 3
    else ("fewer than three temperatures were run.", "n/a")
  )
  report = dict(
    result=result,
    agree=agree,
    command=command,
    wall_s=wall_s,
    notes=args.notes,
    args=dict(
      steps=args.steps,
      batch_size=args.batch_size,
      seeds=seeds,
      taus=args.taus,
      lrs=args.lrs,
      eval_examples=args.eval_examples,
      tolerance_examples=args.tolerance_examples,
      converged_below=args.converged_below,
      workdir=args.workdir,
    ),
    summary=summary,
    runs=runs,
  )
  report["args"]["taus"], report["args"]["lrs"] = _grid(args)
  _study.write_study(
    out,
    "temperature",
    report,
    lambda path, r: write_markdown(path, r, summary),
    (lambda path: plot(path, summary, runs, args.workdir, args.batch_size))
    if len(summary) >= 2
    else None,
  )


def _grid(args):
  taus = [float(t) for t in str(args.taus).split(",")]
  lrs = [float(v) for v in str(args.lrs).split(",")]
  if len(lrs) != len(taus):
    raise ValueError(f"--lrs needs one learning rate per tau: {len(taus)} taus, {len(lrs)} rates.")
  return taus, lrs


def main():
  parser = _study.study_parser(__doc__, "temperature")
  parser.add_argument("--taus", default="0.03,0.1,0.3,1.0")
  parser.add_argument("--lrs", default="3e-3,3e-3,3e-3,3e-3", help="peak lr, one per tau")
  parser.add_argument("--steps", type=int, default=300)
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--eval_examples", type=int, default=500)
  parser.add_argument("--tolerance_examples", type=int, default=3000)
  parser.add_argument(
    "--converged_below",
    type=float,
    default=0.1,
    help="a run has flattened when its second half made less than this share of its loss drop",
  )
  parser.add_argument(
    "--collect", action="store_true", help="write from the finished runs in --workdir, train none"
  )
  args = parser.parse_args()
  out = pathlib.Path(args.out)
  if old := _study.saved_study(args):
    args.taus = ",".join(map(str, old["args"]["taus"]))
    args.lrs = ",".join(map(str, old["args"]["lrs"]))
    write_all(out, old["runs"], args, old["wall_s"], old["command"])
    return
  taus, lrs = _grid(args)
  seeds = [int(s) for s in args.seeds.split(",")]
  workdir = pathlib.Path(args.workdir).resolve()
  args.workdir = str(workdir)
  runs = []
  for seed in seeds:  # seed-major: a study cut short has every tau for its first seeds
    for tau, lr in zip(taus, lrs):
      if run := run_one(tau, lr, seed, args, workdir):
        runs.append(run)
    # The runs' own times (training, evaluation, probes), so a resumed study counts them all.
    write_all(out, runs, args, sum(r["total_s"] for r in runs), _study.command())


if __name__ == "__main__":
  main()
