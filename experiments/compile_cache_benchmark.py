"""The demo's time to its first step with JAX's persistent compilation cache, cold and warm.

    python experiments/compile_cache_benchmark.py   # writes experiments/results/compile_cache.*

Each row runs `python -m contrastive.train` in a fresh process for one step, with evaluation
off, against a new cache directory: first cold (empty cache: every program compiles and is
written), then warm (the same command again: the programs are read back). Times: the process's
whole wall time, and the time to the first step as the trainer logs it (`elapsed` of the step-1
line: start-up, the data pipeline's first batch, compiling, and the step). Configs: the demo
(CNN), its ViT variant, and its CoCa variant. The load average is recorded: on a shared machine
the numbers move with it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {
  "demo (CNN)": "configs/demo.py",
  "demo (ViT)": "configs/demo.py:image_tower=vit",
  "demo (CoCa)": "configs/demo.py:image_tower=vit,objective=coca",
}


def _seconds(text: str) -> float:
  m = re.fullmatch(r"(?:(\d+)m)?(\d+)s", text)
  return 60 * int(m.group(1) or 0) + int(m.group(2))


def run_once(config: str, cache: str, workdir: str) -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  cmd = [
    sys.executable,
    "-m",
    "contrastive.train",
    f"--config={config}",
    f"--workdir={workdir}",
    "--config.total_steps=1",
    "--config.eval.tasks={}",
    "--config.log.progress=lines",
    f"--config.compilation_cache_dir={cache}",
  ]
  start = time.perf_counter()
  out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
  wall = time.perf_counter() - start
  if out.returncode:
    raise SystemExit(f"{config} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
  first = re.search(r"step 1/1 .*elapsed (\S+)", out.stdout + out.stderr)
  return dict(wall_s=wall, first_step_s=_seconds(first.group(1)) if first else None)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", default=os.path.join(ROOT, "experiments", "results"))
  parser.add_argument("--configs", default=",".join(CONFIGS))
  args = parser.parse_args()
  rows = []
  load_before = os.getloadavg()
  for name in args.configs.split(","):
    with tempfile.TemporaryDirectory() as tmp:
      cache = os.path.join(tmp, "cache")
      cold = run_once(CONFIGS[name], cache, os.path.join(tmp, "cold"))
      entries = len(os.listdir(cache))
      warm = run_once(CONFIGS[name], cache, os.path.join(tmp, "warm"))
    rows.append(dict(config=name, command=CONFIGS[name], cold=cold, warm=warm, entries=entries))
    print(name, cold, warm, flush=True)
  report = dict(
    rows=rows,
    machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
    load_before=list(load_before),
    load_after=list(os.getloadavg()),
  )
  lines = [
    "# The persistent compilation cache: time to the first step, cold and warm",
    "",
    "One train step of each config in a fresh process (`--config.total_steps=1`, no "
    "evaluation); cold: an empty cache directory; warm: the same command again. First step: "
    "the `elapsed` of the trainer's step-1 line (start-up, first batch, compile, step).",
    "",
    "| config | cold: first step (s) | warm: first step (s) | cold: process (s) | "
    "warm: process (s) | programs cached |",
    "|---|---:|---:|---:|---:|---:|",
  ]
  for r in rows:
    lines.append(
      f"| {r['config']} (`{r['command']}`) | {r['cold']['first_step_s']} | "
      f"{r['warm']['first_step_s']} | {r['cold']['wall_s']:.1f} | {r['warm']['wall_s']:.1f} | "
      f"{r['entries']} |"
    )
  lines += [
    "",
    f"Machine: {report['machine']}; load average (1/5/15 min) "
    f"{', '.join(f'{v:.1f}' for v in load_before)} before, "
    f"{', '.join(f'{v:.1f}' for v in report['load_after'])} after.",
    "",
    "Command: `python experiments/compile_cache_benchmark.py`",
    "",
  ]
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "compile_cache.json"), "w") as f:
    json.dump(report, f, indent=1)
  with open(os.path.join(args.out, "compile_cache.md"), "w") as f:
    f.write("\n".join(lines))
  print("\n".join(lines))


if __name__ == "__main__":
  main()
