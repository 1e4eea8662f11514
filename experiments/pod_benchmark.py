r"""Will the recipes fit a pod? Every number here comes from the TPU compiler, on a CPU machine.

    python experiments/pod_benchmark.py                  # resumes from results/pod.json
    python experiments/pod_benchmark.py --plan           # list the compiles, run none

For each recipe (the shipped configs, plus a ViT-L/14 CLIP and a SigLIP SO400M/14 built from
them) on each TPU topology, `train.compile_for` compiles the run's train step at the paper's
batch and reports the per-chip peak against the chip's HBM (less the 5% margin); a recipe that
does not fit is compiled again with full rematerialization, then with FSDP as well, until one
fits. The evaluation step is left out (`eval.tasks={}`): the table is about the train step.

The headline: the largest global batch whose train step fits SigLIP B/16 on `v5e:16x16`, with
the ring loss against the same step with a dense all-gather loss (big_vision's: every device
gathers all `y` and computes the `[b, B]` logits of its rows). Both use GradCache
(`optim.accum_steps = B / 16,384`: the encoders see 64 examples per chip at a time), so what
grows with `B` is the loss's memory, the `[B, d]` embeddings and the batch. Found by compiling:
two batches give a line (ring) or a parabola through three points (dense) of the peak in `B`,
and compiles at the predicted edge confirm it.

Each compile runs in a process of its own (a crash or a timeout costs one row); rows are
written to `results/pod.json` as they finish and `results/pod.md` is rewritten from it, so the
script can be stopped and rerun.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "experiments", "results")
PATHS = {"json": os.path.join(RESULTS, "pod.json"), "md": os.path.join(RESULTS, "pod.md")}
GiB = 2**30

TOPOLOGIES = ("v5e:16x16", "v6e:16x16", "v4:8x8x8", "v5p:8x8x16", "h100:8")
# Compiling for GPUs needs JAX's CUDA plugin (`jax-cuda12-plugin`, `jax-cuda12-pjrt`); without
# it the GPU topologies are left out.
GPU_FAMILIES = ("h100",)
MICRO_BATCH = 16_384  # GradCache micro-batch of the headline (64 per v5e:16x16 chip)

# name: (config, overrides, what the batch is from)
RECIPES = {
  "clip_vit_b16": ("configs/clip_vit_b16.py", {}, "CLIP (Radford et al., 2021): 32,768"),
  "siglip_vit_b16": ("configs/siglip_vit_b16.py", {}, "SigLIP (Zhai et al., 2023): 32,768"),
  "lit": ("configs/lit.py", {}, "LiT (Zhai et al., 2022): 16,384 (ours; paper 16k-32k)"),
  "finetune": ("configs/finetune.py", {}, "FLYP (Goyal et al., 2023): 512"),
  "clip_vit_l14": (
    "configs/clip_vit_b16.py",
    {
      "model.encoders.image.variant": "L/14",
      "model.encoders.text.variant": "CLIP-L",
      "model.embed_dim": 768,
    },
    "CLIP ViT-L/14 (Radford et al., 2021): 32,768",
  ),
  "siglip_so400m14": (
    "configs/siglip_vit_b16.py",
    {
      "model.encoders.image.variant": "So400m/14",
      "model.encoders.text.variant": "So400m",
      "model.embed_dim": 1152,
    },
    "SigLIP SO400M/14 (Alabdulmohsin et al., 2023): 32,768",
  ),
  # Not in the table: the CPU-sized SigLIP, to try the script in a minute (`--smoke`).
  "siglip_cpu": ("configs/siglip_vit_b16.py:cpu", {}, "the tests' size: 32"),
}
TABLE_RECIPES = tuple(r for r in RECIPES if r != "siglip_cpu")
HEADLINE = {"recipe": "siglip_vit_b16", "topology": "v5e:16x16", "micro_batch": MICRO_BATCH}
# Tried in order when the paper's setting does not fit.
FIXES = (
  ("remat=full", {"model.remat": "full"}),
  ("remat=full, fsdp=4", {"model.remat": "full", "mesh.fsdp": 4}),
  ("remat=full, fsdp=16", {"model.remat": "full", "mesh.fsdp": 16}),
  ("remat=full, GradCache x4", {"model.remat": "full", "optim.accum_steps": 4}),
  ("remat=full, GradCache x16", {"model.remat": "full", "optim.accum_steps": 16}),
)


# One compile (the child process).
# ------------------------------------------------------------------------------------------------


def _dense_objective(name: str):
  """The dense all-gather form of `sigmoid` or `softmax` (big_vision's): each device gathers
  every `y` (and `x`, for softmax's columns) and computes the `[b, B]` logits of its own rows.

  sigmoid: `L = -(1/B) sum_i sum_j log sigmoid(z_ij (t x_i.y_j + b))`; softmax: CLIP's mean of
  the two cross-entropies. Every device returns the same global loss (a `psum`).
  """
  import jax
  import jax.numpy as jnp

  from contrastive import losses

  def rows_of(x, axis_name):
    b = x.shape[0]
    return jax.lax.axis_index(axis_name) * b + jnp.arange(b)

  def sigmoid(embeddings, scale, bias, side, *, axis_name, block_size=None):
    del side, block_size
    x, y = (e.astype(jnp.float32) for e in embeddings)
    ys = jax.lax.all_gather(y, axis_name, axis=0, tiled=True)  # [B, d]
    logits = scale * x @ ys.T + bias  # [b, B]
    positive = jnp.arange(ys.shape[0])[None, :] == rows_of(x, axis_name)[:, None]
    local = -jnp.sum(jax.nn.log_sigmoid(jnp.where(positive, logits, -logits)))
    return jax.lax.psum(local, axis_name) / ys.shape[0]

  def softmax(embeddings, scale, bias, side, *, axis_name, block_size=None):
    del bias, side, block_size
    x, y = (e.astype(jnp.float32) for e in embeddings)
    xs = jax.lax.all_gather(x, axis_name, axis=0, tiled=True)
    ys = jax.lax.all_gather(y, axis_name, axis=0, tiled=True)
    rows = rows_of(x, axis_name)
    local = 0.0
    for a, others in ((x, ys), (y, xs)):  # image -> text rows, text -> image rows
      logits = scale * a @ others.T  # [b, B]
      local += jnp.sum(jax.nn.logsumexp(logits, axis=1) - logits[jnp.arange(len(rows)), rows])
    return jax.lax.psum(local, axis_name) / (2 * xs.shape[0])

  registered = losses.get(name)
  fn = {"sigmoid": sigmoid, "softmax": softmax}[name]
  return losses.Objective(
    f"{name}_dense_allgather", fn, uses_bias=registered.uses_bias, init=registered.init
  )


def compile_one(job: dict) -> dict:
  """Compiles one job (`recipe`, `topology`, `overrides`, `loss`); the row to store."""
  from contrastive import train

  path, base, _ = RECIPES[job["recipe"]]
  overrides = {**base, "eval.tasks": {}, **job["overrides"]}
  config = train.get_config(os.path.join(ROOT, path), overrides)
  objective = _dense_objective(config.loss.name) if job["loss"] == "dense" else None
  start = time.perf_counter()
  report = train.compile_for(config, job["topology"], objective=objective)
  row = {k: v for k, v in vars(report).items() if k not in ("hlo",) and not k.startswith("eval_")}
  row.update(job, wall_seconds=time.perf_counter() - start, limit_bytes=report.limit_bytes)
  # When: a long benchmark's rows can straddle a change to the library.
  row.update(finished=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
  return row


# The driver.
# ------------------------------------------------------------------------------------------------


def _key(job: dict) -> str:
  over = ",".join(f"{k}={v}" for k, v in sorted(job["overrides"].items()))
  return f"{job['recipe']}|{job['topology']}|{job['loss']}|{over}"


def _load() -> dict:
  if os.path.exists(PATHS["json"]):
    with open(PATHS["json"]) as f:
      return json.load(f)
  return {"rows": {}, "headline": {}}


@contextlib.contextmanager
def _locked():
  """The stored results, for reading and updating; two drivers may share the files."""
  os.makedirs(os.path.dirname(PATHS["json"]), exist_ok=True)
  with open(os.path.join(tempfile.gettempdir(), "pod_benchmark.lock"), "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    results = _load()
    yield results
    _save(results)


def _save(results: dict) -> None:
  tmp = PATHS["json"] + ".tmp"
  with open(tmp, "w") as f:
    json.dump(results, f, indent=1, sort_keys=True)
  os.replace(tmp, PATHS["json"])
  with open(PATHS["md"], "w") as f:
    f.write(markdown(results))


def run_job(job: dict, *, timeout: int) -> dict:
  """The stored row of `job`, compiling it in a child process if it has none."""
  key = _key(job)
  with _locked() as results:
    if key in results["rows"]:
      return results["rows"][key]
  cmd = [sys.executable, os.path.abspath(__file__), "--one", json.dumps(job)]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  start = time.perf_counter()
  try:
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    lines = [s for s in out.stdout.splitlines() if s.startswith("{")]
    if out.returncode == 0 and lines:
      row = json.loads(lines[-1])
    else:
      tail = (out.stderr.strip().splitlines() or ["no output"])[-1][:300]
      row = dict(job, error=f"exit {out.returncode}: {tail}")
  except subprocess.TimeoutExpired:
    row = dict(job, error=f"timeout after {timeout} s")
  row["wall_seconds"] = time.perf_counter() - start
  with _locked() as results:
    results["rows"][key] = row
  print(f"{key}: {_verdict(row)} ({row['wall_seconds']:.0f} s)", flush=True)
  return row


def _verdict(row: dict) -> str:
  if "error" in row:
    return row["error"]
  return f"{row['peak_bytes'] / GiB:.2f} GiB, {'fits' if row['fits'] else 'does not fit'}"


def recipe_jobs(recipes, topologies):
  """The paper's setting of each recipe on each topology, then the fixes until one fits (recipe
  by recipe, so that a stopped run has every topology of the first recipes)."""
  for recipe in recipes:
    for topology in topologies:
      chips = math.prod(int(n) for n in topology.split(":")[1].split("x"))
      yield [dict(recipe=recipe, topology=topology, loss="ring", overrides={}, setting="paper")] + [
        dict(recipe=recipe, topology=topology, loss="ring", overrides=o, setting=s)
        for s, o in FIXES
        if o.get("mesh.fsdp", 1) < chips
      ]


def _batch_job(batch: int, loss: str) -> dict:
  micro = HEADLINE["micro_batch"]
  return dict(
    recipe=HEADLINE["recipe"],
    topology=HEADLINE["topology"],
    loss=loss,
    setting=f"batch {batch:,}, GradCache",
    overrides={"data.batch_size": batch, "optim.accum_steps": batch // micro},
  )


def _round(batch: float) -> int:
  micro = HEADLINE["micro_batch"]
  return max(micro, int(batch // micro) * micro)


def largest_batch(loss: str, *, timeout: int, max_compiles: int = 8) -> dict:
  """The largest batch (a multiple of the micro-batch) whose step fits, for the ring or the
  dense loss, to within 10%: a line through the peaks of two compiled batches (a parabola once
  three are known; a refused compile's peak is the compiler's figure) predicts the edge; then
  compiles step up by 20% until one fails (or halve until one fits) and bisect."""
  import numpy as np

  micro = HEADLINE["micro_batch"]
  with _locked() as results:  # what an earlier run compiled counts too
    points = {
      r["batch_size"]: r
      for r in results["rows"].values()
      if "error" not in r
      and r["setting"].startswith("batch ")
      and r["loss"] == loss
      and r["recipe"] == HEADLINE["recipe"]
      and r["topology"] == HEADLINE["topology"]
    }

  def compile_at(batch):
    points[batch] = run_job(_batch_job(batch, loss), timeout=timeout)

  seeds = [micro * k for k in ((16, 64) if loss == "ring" else (8, 16))]
  for b in seeds:
    if b not in points:
      compile_at(b)
  valid = {b: r for b, r in points.items() if "error" not in r}
  if len(valid) >= 2:
    xs = np.array(sorted(valid), float)
    ys = np.array([valid[b]["peak_bytes"] for b in sorted(valid)], float)
    coef = np.polyfit(xs, ys, min(len(xs) - 1, 1 if loss == "ring" else 2))
    limit = next(iter(valid.values()))["limit_bytes"]
    roots = [
      r.real
      for r in np.roots(coef - np.r_[np.zeros(len(coef) - 1), limit])
      if abs(r.imag) < 1e-6 and r.real > 0
    ]
    if roots:  # a fit through points far below the edge can overshoot: at most 16x further
      guess = _round(min(max(roots), 16 * max(seeds)))
      if guess not in points:
        compile_at(guess)
  while len(points) < max_compiles:
    fitting = [b for b, r in points.items() if r.get("fits")]
    failing = [b for b, r in points.items() if not r.get("fits")]
    best = max(fitting, default=None)
    above = min((b for b in failing if best is None or b > best), default=None)
    if best is None:
      guess = _round(min(points) / 2)
    elif above is None:
      guess = _round(best * 1.2)
    elif above - best <= max(micro, 0.1 * best):
      break
    else:
      guess = _round((best + above) / 2)
    if guess in points:
      break
    compile_at(guess)
  fitting = [b for b, r in points.items() if r.get("fits")]
  failing = [b for b, r in points.items() if not r.get("fits")]
  best = max(fitting, default=None)
  return {
    "largest_fitting_batch": best,
    "smallest_failing_above": min((b for b in failing if best is None or b > best), default=None),
    "compiled": sorted(points),
  }


def _gib(n) -> str:
  return f"{n / GiB:.2f}"


def _collectives(r: dict) -> str:
  started = r.get("async_collectives", {})
  return ", ".join(
    f"{k.replace('collective-permute', 'permute')} {n}"
    + (f" ({started[k]} async)" if k in started else "")
    for k, n in sorted(r.get("collectives", {}).items())
  )


def _row(r: dict) -> str:
  cells = [r["recipe"], r["topology"], r["loss"], r["setting"]]
  if "error" in r:
    return "| " + " | ".join(cells + [""] * 6 + [r["error"], "", f"{r['wall_seconds']:.0f}"]) + " |"
  verdict = "yes" if r["fits"] else ("no (refused)" if r.get("refused") else "no")
  cells += [
    f"{r['batch_size']:,}",
    _gib(r["param_bytes"] + r["opt_state_bytes"]),
    _gib(r["batch_bytes"]),
    _gib(r["temp_bytes"]),
    _gib(r["peak_bytes"]),
    _gib(r["limit_bytes"]),
    verdict,
    _collectives(r),
    f"{r['compile_seconds']:.0f}",
  ]
  return "| " + " | ".join(cells) + " |"


def markdown(results: dict) -> str:
  rows = results["rows"]
  out = [
    "# Will it fit? The recipes compiled for TPU pods and an 8-GPU host, on a CPU",
    "",
    "Written by `experiments/pod_benchmark.py` from `pod.json`; every number is the",
    "compiler's (`train.compile_for`: XLA:TPU from libtpu 0.0.42.1, XLA:GPU from",
    "jax-cuda12-plugin 0.10.2, both with no accelerator). Per chip, in GiB: the parameters and",
    "optimizer state and",
    "the batch (their shards, before the TPU's tiled layout pads them), the train step's",
    "temporaries and its peak (arguments + outputs - donated + temporaries, from",
    "`memory_analysis()`), against the limit: the HBM the compiler allows (v5e 15.75, v6e 31.25,",
    "v4 30.75, v5p 95.74 GiB; an H100 59.36 GiB, the 75% of its 80 GB that JAX preallocates)",
    "less a 5% margin. `no (refused)`: the compiler refused the",
    "program for lack of memory, and the peak is the figure its message gives. Collectives: in",
    "the optimized HLO (permute = the ring's collective-permute), how many asynchronous. Compile:",
    "seconds for one compile on this 2-core machine, shared with other jobs (a rough guide).",
    "The evaluation step is not compiled here (`eval.tasks={}`).",
    "",
  ]
  head = results.get("headline") or {}
  if head:
    where = f"`{HEADLINE['recipe']}` on {HEADLINE['topology']}"
    out += [f"## Headline: the largest batch of {where}, ring against dense", ""]
    for loss in ("ring", "dense"):
      h = head.get(loss)
      if h:
        edge = h.get("smallest_failing_above")
        best = h["largest_fitting_batch"]
        out.append(
          f"- {loss}: {f'{best:,}' if best else 'none'} fits"
          + (f", {edge:,} does not" if edge else "")
          + f" (compiled at {', '.join(f'{b:,}' for b in h['compiled'])})."
        )
    ring, dense = ((head.get(k) or {}).get("largest_fitting_batch") for k in ("ring", "dense"))
    if ring and dense:
      out.append(f"- the ring fits {ring / dense:.1f}x the dense loss's batch in the same memory.")
    out.append("")
  out += [
    "## Every compile",
    "",
    "| recipe | topology | loss | setting | batch | params + opt | batch/chip | temporaries "
    "| peak | limit | fits | collectives | compile s |",
    "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: |",
  ]
  order = {t: i for i, t in enumerate(TOPOLOGIES)}
  recipe_order = {r: i for i, r in enumerate(RECIPES)}

  def sort_key(k):
    r = rows[k]
    return (
      r["setting"].startswith("batch "),
      order.get(r["topology"], 99),
      recipe_order.get(r["recipe"], 99),
      r["loss"],
      r.get("batch_size", 0),
      k,
    )

  out += [_row(rows[k]) for k in sorted(rows, key=sort_key)]
  out += ["", "Notes: " + results.get("notes", ""), ""]
  return "\n".join(out)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--one", help="compile one job (JSON) and print its row (internal)")
  parser.add_argument("--plan", action="store_true", help="list the jobs, compile none")
  parser.add_argument("--render", action="store_true", help="rewrite pod.md from pod.json")
  parser.add_argument("--timeout", type=int, default=1800, help="seconds per compile")
  parser.add_argument("--topologies", default=",".join(TOPOLOGIES))
  parser.add_argument("--recipes", default=",".join(TABLE_RECIPES))
  parser.add_argument(
    "--part",
    choices=("all", "recipes", "headline"),
    default="all",
    help="recipes: the table (first topology first); headline: ring vs dense; two drivers with "
    "one part each share the results",
  )
  parser.add_argument(
    "--smoke", action="store_true", help="the CPU-sized SigLIP on v5e:2x2, into /tmp/pod_smoke.*"
  )
  args = parser.parse_args()
  if args.one:
    print(json.dumps(compile_one(json.loads(args.one))), flush=True)
    return
  if args.smoke:
    PATHS.update(json="/tmp/pod_smoke.json", md="/tmp/pod_smoke.md")
    HEADLINE.update(recipe="siglip_cpu", topology="v5e:2x2", micro_batch=32)
    args.recipes, args.topologies = "siglip_cpu", "v5e:2x2,v4:2x2x1"
  recipes = args.recipes.split(",")
  topologies = args.topologies.split(",")
  if importlib.util.find_spec("jax_cuda12_plugin") is None:
    gpus = [t for t in topologies if t.split(":")[0] in GPU_FAMILIES]
    if gpus and args.part != "headline" and not (args.render or args.plan):
      print(f"Leaving out {gpus}: no CUDA plugin (pip install jax-cuda12-plugin jax-cuda12-pjrt).")
    topologies = [t for t in topologies if t not in gpus]
  if args.render:
    with _locked():
      pass  # _locked saves, and so renders, what it read
    return
  if args.plan:
    for ladder in recipe_jobs(recipes, topologies):
      print(" -> ".join(_key(j) for j in ladder))
    return
  if args.part in ("all", "recipes"):
    for ladder in recipe_jobs(recipes, topologies[:1]):
      _ladder(ladder, args.timeout)
  if args.part in ("all", "headline"):
    for loss in ("ring", "dense"):
      found = largest_batch(loss, timeout=args.timeout)
      with _locked() as results:
        results["headline"][loss] = found
  if args.part in ("all", "recipes"):
    for ladder in recipe_jobs(recipes, topologies[1:]):
      _ladder(ladder, args.timeout)


def _ladder(ladder, timeout):
  for job in ladder:
    row = run_job(job, timeout=timeout)
    if row.get("fits") or "not divisible" in row.get("error", ""):
      return  # fits, or a batch smaller than the pod, which no setting changes


if __name__ == "__main__":
  main()
