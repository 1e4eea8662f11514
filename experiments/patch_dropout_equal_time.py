"""Patch dropout at equal training time: the demo's ViT with and without it (FLIP's trade).

FLIP (Li et al., CVPR 2023) drops half of the patch tokens in training: each step is cheaper, so
the same wall time buys more steps, and for large ViTs more steps beat the lost tokens. This
trains `configs/demo.py:image_tower=vit` (batch 128) for `--steps` without patch dropout, measures
the train throughput of each fraction (the trainer's `train/examples_per_sec`), trains each
fraction for the steps that take the same training time, and evaluates all on the demo's held-out
data (patch dropout is off at evaluation).

    python experiments/patch_dropout_equal_time.py                  # 600 steps, fractions 0, 0.5

Writes experiments/results/patch_dropout_equal_time.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
METRICS = (
  ("eval/zeroshot_shape/top1", "zero-shot shape"),
  ("eval/zeroshot_shape_heldout/top1", "zero-shot shape, held-out"),
  ("eval/zeroshot_colour/top1", "zero-shot colour"),
  ("eval/retrieval_exact/image_to_text/recall@1", "image->text R@1"),
)


def _run(fraction: float, steps: int, workdir: str, tasks: bool) -> dict:
  from contrastive import train

  c = train.get_config(
    str(ROOT / f"configs/demo.py:image_tower=vit,steps={steps},eval_examples=500"),
    {"eval.report": False, "log.progress": "lines", "checkpoint.every_steps": steps},
  )
  c.model.encoders.image.patch_dropout = fraction
  if not tasks:
    c.eval.tasks = {}
  lines = []
  out = train.train_and_evaluate(c, workdir, progress=lines.append)
  return dict(fraction=fraction, steps=steps, **{k: float(v) for k, v in out.items()})


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--steps", type=int, default=600)
  parser.add_argument("--fractions", default="0,0.5")
  parser.add_argument("--probe_steps", type=int, default=100)
  parser.add_argument("--out", default=str(ROOT / "experiments" / "results"))
  args = parser.parse_args()
  fractions = [float(f) for f in args.fractions.split(",")]
  load_before = os.getloadavg()
  with tempfile.TemporaryDirectory() as tmp:
    rates = {
      f: _run(f, args.probe_steps, f"{tmp}/probe_{f}", tasks=False)["train/examples_per_sec"]
      for f in fractions
    }
    base = fractions[0]
    runs = []
    for f in fractions:
      steps = round(args.steps * rates[f] / rates[base])
      runs.append(_run(f, steps, f"{tmp}/run_{f}", tasks=True))
      print(f, steps, flush=True)
  report = dict(
    args=vars(args), rates=rates, runs=runs, load=[list(load_before), list(os.getloadavg())]
  )
  lines = [
    "# Patch dropout at equal training time: the demo's ViT",
    "",
    f"`configs/demo.py:image_tower=vit` at batch 128. Throughput from {args.probe_steps}-step "
    f"probes; each fraction then trains for the steps that take the time of {args.steps} steps "
    "without patch dropout, and is evaluated on the demo's held-out data (500 examples per "
    "task, all tokens).",
    "",
    "| patch dropout | examples/s | steps | " + " | ".join(n for _, n in METRICS) + " |",
    "|---:|---:|---:|" + "---:|" * len(METRICS),
  ]
  for r in runs:
    cells = " | ".join(f"{100 * r.get(k, float('nan')):.1f}%" for k, _ in METRICS)
    lines.append(f"| {r['fraction']} | {rates[r['fraction']]:.0f} | {r['steps']} | {cells} |")
  lines += [
    "",
    f"Load average (1/5/15 min) {', '.join(f'{v:.1f}' for v in load_before)} before, "
    f"{', '.join(f'{v:.1f}' for v in report['load'][1])} after, on {os.cpu_count()} cores.",
    "",
    "Command: `python experiments/patch_dropout_equal_time.py`",
    "",
  ]
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  (out / "patch_dropout_equal_time.json").write_text(json.dumps(report, indent=1))
  (out / "patch_dropout_equal_time.md").write_text("\n".join(lines))
  print("\n".join(lines))


if __name__ == "__main__":
  main()
