"""The temperature of the softmax loss: hard negatives, uniformity and tolerance, fixed vs learned.

Claim (Wang & Liu, "Understanding the Behaviour of Contrastive Loss", CVPR 2021; MACL, Huang et
al. 2023): the temperature tau controls how hard the loss is. A lower tau puts more of the
gradient on the hardest negatives and spreads the embeddings more uniformly, at a cost in
tolerance: samples of the same class (semantically close negatives) are pushed apart, which
hurts accuracy at the low end; accuracy peaks at an intermediate tau.

This trains the demo (configs/loss_zoo.py:loss=softmax) with the logit scale fixed at 1/tau for
a range of tau (the scale initialized there and locked, `model.locked=("log_scale",)`) and with
CLIP's learned scale, same seeds, data and schedule, and reports on held-out test data:

  hardest share  the share of the loss's gradient on negatives taken by each anchor's hardest
                 negative, at the run's own scale, in batches of the training batch size
                 (`evaluate.hardest_negative_share`; a uniform push gives 1 / (batch - 1)),
  uniformity     log E exp(-2 |u - v|^2) per modality (lower: more uniform),
  alignment      E |x - y|^2 of the pairs,
  tolerance      mean cosine of distinct images of the same shape (`evaluate.tolerance`),
  accuracy       zero-shot shape and colour top-1, exact-pair retrieval R@1.

    python experiments/claims/temperature.py                  # 300 steps, seeds 0,1,2
    python experiments/claims/temperature.py --taus 0.03,0.1 --seeds 0

Writes experiments/results/claims/temperature.{md,png,json}; the runs stay in --workdir.
"""

from __future__ import annotations

import pathlib
import time

import _study
import numpy as np

TASKS = ("zeroshot_shape", "zeroshot_colour", "retrieval_exact", "geometry")
LEARNED = "learned"
EVAL = [
  ("geometry/uniformity/image", "uniformity, image"),
  ("geometry/uniformity/text", "uniformity, text"),
  ("geometry/alignment", "alignment"),
  ("zeroshot_shape/top1", "zero-shot shape top-1"),
  ("zeroshot_colour/top1", "zero-shot colour top-1"),
  ("retrieval_exact/image_to_text/recall@1", "image->text R@1 (exact pair)"),
]
PROBES = [
  ("hardest_share", "hardest-negative share of the gradient"),
  ("tolerance/shape", "tolerance (same-shape images)"),
  ("tau", "tau at the end (1 / scale)"),
]
METRICS = PROBES[:1] + EVAL[:3] + PROBES[1:2] + EVAL[3:] + PROBES[2:]


def probe(run_dir: pathlib.Path, config, batch_size: int) -> dict[str, float]:
  """The hardest-negative share and the tolerance of a trained run, on its test sources."""
  from contrastive import evaluate
  from contrastive import train
  from contrastive.evaluate import sources

  embedder = train.load_run(run_dir)
  scale = embedder.scale
  pairs = sources.make_source(config.eval.tasks.geometry.source).source
  records = [pairs[i] for i in range(len(pairs))]
  shares = []
  for start in range(0, len(records) - batch_size + 1, batch_size):
    batch = records[start : start + batch_size]
    x = embedder.embed("image", [r["image"] for r in batch])
    y = embedder.embed("text", [r["caption"] for r in batch])
    shares.append(evaluate.hardest_negative_share(x, y, scale=scale, k=1))
  shapes = sources.make_source(config.eval.tasks.zeroshot_shape.source).source
  labelled = [shapes[i] for i in range(len(shapes))]
  z = np.concatenate(
    [
      embedder.embed("image", [r["image"] for r in labelled[i : i + 256]])
      for i in range(0, len(labelled), 256)
    ]
  )
  return {
    "hardest_share": float(np.mean(shares)),
    "tolerance/shape": evaluate.tolerance(z, [r["label"] for r in labelled]),
    "tau": 1.0 / scale,
  }


def run_one(tau, seed, args, workdir):
  fixed = {} if tau == LEARNED else {"model.scale_init": 1.0 / tau, "model.locked": ("log_scale",)}
  config = _study.zoo_config(
    "softmax",
    steps=args.steps,
    batch_size=args.batch_size,
    seed=seed,
    tasks=TASKS,
    eval_examples=args.eval_examples,
    overrides=fixed,
  )
  run_dir = workdir / f"tau_{tau}_s{seed}"
  run = _study.train_run(config, run_dir, f"tau {tau} seed {seed}")
  run["final"].update({f"eval/{k}": v for k, v in probe(run_dir, config, args.batch_size).items()})
  return dict(tau=tau, seed=seed, **run)


def summarize(runs, taus):
  return {
    str(t): {
      k: _study.seed_stats([r["final"].get(f"eval/{k}") for r in runs if str(r["tau"]) == str(t)])
      for k, _ in METRICS
    }
    for t in taus
    if any(str(r["tau"]) == str(t) for r in runs)
  }


def _rank_corr(a, b) -> float:
  """Spearman's rank correlation (no ties expected among seed means)."""
  ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
  return float(np.corrcoef(ra, rb)[0, 1])


def verdict(summary, n_seeds):
  fixed = sorted(float(t) for t in summary if t != LEARNED)
  m = lambda key: [summary[str(t)][key]["mean"] for t in fixed]
  corr = {
    name: _rank_corr(fixed, m(key))
    for key, name in (
      ("hardest_share", "hardest share"),
      ("geometry/uniformity/image", "image uniformity"),
      ("geometry/uniformity/text", "text uniformity"),
      ("tolerance/shape", "tolerance"),
    )
  }
  # Lower tau: larger hardest share (corr < 0), lower (more uniform) uniformity (corr > 0),
  # lower tolerance (corr > 0).
  signs = {"hardest share": -1, "image uniformity": 1, "text uniformity": 1, "tolerance": 1}
  holds = {k: signs[k] * c >= 0.8 for k, c in corr.items()}
  acc = [(a + b) / 2 for a, b in zip(m("zeroshot_shape/top1"), m("zeroshot_colour/top1"))]
  best = int(np.argmax(acc))
  interior = 0 < best < len(fixed) - 1
  parts = [
    f"over fixed tau {fixed[0]}..{fixed[-1]}, Spearman correlation of tau with "
    + ", ".join(f"{k} {c:+.2f}" for k, c in corr.items())
    + f" ({', '.join(k for k, v in holds.items() if v) or 'none'} as claimed)",
    f"zero-shot accuracy (shape+colour mean) peaks at tau = {fixed[best]} "
    f"({100 * acc[best]:.1f}%; {'an intermediate tau' if interior else 'an end of the range'}"
    f", lowest tau {100 * acc[0]:.1f}%)",
  ]
  if LEARNED in summary:
    learned = summary[LEARNED]
    shape, colour = (learned[f"zeroshot_{v}/top1"]["mean"] for v in ("shape", "colour"))
    zeroshot = (shape + colour) / 2
    parts.append(
      f"the learned scale ends at tau = {learned['tau']['mean']:.3f} with {100 * zeroshot:.1f}%"
    )
  result = "; ".join(parts) + "."
  if n_seeds < 2:
    result += " One seed: the spread is unmeasured."
  agree = "yes" if all(holds.values()) and interior else "partly" if any(holds.values()) else "no"
  return result, agree


def write_markdown(path, report, summary):
  a = report["args"]
  lines = _study.claim_header(
    "Temperature: fixed scales against the learned one",
    "a lower temperature weights the hardest negatives more and spreads the embeddings more "
    "uniformly, at a cost in tolerance to semantically close samples; accuracy peaks at an "
    "intermediate temperature (Wang & Liu, CVPR 2021; MACL).",
    report["result"],
    report["agree"],
  )
  lines += [
    f"Setup: configs/loss_zoo.py:loss=softmax (the demo's model, data, optimizer and "
    f"schedule); the logit scale fixed at 1/tau (initialized there, "
    f'`model.locked=("log_scale",)`) or learned from CLIP\'s 1/0.07; {a["steps"]} steps '
    f"at batch {a['batch_size']}, seeds {a['seeds']}; evaluated at the end on "
    f"{a['eval_examples']} held-out test pairs (and {a['eval_examples']} images of the "
    f"shape view for the tolerance). Hardest share: mean over the test pairs in batches "
    f"of {a['batch_size']} of each image's hardest negative's share of the softmax's "
    f"push on negatives, at the run's own scale (uniform: "
    f"{1 / (a['batch_size'] - 1):.4f}). Values: mean ± sample std over seeds.",
    "",
    "| tau | " + " | ".join(name for _, name in METRICS[:-1]) + " |",
    "|---:|" + "---:|" * (len(METRICS) - 1),
  ]
  for t, stats in summary.items():
    cells = [_study.fmt(stats[k], pct="top1" in k or "recall" in k) for k, _ in METRICS[:-1]]
    name = f"learned (ends at {stats['tau']['mean']:.3f})" if t == LEARNED else t
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  lines += ["", "Accuracies are in %. Uniformity: lower is more uniform.", "", "## Runs", ""]
  lines += _study.runs_table(report["runs"], [("tau", "tau"), ("seed", "seed")])
  lines += _study.footer(report["wall_s"], report["command"])
  lines += [
    "Figure: temperature.png (each quantity against tau, mean ± std over seeds; the "
    "learned scale's end point marked).",
    "",
  ]
  if report.get("notes"):
    lines += ["## Notes", "", report["notes"], ""]
  path.write_text("\n".join(lines))


def plot(path, summary):
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  panels = [
    ("hardest_share", "hardest-negative share"),
    ("geometry/uniformity/image", "uniformity (image; lower = more uniform)"),
    ("tolerance/shape", "tolerance (same-shape cosine)"),
    ("zeroshot_shape/top1", "zero-shot shape top-1"),
  ]
  fixed = sorted(float(t) for t in summary if t != LEARNED)
  fig, axes = plt.subplots(1, len(panels), figsize=(16, 3.8))
  for ax, (key, title) in zip(axes, panels):
    stats = [summary[str(t)][key] for t in fixed]
    ax.errorbar(
      fixed,
      [s["mean"] for s in stats],
      yerr=[s["std"] or 0 for s in stats],
      marker="o",
      capsize=3,
      label="fixed tau",
    )
    if LEARNED in summary:
      s = summary[LEARNED]
      ax.errorbar(
        [s["tau"]["mean"]],
        [s[key]["mean"]],
        yerr=[s[key]["std"] or 0],
        marker="*",
        markersize=12,
        color="C3",
        linestyle="none",
        label="learned (end)",
      )
    ax.set_xscale("log")
    ax.set_xlabel("tau")
    ax.set_title(title, fontsize=10)
  axes[0].legend()
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def write_all(out, runs, taus, seeds, args, wall_s, command):
  summary = summarize(runs, taus)
  fixed = [t for t in summary if t != LEARNED]
  result, agree = (
    verdict(summary, len(seeds))
    if len(fixed) >= 3
    else ("fewer than three fixed temperatures were run.", "n/a")
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
      taus=[str(t) for t in taus],
      eval_examples=args.eval_examples,
    ),
    summary=summary,
    runs=runs,
  )
  _study.write_study(
    out,
    "temperature",
    report,
    lambda path, r: write_markdown(path, r, summary),
    (lambda path: plot(path, summary)) if len(fixed) >= 2 else None,
  )


def main():
  parser = _study.study_parser(__doc__, "temperature")
  parser.add_argument(
    "--taus",
    default="0.01,0.03,0.1,0.3,1.0",
    help="fixed temperatures; the learned scale is always run too",
  )
  parser.add_argument("--steps", type=int, default=300)
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--eval_examples", type=int, default=500)
  args = parser.parse_args()
  out = pathlib.Path(args.out)
  if old := _study.saved_study(args):
    write_all(
      out,
      old["runs"],
      old["args"]["taus"],
      old["args"]["seeds"],
      args,
      old["wall_s"],
      old["command"],
    )
    return
  taus = [float(t) for t in args.taus.split(",")] + [LEARNED]
  seeds = [int(s) for s in args.seeds.split(",")]
  workdir = pathlib.Path(args.workdir).resolve()
  start, runs = time.time(), []
  for i, seed in enumerate(seeds):
    for tau in taus:
      runs.append(run_one(tau, seed, args, workdir))
    write_all(out, runs, taus, seeds[: i + 1], args, time.time() - start, _study.command())


if __name__ == "__main__":
  main()
