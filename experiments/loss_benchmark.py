"""Time and memory of the ring losses against their dense references on 8 simulated devices.

For every registered loss with a dense reference, and each global batch size: median fwd+bwd
time, compiled scratch memory per device (`memory_analysis().temp_size_in_bytes`), peak process
memory (each measurement runs in a fresh process), and, for the ring, the share of the machine's
matrix-multiply peak it reaches (the tile products it performs, `2*B*B*d` FLOPs each, over its
time, against the best rate of the same tile product measured on all 8 devices at once).

    python experiments/loss_benchmark.py                      # the full study (~15 min on 2 cores)
    python experiments/loss_benchmark.py --quick              # B=4096 only, a smoke run
    python experiments/loss_benchmark.py --losses softmax --sizes 8192
    python experiments/loss_benchmark.py --losses all --sizes 4096 --memory-sizes 32768 \
        --huge-batch 0 --repeats 3 --max-seconds 20 --name loss_benchmark_zoo   # every loss

Writes experiments/results/loss_benchmark.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

RESULTS = pathlib.Path(__file__).parent / "results"
# Tile products of shape [B, d] x [d, B] each implementation performs per fwd+bwd: the dense
# autodiff needs logits, dx and dy; the two-pass softmax ring recomputes the logits in its
# backward pass; the one-pass sigmoid ring computes all three in its forward pass. Other losses
# get no share-of-peak figure (their products per pair differ).
PRODUCTS = {"softmax": {"dense": 3, "ring": 4}, "sigmoid": {"dense": 3, "ring": 3}}


# ------------------------------------------------------------------------------------------------
# Worker: one measurement in this process.


def _worker(args) -> dict:
  os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
  import resource

  import jax
  import jax.numpy as jnp
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P
  import numpy as np

  from contrastive import losses
  from contrastive import parallel

  mesh = parallel.make_mesh()
  batch_sharding = NamedSharding(mesh, P("data"))
  scalar_sharding = NamedSharding(mesh, P())

  if args.gemm:
    return _gemm_rate(args, jax, jnp, np, mesh, P)

  objective = losses.get(args.loss)
  k = objective.modalities or 3
  b, d = args.batch, args.dim
  scale, bias = (10.0, -10.0) if objective.uses_bias else (10.0, None)
  params = (scale,) if bias is None else (scale, bias)

  batch_keys = [key for key in objective.side_keys if key != "rng"]
  side = {
    key: jax.device_put(value, batch_sharding)
    for key, value in _side_data(batch_keys, b, d, np).items()
  }
  if "rng" in objective.side_keys:  # a momentum-queue loss's step key (MoCHi), replicated
    side["rng"] = jax.device_put(jax.random.key(0), scalar_sharding)
  if args.impl == "ring":

    def loss_fn(embeddings, *params):
      inner = lambda e, side, *p, axis_name: objective(
        e, p[0], p[1] if len(p) > 1 else None, side, axis_name=axis_name, block_size=args.block_size
      )
      return parallel.shard_loss(inner, mesh)(embeddings, side, *params)
  else:

    def loss_fn(embeddings, *params):
      return objective.dense(embeddings, params[0], params[1] if len(params) > 1 else None, side)

  step = jax.jit(jax.value_and_grad(loss_fn, argnums=tuple(range(1 + len(params)))))
  abstract = (
    [jax.ShapeDtypeStruct((b, d), jnp.float32, sharding=batch_sharding)] * k,
    *[jax.ShapeDtypeStruct((), jnp.float32, sharding=scalar_sharding)] * len(params),
  )
  t0 = time.perf_counter()
  compiled = step.lower(*abstract).compile()
  compile_s = time.perf_counter() - t0
  memory = compiled.memory_analysis()
  out = dict(
    loss=args.loss,
    impl=args.impl,
    batch=b,
    dim=d,
    devices=args.devices,
    temp_bytes_per_device=int(memory.temp_size_in_bytes),
    compile_s=compile_s,
  )
  if args.compile_only:
    return out

  rng = np.random.default_rng(0)
  embeddings = []
  for _ in range(k):
    e = rng.standard_normal((b, d), dtype=np.float32)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    embeddings.append(jax.device_put(e, batch_sharding))
  params = [jax.device_put(np.float32(p), scalar_sharding) for p in params]
  jax.block_until_ready(compiled(embeddings, *params))
  times = []
  deadline = time.perf_counter() + args.max_seconds
  while len(times) < args.repeats and (not times or time.perf_counter() < deadline):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(embeddings, *params))
    times.append(time.perf_counter() - t0)
  out.update(
    median_s=float(np.median(times)),
    min_s=float(np.min(times)),
    runs=len(times),
    peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
  )
  return out


def _side_data(keys, b: int, d: int, np) -> dict:
  """Side data of a loss's `side_keys`, `[b, ...]` global arrays: what the built-in data or a
  trainer would give (3 hard negatives per pair, 4 examples per label, a queue of `b` keys)."""
  rng = np.random.default_rng(1)

  def unit(*shape):
    z = rng.standard_normal(shape, dtype=np.float32)
    return z / np.linalg.norm(z, axis=-1, keepdims=True)

  makers = {
    "neg_y": lambda: unit(b, 3, d),
    "frozen": lambda: unit(b, d),
    "teacher_x": lambda: unit(b, d),
    "teacher_y": lambda: unit(b, d),
    "labels": lambda: (np.arange(b) // 4).astype(np.int32),
    "mix_lambda": lambda: rng.uniform(size=b).astype(np.float32),
    "mix_partner": lambda: rng.permutation(b).astype(np.int32),
    "queue": lambda: unit(b, d),
    # iSogCLR's per-example state as the trainer gathers it: temperatures in the paper's range
    # [0.005, 0.05] and log u of a trained run's order.
    "index": lambda: np.arange(b, dtype=np.int32),
    "tau_x": lambda: rng.uniform(0.005, 0.05, size=b).astype(np.float32),
    "tau_y": lambda: rng.uniform(0.005, 0.05, size=b).astype(np.float32),
    "log_u_x": lambda: rng.uniform(-1.0, 1.0, size=b).astype(np.float32),
    "log_u_y": lambda: rng.uniform(-1.0, 1.0, size=b).astype(np.float32),
    # MedCLIP's multi-hot findings: 14 classes (CheXpert's), about two per example.
    "findings": lambda: (rng.uniform(size=(b, 14)) < 0.15).astype(np.float32),
  }
  unknown = [k for k in keys if k not in makers]
  if unknown:
    raise ValueError(f"No benchmark side data for {unknown}.")
  return {k: makers[k]() for k in keys}


def _gemm_rate(args, jax, jnp, np, mesh, P):
  """FLOP/s of [t, d] x [d, t] tile products run on every device at once."""
  t, d, reps = args.block_size, args.dim, args.gemm_reps

  def body(x, y):
    acc = jax.lax.pcast(jnp.zeros((t, t), jnp.float32), "data", to="varying")
    # Each product depends on the last so none is optimized away or hoisted.
    step = lambda i, acc: acc + jnp.dot(x + acc[:1, :d] * 1e-30, y.T)
    return jax.lax.fori_loop(0, reps, step, acc)[:1, :1]

  fn = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=(P("data"), P("data")), out_specs=P("data")))
  n = len(jax.devices())
  x = jax.device_put(jnp.ones((n * t, d)) / d, jax.sharding.NamedSharding(mesh, P("data")))
  jax.block_until_ready(fn(x, x))
  times = []
  for _ in range(args.repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(x, x))
    times.append(time.perf_counter() - t0)
  flops = n * reps * 2 * t * t * d
  return dict(gemm_tile=t, dim=d, gemm_flops_per_s=flops / min(times))


# ------------------------------------------------------------------------------------------------
# Driver: one subprocess per measurement, then the tables.


def _run(argv: list[str]) -> dict | None:
  cmd = [sys.executable, __file__, "--worker", *argv]
  proc = subprocess.run(cmd, capture_output=True, text=True)
  lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
  if proc.returncode or not lines:
    print(f"  failed: {' '.join(argv)}\n{proc.stderr[-2000:]}", file=sys.stderr)
    return None
  return json.loads(lines[-1])


def _gib(n):
  return f"{n / 2**30:.3f}"


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--gemm", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--compile-only", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--loss", default="softmax", help=argparse.SUPPRESS)
  parser.add_argument("--impl", default="ring", help=argparse.SUPPRESS)
  parser.add_argument("--batch", type=int, default=8192, help=argparse.SUPPRESS)
  parser.add_argument(
    "--losses", default="softmax,sigmoid", help="comma-separated registry names, or 'all'"
  )
  parser.add_argument("--sizes", default="4096,8192,16384,32768,65536")
  parser.add_argument(
    "--dense-max",
    type=int,
    default=16384,
    help="largest batch for the dense reference (it needs B^2 memory)",
  )
  parser.add_argument("--dim", type=int, default=256)
  parser.add_argument("--devices", type=int, default=8)
  parser.add_argument("--block-size", type=int, default=1024)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument(
    "--max-seconds", type=float, default=60.0, help="stop repeating a measurement after this long"
  )
  parser.add_argument("--gemm-reps", type=int, default=32)
  parser.add_argument(
    "--huge-batch",
    type=int,
    default=1_048_576,
    help="the batch of the compile-only memory check (dim 512)",
  )
  parser.add_argument(
    "--memory-sizes",
    default="",
    help="batch sizes at which ring and dense are compiled, not run (memory)",
  )
  parser.add_argument("--quick", action="store_true", help="B=4096 only, no huge compile")
  parser.add_argument("--out", default=str(RESULTS))
  parser.add_argument(
    "--name", default=None, help="the results' file stem (default loss_benchmark[_quick])"
  )
  parser.add_argument(
    "--merge",
    action="store_true",
    help="keep the other losses' rows of the existing results file; replace these losses' rows",
  )
  args = parser.parse_args()

  if args.worker:
    print(json.dumps(_worker(args)))
    return

  sizes = [4096] if args.quick else [int(s) for s in args.sizes.split(",")]
  names = args.losses.split(",")
  if names == ["all"]:
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
    from contrastive import losses

    names = sorted(n for n, o in losses.LOSSES.items() if o.reference is not None)
  common = [
    "--dim",
    str(args.dim),
    "--devices",
    str(args.devices),
    "--block-size",
    str(args.block_size),
    "--repeats",
    str(args.repeats),
    "--max-seconds",
    str(args.max_seconds),
  ]
  load = os.getloadavg()[0]
  print(f"load average before the run: {load:.2f} on {os.cpu_count()} cores")

  # The ring's tile side is min(local batch, block size); measure the GEMM peak at each.
  gemm = {}
  for tile in sorted({min(b // args.devices, args.block_size) for b in sizes}):
    flags = [
      "--dim",
      str(args.dim),
      "--devices",
      str(args.devices),
      "--block-size",
      str(tile),
      "--repeats",
      str(args.repeats),
      "--gemm-reps",
      str(args.gemm_reps),
    ]
    r = _run(["--gemm", *flags])
    gemm[tile] = r["gemm_flops_per_s"] if r else float("nan")
    print(
      f"GEMM peak, [{tile},{args.dim}]x[{args.dim},{tile}] tiles on {args.devices} devices: "
      f"{gemm[tile] / 1e9:.1f} GFLOP/s"
    )

  rows = []
  for name in names:
    for b in sizes:
      for impl in ("dense", "ring"):
        if impl == "dense" and b > args.dense_max:
          continue
        r = _run(["--loss", name, "--impl", impl, "--batch", str(b), *common])
        if r is None:
          continue
        products = PRODUCTS.get(name, {}).get(impl)
        r["tile_products"] = products
        r["gflops_per_s"] = products and products * 2 * b * b * args.dim / r["median_s"] / 1e9
        r["tile"] = min(b // args.devices, args.block_size)
        r["share_of_gemm_peak"] = products and r["gflops_per_s"] * 1e9 / gemm[r["tile"]]
        rows.append(r)
        share = f", {r['share_of_gemm_peak']:.0%} of GEMM peak" if products else ""
        print(
          f"{name:>16} {impl:>5} B={b:>6}: {r['median_s']:.3f} s, scratch "
          f"{_gib(r['temp_bytes_per_device'])} GiB/device, peak RSS "
          f"{_gib(r['peak_rss_bytes'])} GiB{share}",
          flush=True,
        )

  compiled = []
  for name in names:
    for b in [int(x) for x in args.memory_sizes.split(",") if x]:
      for impl in ("dense", "ring"):
        r = _run(["--loss", name, "--impl", impl, "--batch", str(b), "--compile-only", *common])
        if r:
          compiled.append(r)
          print(
            f"{name:>16} {impl:>5} B={b:>6} (compile only): scratch "
            f"{_gib(r['temp_bytes_per_device'])} GiB/device",
            flush=True,
          )

  huge = []
  if not args.quick and args.huge_batch:
    for name in names:
      r = _run(
        [
          "--loss",
          name,
          "--impl",
          "ring",
          "--batch",
          str(args.huge_batch),
          "--compile-only",
          *common[:2],
          "--dim",
          "512",
          *common[4:6],
        ]
      )
      if r:
        huge.append(r)
        print(
          f"{name:>16} ring B={args.huge_batch} d=512 (compile only): scratch "
          f"{_gib(r['temp_bytes_per_device'])} GiB/device"
        )

  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  report = dict(
    argv=sys.argv[1:],
    load_average=load,
    load_average_after=os.getloadavg()[0],
    cores=os.cpu_count(),
    devices=args.devices,
    dim=args.dim,
    block_size=args.block_size,
    gemm_flops_per_s_by_tile=gemm,
    rows=rows,
    compiled=compiled,
    huge_compile=huge,
  )
  stem = args.name or ("loss_benchmark_quick" if args.quick else "loss_benchmark")
  if args.merge and (out / f"{stem}.json").exists():
    report = _merged(json.loads((out / f"{stem}.json").read_text()), report, names)
  (out / f"{stem}.json").write_text(json.dumps(report, indent=1))
  (out / f"{stem}.md").write_text(_markdown(report, args))
  print(f"wrote {out / stem}.json and .md")


def _merged(old: dict, new: dict, names: list[str]) -> dict:
  """`old`'s rows of the losses not in `names`, then `new`'s, each table sorted by loss."""
  merged = dict(new, merged_from=old.get("merged_from", []) + [old["argv"]])
  for table in ("rows", "compiled", "huge_compile"):
    kept = [r for r in old.get(table, []) if r["loss"] not in names]
    merged[table] = sorted(kept + new[table], key=lambda r: r["loss"])
  return merged


def _missing_dense(report) -> list[str]:
  """A line naming the ring rows without a dense row (its process failed: out of memory)."""
  dense = {(r["loss"], r["batch"]) for r in report["rows"] if r["impl"] == "dense"}
  missing = [
    f"{r['loss']} at B={r['batch']}"
    for r in report["rows"]
    if r["impl"] == "ring" and (r["loss"], r["batch"]) not in dense
  ]
  if not missing:
    return []
  return [
    "No dense row (the reference's process failed, the kernel killing it for memory where it "
    "builds [B, B, d] differences; the compile-only table gives what it would need): "
    + ", ".join(missing)
    + ".",
    "",
  ]


def _markdown(report, args) -> str:
  lines = [
    f"# Loss benchmark: fwd+bwd on {report['devices']} simulated CPU devices, d={report['dim']}",
    "",
    f"Written by `python experiments/loss_benchmark.py {' '.join(report['argv'])}`"
    + "".join(
      f", merged into the results of `python experiments/loss_benchmark.py {' '.join(a)}`"
      for a in report.get("merged_from", [])
    )
    + ". The machine line is the last run's.",
    "",
    f"Machine: {report['cores']} cores, load average {report['load_average']:.2f} at the start "
    f"and {report['load_average_after']:.2f} at the end (above ~2 means other work shared the "
    "cores and times are inflated). GEMM peak ([t, d] x [d, t] tiles on every device at once): "
    + ", ".join(
      f"t={t}: {f / 1e9:.0f} GFLOP/s" for t, f in report["gemm_flops_per_s_by_tile"].items()
    )
    + ".",
    "",
    *_missing_dense(report),
    "| loss | impl | B | median s | ring/dense time | scratch GiB/device | peak RSS GiB "
    "| tile products | GFLOP/s | share of GEMM peak |",
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
  ]
  dense = {(r["loss"], r["batch"]): r for r in report["rows"] if r["impl"] == "dense"}
  for r in report["rows"]:
    d = dense.get((r["loss"], r["batch"]))
    ratio = f"{r['median_s'] / d['median_s']:.2f}" if r["impl"] == "ring" and d else ""
    rate = (
      f"{r['tile_products']} | {r['gflops_per_s']:.0f} | {r['share_of_gemm_peak']:.0%}"
      if r["tile_products"]
      else " | | "
    )
    lines.append(
      f"| {r['loss']} | {r['impl']} | {r['batch']} | {r['median_s']:.3f} | {ratio} | "
      f"{_gib(r['temp_bytes_per_device'])} | {_gib(r['peak_rss_bytes'])} | {rate} |"
    )
  if report.get("compiled"):
    lines += [
      "",
      "Compile only (no run): scratch GiB/device",
      "",
      "| loss | B | dense | ring | ring/dense |",
      "|---|---:|---:|---:|---:|",
    ]
    by = {
      (r["loss"], r["batch"], r["impl"]): r["temp_bytes_per_device"] for r in report["compiled"]
    }
    for loss, b in dict.fromkeys((r["loss"], r["batch"]) for r in report["compiled"]):
      dense, ring = by.get((loss, b, "dense")), by.get((loss, b, "ring"))
      ratio = f"{ring / dense:.3f}" if dense and ring is not None else ""
      lines.append(
        f"| {loss} | {b} | {'' if dense is None else _gib(dense)} | "
        f"{'' if ring is None else _gib(ring)} | {ratio} |"
      )
  if report["huge_compile"]:
    lines += [
      "",
      "Compile only (no run), ring, d=512:",
      "",
      "| loss | B | scratch GiB/device | dense would need GiB/device |",
      "|---|---:|---:|---:|",
    ]
    for r in report["huge_compile"]:
      dense_gib = 3 * r["batch"] * r["batch"] / report["devices"] * 4 / 2**30
      lines.append(
        f"| {r['loss']} | {r['batch']} | {_gib(r['temp_bytes_per_device'])} | ~{dense_gib:,.0f} |"
      )
  lines += [
    "",
    "Tile products: the [B, d] x [d, B] matrix products an implementation performs per "
    "fwd+bwd (dense autodiff: logits, dx, dy = 3; two-pass ring: 4, the logits are "
    "recomputed in the backward pass; one-pass ring (sigmoid): 3). GFLOP/s counts "
    "2*B*B*d FLOPs per product.",
    "",
  ]
  return "\n".join(lines)


if __name__ == "__main__":
  main()
