"""Examples per second of the data pipeline.

    python experiments/data_benchmark.py            # writes experiments/results/data_benchmark.*

Rows: the built-in generator alone at 32 px (one core, no pipeline), then the full training
pipeline (source, shuffle, transform, tokenize, batch; per-process numpy batches) for the
built-in dataset at 64 and 224 px and for an ArrayRecord dataset of JPEGs at 224 px (written
with `contrastive.data.build` into a temporary directory; random resized crop on), each with 0,
1 and 2 grain worker processes. Startup (to the first batch, worker start included) is timed
apart from the steady rate. The machine's load average is recorded: on a shared machine the
numbers move with it.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from contrastive import data
from contrastive.data import build
from contrastive.data import shapes


def generator_rate(image_size: int, seconds: float) -> tuple[float, float]:
  """Examples per wall second and per CPU second of `ShapesSource[i]` alone, in this process."""
  src = shapes.ShapesSource(split="train", num_examples=10**7, image_size=image_size)
  src[0]
  n, start, cpu = 0, time.perf_counter(), time.process_time()
  while time.perf_counter() - start < seconds or n < 200:
    src[n]
    n += 1
  return n / (time.perf_counter() - start), n / (time.process_time() - cpu)


def make_jpeg_dataset(path: str, num: int, side: int = 256) -> str:
  """`num` JPEG photos-like images (the built-in scenes at `side` px) built into `path`."""
  from PIL import Image

  src = shapes.ShapesSource(split="train", num_examples=num, image_size=side)
  examples = []
  for i in range(num):
    record = src[i]
    buf = io.BytesIO()
    Image.fromarray(record["image"]).save(buf, "JPEG", quality=90)
    examples.append(
      build.Example(key=f"{i:06d}.jpg", image=buf.getvalue(), captions=[record["caption"]])
    )
  build.write_dataset(examples, path, num_shards=4)
  return path


def pipeline_rate(cfg, seconds: float) -> tuple[float, float]:
  """(startup seconds to the first batch, steady examples per second)."""
  start = time.perf_counter()
  it = data.make_pipeline(cfg, split="train", process_index=0, process_count=1)
  try:
    next(it)
    startup = time.perf_counter() - start
    next(it)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or n < 5:
      next(it)
      n += 1
    rate = n * cfg.batch_size / (time.perf_counter() - start)
  finally:
    it.close()
  return startup, rate


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seconds", type=float, default=6.0, help="timed seconds per row")
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--workers", default="0,1,2")
  parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
  args = parser.parse_args(argv)
  workers = [int(w) for w in args.workers.split(",")]

  rows = []
  load = os.getloadavg()[0]
  for size in (32, 64, 224):
    rate, cpu_rate = generator_rate(size, args.seconds / 2)
    rows.append(
      dict(
        source="built-in generator alone",
        image_size=size,
        workers="-",
        startup_s=None,
        examples_per_s=rate,
        examples_per_cpu_s=cpu_rate,
        load=load,
      )
    )
    print(
      f"generator {size}px: {rate:.0f}/s, {cpu_rate:.0f} per CPU second (load {load:.1f})",
      flush=True,
    )

  with tempfile.TemporaryDirectory() as tmp:
    jpeg_dir = make_jpeg_dataset(os.path.join(tmp, "jpegs"), 512)
    setups = [
      ("built-in", 64, {}),
      ("built-in", 224, {}),
      (
        "ArrayRecord JPEG 256 px",
        224,
        dict(source="arrayrecord", random_resized_crop=True, crop_scale=(0.5, 1.0)),
      ),
    ]
    for name, size, extra in setups:
      for w in workers:
        cfg = data.default_config()
        cfg.update(dict(image_size=size, batch_size=args.batch_size, num_workers=w, **extra))
        if extra.get("source") == "arrayrecord":
          cfg.arrayrecord.path = jpeg_dir
        load = os.getloadavg()[0]
        startup, rate = pipeline_rate(cfg, args.seconds)
        rows.append(
          dict(
            source=name,
            image_size=size,
            workers=w,
            startup_s=startup,
            examples_per_s=rate,
            examples_per_cpu_s=None,
            load=load,
          )
        )
        print(
          f"{name} {size}px workers={w}: {rate:.0f}/s, startup {startup:.1f}s (load {load:.1f})",
          flush=True,
        )

  os.makedirs(args.out, exist_ok=True)
  meta = dict(
    command="python experiments/data_benchmark.py",
    batch_size=args.batch_size,
    seconds_per_row=args.seconds,
    cpu_count=os.cpu_count(),
    python=platform.python_version(),
    machine=platform.machine(),
    note="CPU only; 1 process; tokenizer 'bytes', max_len 128, normalization 'clip'",
  )
  with open(os.path.join(args.out, "data_benchmark.json"), "w") as f:
    json.dump(dict(meta=meta, rows=rows), f, indent=2)
  lines = [
    "# Data pipeline throughput",
    "",
    f"`{meta['command']}` on {meta['cpu_count']} CPU cores (shared with other jobs; "
    "`load` is the 1-minute load average when the row started). Global batch "
    f"{args.batch_size}, one process, {args.seconds:g} s timed per row after the first "
    "two batches; startup is the time to the first batch. For the generator alone, "
    "examples per CPU second (`time.process_time`) is also given: it depends less on "
    "the other jobs than the wall-clock rate.",
    "",
    "| source | image px | workers | examples/s | per CPU s | startup s | load |",
    "|---|---:|---:|---:|---:|---:|---:|",
  ]
  for r in rows:
    startup = "-" if r["startup_s"] is None else f"{r['startup_s']:.1f}"
    cpu = "-" if r["examples_per_cpu_s"] is None else f"{r['examples_per_cpu_s']:,.0f}"
    lines.append(
      f"| {r['source']} | {r['image_size']} | {r['workers']} | "
      f"{r['examples_per_s']:,.0f} | {cpu} | {startup} | {r['load']:.1f} |"
    )
  with open(os.path.join(args.out, "data_benchmark.md"), "w") as f:
    f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
  main()
