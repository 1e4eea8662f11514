"""The gap study's summary, verdict, markdown and figure (experiments/claims/gap.py)."""

from __future__ import annotations

import json
import math
import os

import _study
import numpy as np

METRICS = [
  ("geometry/gap", "gap (centroid distance)"),
  ("geometry/alignment", "alignment (mean squared pair distance)"),
  ("geometry/cosine/positive", "mean cosine of true pairs"),
  ("geometry/separability", "modality separability (logistic accuracy)"),
  ("geometry/uniformity/image", "uniformity, image"),
  ("geometry/uniformity/text", "uniformity, text"),
  ("geometry/uniformity/cross", "uniformity, cross (image-text)"),
  ("zeroshot_shape/top1", "zero-shot shape top-1"),
  ("zeroshot_colour/top1", "zero-shot colour top-1"),
  ("retrieval_exact/image_to_text/recall@1", "image->text R@1 (exact pair)"),
  ("retrieval_exact/text_to_image/recall@1", "text->image R@1 (exact pair)"),
  ("zeroshot_shape_gr/top1", "GR-CLIP removal: zero-shot shape top-1"),
  ("retrieval_exact_gr/image_to_text/recall@1", "GR-CLIP removal: image->text R@1"),
  ("retrieval_exact_gr/text_to_image/recall@1", "GR-CLIP removal: text->image R@1"),
]
PCT = ("top1", "recall", "separability")
CLAIM = (
  'Liang et al. ("Mind the Gap", 2022): the gap exists at initialization and contrastive '
  "training preserves it. Fahim et al. (\"It's Not a Modality Gap\", 2024): CLIP's loss opens "
  "a contrastive gap, even with the same modality in both towers; CUA/CUAXU close it without "
  "losing zero-shot accuracy."
)


def summarize(runs, rows):
  out = {}
  for label in rows:
    mine = [r for r in runs if r["label"] == label]
    if mine:
      out[label] = {k: _study.seed_stats([r["final"][k] for r in mine]) for k, _ in METRICS}
  return out


def curves_of(runs, rows):
  out = {}
  for label in rows:
    mine = [r for r in runs if r["label"] == label]
    if not mine:
      continue
    steps = sorted(set.intersection(*[{h["step"] for h in r["history"]} for r in mine]))
    gaps = np.array(
      [
        [next(h["geometry/gap"] for h in r["history"] if h["step"] == s) for s in steps]
        for r in mine
      ],
      float,
    )
    out[label] = dict(
      steps=steps,
      gap_mean=gaps.mean(0).tolist(),
      gap_std=(gaps.std(0, ddof=1) if len(mine) > 1 else np.zeros(len(steps))).tolist(),
      gap_min=gaps.min(0).tolist(),
      gap_max=gaps.max(0).tolist(),
    )
  return out


def verdict(summary, curves, eval_examples: int) -> tuple[str, str, list]:
  """(our result, agree?, the sub-claims with their answers)."""
  floor = math.sqrt(2 / eval_examples)  # the centroid distance of two isotropic samples, RMS
  g = lambda k: summary[k]["geometry/gap"]
  spread = lambda *ks: 2 * max(g(k)["std"] or 0.0 for k in ks)
  clip = curves["CLIP"]
  g0, g0s = clip["gap_mean"][0], clip["gap_std"][0]
  gf = g("CLIP")["mean"]
  parts, checks = [], []
  at_init = g0 - 2 * g0s > 2 * floor
  checks.append(("gap at step 0 (CLIP's random towers)", at_init))
  parts.append(
    f"CLIP's towers start with a gap of {g0:.3f} ± {g0s:.3f} at step 0 (the sampling floor of "
    f"two isotropic sets of {eval_examples} is {floor:.3f})"
  )
  opens = gf - g0 > 2 * max(g0s, g("CLIP")["std"] or 0.0)
  checks.append(("CLIP's training opens (widens) the gap", opens))
  kept = gf > 2 * floor
  checks.append(("training preserves a gap above the floor", kept))
  parts.append(
    f"training {'widens' if opens else 'narrows' if gf < g0 else 'keeps'} it to "
    f"{gf:.3f} ± {g('CLIP')['std'] or 0:.3f} at step {clip['steps'][-1]}"
  )
  if "same-modality" in summary:
    c = curves["same-modality"]
    cf = g("same-modality")["mean"]
    same = cf > 2 * floor + spread("same-modality")
    checks.append(("a gap between two towers on the same modality", same))
    parts.append(f"two image towers on the same images go from {c['gap_mean'][0]:.3f} to {cf:.3f}")
  zs = lambda k: summary[k]["zeroshot_shape/top1"]
  for k in ("CUA", "CUAXU"):
    if k not in summary:
      continue
    closes = g(k)["mean"] < gf - spread(k, "CLIP")
    keeps = zs(k)["mean"] >= zs("CLIP")["mean"] - max(0.02, 2 * (zs(k)["std"] or 0.0))
    checks.append((f"{k} closes the gap vs CLIP and keeps zero-shot shape", closes and keeps))
    parts.append(
      f"{k} ends at {g(k)['mean']:.3f} ({'smaller' if closes else 'not clearly smaller'}; "
      f"zero-shot shape {100 * zs(k)['mean']:.1f}% vs CLIP {100 * zs('CLIP')['mean']:.1f}%)"
    )
  tools = [k for k in summary if k.startswith("CLIP+")]
  if tools:
    parts.append(
      "the training-time tools end at " + ", ".join(f"{k} {g(k)['mean']:.3f}" for k in tools)
    )
  r = lambda k, key: summary[k][key]["mean"]
  before = r("CLIP", "retrieval_exact/image_to_text/recall@1")
  after = r("CLIP", "retrieval_exact_gr/image_to_text/recall@1")
  parts.append(
    f"GR-CLIP's removal at evaluation moves CLIP's image->text R@1 from {100 * before:.1f}% to "
    f"{100 * after:.1f}% and zero-shot shape from {100 * r('CLIP', 'zeroshot_shape/top1'):.1f}% "
    f"to {100 * r('CLIP', 'zeroshot_shape_gr/top1'):.1f}%"
  )
  result = "; ".join(parts) + "."
  yes = sum(ok for _, ok in checks)
  agree = "yes" if yes == len(checks) else "no" if yes == 0 else "partly"
  return result, agree, [(name, bool(ok)) for name, ok in checks]


def write_markdown(path, report):
  a, summary, rows = report["args"], report["summary"], report["rows"]
  lines = _study.claim_header(
    "The modality gap from step 0: CLIP, CUA, CUAXU, the same-modality control and the gap tools",
    CLAIM,
    report["result"],
    report["agree"],
  )
  lines += ["| sub-claim | holds here? |", "|---|---|"]
  lines += [f"| {name} | {'yes' if ok else 'no'} |" for name, ok in report["checks"]]
  lines += [
    "",
    f"Setup: configs/loss_zoo.py (the demo's model, data, optimizer and schedule), "
    f"{a['steps']} steps at batch {a['batch_size']}, seeds {a['seeds']} (init and data order; "
    f"the CLIP+ rows: seeds {a.get('tool_seeds', a['seeds'])}), "
    f"evaluated at step 0 and every {a['eval_every']} steps on {a['eval_examples']} held-out "
    "test pairs. Rows: "
    + "; ".join(f"{k} `{v[0]}` {v[1] or ''}" for k, v in rows.items())
    + ". same-modality: two CNN image towers, the second image with pixel jitter 0.1 in "
    "training, both on the clean test images in evaluation (its 'text' columns are the second "
    f"tower). GR-CLIP removal: each side's mean over {a['eval_examples']} other test pairs "
    "(seed 1) subtracted, "
    "rows re-normalized (task kind `gap_removed`). Values: mean ± sample std over seeds.",
    "",
    "## Final values (means ± std)",
    "",
    "| metric | " + " | ".join(summary) + " |",
    "|---|" + "---:|" * len(summary),
  ]
  for key, name in METRICS:
    pct = any(p in key for p in PCT)
    cells = [_study.fmt(summary[k][key], pct) for k in summary]
    lines.append(f"| {name}{' (%)' if pct else ''} | " + " | ".join(cells) + " |")
  curves = report["curves"]
  steps = sorted({s for c in curves.values() for s in c["steps"]})
  lines += [
    "",
    "## The gap over training (mean over seeds; step 0 = the initial parameters)",
    "",
    "| step | " + " | ".join(curves) + " |",
    "|---:|" + "---:|" * len(curves),
  ]
  for step in steps:
    row = [
      f"{c['gap_mean'][c['steps'].index(step)]:.3f}" if step in c["steps"] else ""
      for c in curves.values()
    ]
    lines.append(f"| {step} | " + " | ".join(row) + " |")
  lines += ["", "## Runs", ""]
  lines += _study.runs_table(
    [dict(r, final={"train/loss": r["train_loss"]}) for r in report["runs"]],
    [("label", "row"), ("seed", "seed")],
  )
  lines += _study.footer(
    report["wall_s"],
    report["command"],
    figure=(
      "gap.png (the gap from step 0 per row, mean and range over seeds; dashed: the "
      "centroid distance of two isotropic samples of that size)."
    ),
    notes=report.get("notes"),
  )
  path.write_text("\n".join(lines))


def plot(path, curves, eval_examples: int):
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(8, 4.5))
  for label, c in curves.items():
    (line,) = ax.plot(c["steps"], c["gap_mean"], marker="o", label=label)
    ax.fill_between(c["steps"], c["gap_min"], c["gap_max"], color=line.get_color(), alpha=0.15)
  floor = math.sqrt(2 / eval_examples)
  ax.axhline(floor, color="grey", ls="--", lw=1, label=f"sampling floor sqrt(2/n) = {floor:.3f}")
  ax.set_xlabel("train step (0: initial parameters)")
  ax.set_ylabel("gap ||mean image - mean text||")
  ax.set_title("The gap from initialization (held-out test pairs)")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def write(out, runs, args, wall_s, command, rows):
  summary = summarize(runs, rows)
  curves = curves_of(runs, rows)
  if "CLIP" in summary:
    result, agree, checks = verdict(summary, curves, args.eval_examples)
  else:
    result, agree, checks = "CLIP was not run.", "n/a", []
  report = dict(
    claim=CLAIM,
    result=result,
    agree=agree,
    checks=checks,
    args=dict(
      steps=args.steps,
      seeds=list(args.seeds),
      batch_size=args.batch_size,
      eval_every=args.eval_every,
      eval_examples=args.eval_examples,
      rows=args.rows,
      tool_seeds=list(getattr(args, "tool_seeds", args.seeds)),
    ),
    rows={k: v for k, v in rows.items() if k in summary},
    command=command,
    machine=f"{os.cpu_count()} CPU cores",
    wall_s=wall_s,
    notes=args.notes,
    summary=summary,
    curves=curves,
    runs=runs,
  )
  json.dumps(report)  # fails here, before any file is written, on a value json cannot hold
  _study.write_study(
    out, "gap", report, write_markdown, lambda p: plot(p, curves, args.eval_examples)
  )
