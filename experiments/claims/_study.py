"""What every claim study does the same way: train one config, summarize seeds, write tables.

A study is a script beside this file that builds trainer configs (never a second trainer), runs
them with `train_run`, reduces the seeds with `seed_stats` and writes its markdown with
`claim_header` and `runs_table`, so every results file opens with the claim, our result and the
verdict, and ends with the command, wall time and machine load.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
RESULTS = ROOT / "experiments" / "results" / "claims"


def study_parser(doc: str, name: str) -> argparse.ArgumentParser:
  """The flags every study has: seeds, where runs and results go, notes, a rewrite from json."""
  parser = argparse.ArgumentParser(description=doc.split("\n")[0])
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--workdir", default=f"runs/claims/{name}")
  parser.add_argument("--out", default=str(RESULTS), help=f"where {name}.{{md,png,json}} go")
  parser.add_argument("--notes", default="", help="a paragraph added to the markdown")
  parser.add_argument(
    "--from_json",
    default=None,
    help=f"rewrite {name}.{{md,png,json}} from this json's runs (no training)",
  )
  return parser


def saved_study(args) -> dict | None:
  """The study that `--from_json` names, its settings copied onto `args`; None without it."""
  if not args.from_json:
    return None
  old = json.loads(pathlib.Path(args.from_json).read_text())
  vars(args).update(old["args"], notes=args.notes or old.get("notes", ""))
  return old


def write_study(out: pathlib.Path, name: str, report: dict, write_markdown, plot=None) -> None:
  """`{name}.json`, `{name}.md` (`write_markdown(path, report)`) and `{name}.png`
  (`plot(path)`, where given) in `out`; prints the verdict."""
  out.mkdir(parents=True, exist_ok=True)
  (out / f"{name}.json").write_text(json.dumps(report, indent=1))
  write_markdown(out / f"{name}.md", report)
  if plot is not None:
    plot(out / f"{name}.png")
  print(
    f"{report['result']} Agree? {report['agree']}. Wrote {out}/{name}.{{md,png,json}}", flush=True
  )


def zoo_config(
  loss: str,
  *,
  steps: int,
  batch_size: int,
  seed: int,
  tasks=None,
  eval_examples: int | None = None,
  eval_every: int | None = None,
  overrides: dict | None = None,
):
  """configs/loss_zoo.py for `loss` (the demo's model, data and schedule) as a study runs it.

  Only the evaluation tasks named in `tasks` are kept (all where None), their test sources cut
  to `eval_examples`; evaluation every `eval_every` steps (only at the end where None); one
  checkpoint at the end (saves are not what a study times); `overrides` are dotted config keys.
  """
  import ml_collections

  from contrastive import train

  c = train.get_config(
    str(ROOT / f"configs/loss_zoo.py:loss={loss},steps={steps},batch_size={batch_size}"),
    {
      "seed": seed,
      "eval.every_steps": eval_every or steps,
      "eval.report": False,
      "log.progress": "lines",
      "checkpoint.every_steps": steps,
      **(overrides or {}),
    },
  )
  if tasks is not None:
    kept = {k: c.eval.tasks[k].to_dict() for k in tasks}
    for task in kept.values():
      source = task.get("source", {})
      if eval_examples and source.get("split") in ("test", "shape", "colour"):
        source["num_examples"] = eval_examples
    c.eval.tasks = ml_collections.ConfigDict(kept)
  return c


def saved_run(run_dir: pathlib.Path) -> dict | None:
  """The result a finished run saved in `run_dir` (`save_run`), or None: a study cut short
  resumes from its finished runs."""
  path = run_dir / "result.json"
  return json.loads(path.read_text()) if path.exists() else None


def save_run(run_dir: pathlib.Path, result: dict) -> dict:
  """Saves a finished run's `result` where `saved_run` reads it; returns `result`."""
  (run_dir / "result.json").write_text(json.dumps(result))
  return result


def train_run(config, run_dir: pathlib.Path, name: str) -> dict:
  """Trains `config` afresh in `run_dir`; the final metrics, the eval history, wall and load.

  Returns `final` (the trainer's metrics dict: `eval/<task>/<metric>`, `train/loss`, ...),
  `history` (every evaluation's flat metrics with its `step`), `wall_s` and the 1/5/15-minute
  load averages before and after, so a table can say how shared the machine was.
  """
  from contrastive import train
  from contrastive.evaluate import report

  if run_dir.exists():
    shutil.rmtree(run_dir)  # a fresh run: never resume one of other settings
  run_dir.mkdir(parents=True)
  load_before = os.getloadavg()
  start = time.time()
  print(f"[{name}] -> {run_dir}", flush=True)
  with open(run_dir / "progress.log", "w") as log:
    final = train.train_and_evaluate(
      config, run_dir, progress=lambda s: print(s, file=log, flush=True)
    )
  wall = time.time() - start
  history = report.read_history(run_dir / "eval") if (run_dir / "eval").exists() else []
  print(
    f"[{name}] {wall:.0f} s, train loss {final.get('train/loss', float('nan')):.3f}", flush=True
  )
  return dict(
    final={k: _plain(v) for k, v in final.items()},
    history=history,
    wall_s=wall,
    load_before=list(load_before),
    load_after=list(os.getloadavg()),
  )


def _plain(value):
  try:
    return float(value)
  except (TypeError, ValueError):
    return value


def seed_stats(values) -> dict:
  """`{mean, std, values}` over seeds; `std` is the sample std (None for one seed)."""
  values = np.array([v for v in values if v is not None], float)
  return dict(
    mean=float(values.mean()) if values.size else None,
    std=float(values.std(ddof=1)) if values.size > 1 else None,
    values=values.tolist(),
  )


def clearly_above(a: dict, b: dict) -> bool:
  """Whether seed stats `a` exceed `b` by more than twice the larger seed spread."""
  spread = max(a["std"] or 0.0, b["std"] or 0.0)
  return a["mean"] - b["mean"] > 2 * spread


def fmt(stat: dict, pct: bool = False) -> str:
  """`mean ± std` (in percent where `pct`), `n/a` where nothing was measured."""
  if stat is None or stat["mean"] is None:
    return "n/a"
  k, d = (100, 1) if pct else (1, 3)
  spread = "" if stat["std"] is None else f" ± {k * stat['std']:.{d}f}"
  return f"{k * stat['mean']:.{d}f}{spread}"


def metric_bars(ax, summary: dict, metrics, width: float) -> None:
  """Grouped bars on `ax`: each arm's `metrics` (`(key, name)` pairs of `summary[arm]`'s seed
  statistics) in %, mean ± std over seeds, each seed a dot."""
  x = np.arange(len(metrics))
  for j, arm in enumerate(summary):
    stats = [summary[arm][k] for k, _ in metrics]
    pos = x + (j - (len(summary) - 1) / 2) * width
    ax.bar(
      pos,
      [100 * s["mean"] for s in stats],
      width,
      yerr=[100 * (s["std"] or 0) for s in stats],
      capsize=3,
      label=arm,
      color=f"C{j}",
    )
    for p, s in zip(pos, stats):
      ax.scatter([p] * len(s["values"]), [100 * v for v in s["values"]], color="k", s=8, zorder=3)
  ax.set_xticks(x, [name for _, name in metrics], fontsize=8)
  ax.set_ylabel("%")


def claim_header(title: str, claim: str, result: str, agree: str) -> list[str]:
  """The first lines of every study: the paper's claim, ours, and whether they agree."""
  return [
    f"# {title}",
    "",
    f"**Paper's claim**: {claim}",
    "",
    f"**Our result**: {result}",
    "",
    f"**Agree?** {agree}.",
    "",
  ]


def runs_table(runs: list[dict], key_columns: list[tuple[str, str]]) -> list[str]:
  """One row per run: its identifying fields, wall time, load before and after, train loss."""
  head = [name for _, name in key_columns]
  lines = [
    "| " + " | ".join(head) + " | wall (s) | load avg before | load avg after | final train loss |",
    "|" + "---|" * len(head) + "---:|---|---|---:|",
  ]
  for r in runs:
    loss = r["final"].get("train/loss")
    lines.append(
      "| "
      + " | ".join(str(r[k]) for k, _ in key_columns)
      + f" | {r['wall_s']:.0f} | "
      + ", ".join(f"{v:.1f}" for v in r["load_before"])
      + " | "
      + ", ".join(f"{v:.1f}" for v in r["load_after"])
      + " | "
      + ("" if loss is None else f"{loss:.3f}")
      + " |"
    )
  return lines


def footer(total_wall_s: float, command: str, *, figure: str = "", notes: str = "") -> list[str]:
  """A table's end: the wall time and the command, then the figure's caption and the notes (a
  study's `--notes`) where given."""
  lines = [
    "",
    f"Total wall time {total_wall_s / 60:.1f} min on {os.cpu_count()} CPU cores; "
    "load averages are `os.getloadavg()` (1/5/15 min) around each run.",
    "",
    f"Command: `{command}`",
    "",
  ]
  if figure:
    lines += [f"Figure: {figure}", ""]
  if notes:
    lines += ["## Notes", "", notes, ""]
  return lines


def command() -> str:
  return "python " + " ".join(
    [str(pathlib.Path(sys.argv[0]).resolve().relative_to(ROOT))] + sys.argv[1:]
  )
