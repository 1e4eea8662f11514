"""Parameter counts, fwd+bwd throughput and compiled memory of the two-tower models.

For each size (an image ViT and a text transformer of the same name, CLIP-style contrastive
loss on top), on 8 simulated CPU devices laid out as a data-parallel, FSDP or data x tensor mesh
through the logical axis rules of `contrastive.parallel`: the parameters of each tower, compile
time, the median time of one jitted forward+backward step (gradients of the dense softmax loss
with respect to every parameter) as examples per second, XLA's FLOP count, and the compiled
memory per device (`memory_analysis()`: arguments plus scratch).

    python experiments/model_benchmark.py --meshes data fsdp data_tensor --compare-scan
                                                             # the recorded table (~15 min)
    python experiments/model_benchmark.py                    # tiny and small sizes, data mesh
    python experiments/model_benchmark.py --sizes mu S --meshes data fsdp
    python experiments/model_benchmark.py --quick            # tiny sizes, 2 timed steps

Writes experiments/results/model_benchmark.{json,md}. The numbers are for a shared 2-core CPU:
compare rows with each other, not with accelerators.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse
import json
import pathlib
import platform
import statistics
import sys
import time

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from contrastive import models
from contrastive import parallel

RESULTS = pathlib.Path(__file__).parent / "results"

# name: (ViT variant, text size, image side, global batch, text length, vocabulary)
CONFIGS = {
  "mu": ("mu/8", "mu", 32, 64, 16, 1024),
  "nano": ("nano/8", "nano", 64, 64, 16, 1024),
  "micro": ("micro/16", "micro", 128, 32, 32, 8192),
  "Ti": ("Ti/16", "Ti", 224, 16, 64, 32000),
  "S": ("S/16", "S", 224, 16, 64, 32000),
}


def dense_softmax_loss(x, y, scale):
  """CLIP's symmetric InfoNCE on the whole batch (the benchmark's stand-in loss)."""
  logits = scale * x @ y.T
  labels = jnp.arange(x.shape[0])
  return 0.5 * (
    optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    + optax.softmax_cross_entropy_with_integer_labels(logits.T, labels).mean()
  )


# mesh name: (data, fsdp, tensor) sizes for 8 devices.
MESHES = {"data": (8, 1, 1), "fsdp": (1, 8, 1), "data_tensor": (4, 1, 2)}


def _flops(model, params, batch, mesh, *, scan: bool) -> float:
  """XLA's FLOP count of one step (all devices), from the unrolled model before partitioning.

  (XLA counts a `while` loop's body once, so a scanned model's own count is too low.)
  """

  def unrolled_loss(params, batch):
    emb, extras = model.apply({"params": params}, batch, train=True)
    return dense_softmax_loss(emb["image"], emb["text"], extras["scale"])

  if scan:
    params = models.unstack_layers(params)
  step = jax.jit(jax.value_and_grad(unrolled_loss))
  with parallel.use_rules(mesh):
    cost = step.lower(params, batch).cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", float("nan"))) if cost else float("nan")


def measure(name: str, *, steps: int, scan: bool, dtype: str, mesh_name: str) -> dict:
  image, text, image_size, batch_size, seq_len, vocab = CONFIGS[name]
  cfg = models.model_config(
    image=image,
    text=text,
    image_size=image_size,
    vocab_size=vocab,
    max_len=seq_len,
    embed_dim=256 if name in ("Ti", "S") else 64,
  )
  cfg.scan, cfg.dtype = scan, dtype
  model = models.make_model(cfg)
  data, fsdp, tensor = MESHES[mesh_name]
  mesh = parallel.make_mesh(data=data, fsdp=fsdp, tensor=tensor)
  init = lambda rng: model.init(rng, model.dummy_batch(1), train=False)
  variables, shardings = parallel.sharded_init(init, mesh, jax.random.key(0))
  params = variables["params"]
  counts = {k: models.count_params(v) for k, v in params.items()}

  rng = np.random.default_rng(0)
  host_batch = {
    "image": rng.normal(size=(batch_size, image_size, image_size, 3)).astype(np.float32),
    "text": rng.integers(1, vocab, size=(batch_size, seq_len)).astype(np.int32),
  }
  batch = {
    k: jax.device_put(v, parallel.logical_sharding(("batch",) + (None,) * (v.ndim - 1), mesh))
    for k, v in host_batch.items()
  }

  def loss_fn(params, batch):
    emb, extras = model.apply({"params": params}, batch, train=True)
    return dense_softmax_loss(emb["image"], emb["text"], extras["scale"])

  step = jax.jit(
    jax.value_and_grad(loss_fn),
    in_shardings=(shardings["params"], None),
    out_shardings=(None, shardings["params"]),
  )
  with parallel.use_rules(mesh):
    start = time.perf_counter()
    compiled = step.lower(params, batch).compile()
    compile_s = time.perf_counter() - start
  mem = compiled.memory_analysis()
  unrolled = models.make_model({**cfg.to_dict(), "scan": False}) if scan else model
  flops = _flops(unrolled, params, batch, mesh, scan=scan)
  loss, grads = compiled(params, batch)
  jax.block_until_ready(grads)
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    jax.block_until_ready(compiled(params, batch))
    times.append(time.perf_counter() - start)
  step_s = statistics.median(times)
  return dict(
    name=name,
    image=image,
    text=text,
    image_size=image_size,
    seq_len=seq_len,
    vocab=vocab,
    batch=batch_size,
    scan=scan,
    dtype=dtype,
    mesh=mesh_name,
    params_image=counts["image"],
    params_text=counts["text"],
    params_total=sum(counts.values()),
    compile_s=round(compile_s, 2),
    step_s=round(step_s, 4),
    examples_per_s=round(batch_size / step_s, 2),
    gflop_per_step=round(flops / 1e9, 2),
    gflops=round(flops / 1e9 / step_s, 1),
    argument_mib=round(mem.argument_size_in_bytes / 2**20, 2),
    temp_mib=round(mem.temp_size_in_bytes / 2**20, 2),
    loss=float(loss),
  )


def markdown(rows: list[dict], meta: dict) -> str:
  lines = [
    "# Model benchmark",
    "",
    f"Forward+backward (gradients of the dense CLIP loss for every parameter) on "
    f"{meta['devices']} simulated CPU devices ({meta['machine']}), meshes "
    "`data` = 8-way data parallel, `fsdp` = parameters and batch split 8 ways, "
    f"`data_tensor` = 4-way data x 2-way tensor parallel; median of {meta['steps']} steps after "
    "one warm-up. Memory is per device from `compiled.memory_analysis()`: arguments (the "
    "parameter shard, the batch shard) and scratch (activations kept for the backward pass, "
    "gradients, temporaries).",
    "",
    "| size | image | text | image px | text len | batch | mesh | scan | dtype | image params | "
    "text params | total params | compile s | step s | examples/s | GFLOP/step | GFLOP/s | "
    "args MiB | scratch MiB |",
    "|" + " --- |" * 19,
  ]
  for r in rows:
    lines.append(
      f"| {r['name']} | {r['image']} | {r['text']} | {r['image_size']} | {r['seq_len']} | "
      f"{r['batch']} | {r['mesh']} | {r['scan']} | {r['dtype']} | "
      f"{r['params_image'] / 1e6:.3f}M | "
      f"{r['params_text'] / 1e6:.3f}M | {r['params_total'] / 1e6:.3f}M | {r['compile_s']} | "
      f"{r['step_s']} | {r['examples_per_s']} | {r['gflop_per_step']} | {r['gflops']} | "
      f"{r['argument_mib']} | {r['temp_mib']} |"
    )
  lines += [
    "",
    "GFLOP/step is XLA's count for the whole step (`Lowered.cost_analysis()` of the "
    "unrolled model, since XLA counts a scanned loop's body once); GFLOP/s divides it by "
    "the step time.",
    "",
    f"Command: `{meta['command']}` (jax {meta['jax']}, flax {meta['flax']}; 1-minute "
    f"load average {meta['load_average'][0]} at the start, {meta['load_average'][1]} at "
    "the end: the machine was shared, so the times are noisy).",
    "",
  ]
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--sizes", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument(
    "--meshes",
    nargs="+",
    default=["data"],
    choices=list(MESHES),
    help="data: 8-way data parallel; fsdp: parameters and batch split 8 "
    "ways; data_tensor: 4-way data x 2-way tensor parallel",
  )
  parser.add_argument(
    "--compare-scan",
    action="store_true",
    help="also time each size with scanned layers (on the first mesh)",
  )
  parser.add_argument("--quick", action="store_true", help="tiny sizes, 2 steps")
  parser.add_argument("--out", default=str(RESULTS / "model_benchmark"))
  args = parser.parse_args()
  if args.quick:
    args.sizes, args.steps = ["mu", "nano"], 2
  rows = []
  load_before = os.getloadavg()[0]
  for name in args.sizes:
    for mesh_name in args.meshes:
      scans = (False, True) if args.compare_scan and mesh_name == args.meshes[0] else (False,)
      for scan in scans:
        row = measure(name, steps=args.steps, scan=scan, dtype=args.dtype, mesh_name=mesh_name)
        print(json.dumps(row), flush=True)
        rows.append(row)
  meta = dict(
    devices=jax.device_count(),
    steps=args.steps,
    machine=f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()})",
    jax=jax.__version__,
    flax=flax.__version__,
    load_average=[round(load_before, 1), round(os.getloadavg()[0], 1)],
    command=" ".join(["python experiments/model_benchmark.py", *sys.argv[1:]]),
  )
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.with_suffix(".json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=2) + "\n")
  out.with_suffix(".md").write_text(markdown(rows, meta))
  print(markdown(rows, meta))


if __name__ == "__main__":
  main()
