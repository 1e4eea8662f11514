"""Loading imported checkpoints, and embedding images with one here against open_clip.

1. Load time and peak host memory of `models.load_pretrained` for open_clip's ViT-B-32, ViT-B-16
   and ViT-L-14 at full size with random weights, saved in open_clip's layout
   (`open_clip_config.json` + `open_clip_model.safetensors`, written by `models.save_pretrained`;
   no torch, no download). Each load runs in a fresh subprocess: the peak is
   `resource.getrusage(RUSAGE_SELF).ru_maxrss` after the load minus the same after importing
   the library (numpy, jax, flax, `contrastive.models`), so it counts what loading adds; the
   page cache holds the file (it was just written). The parent stays small while it starts
   them (a child's `ru_maxrss` starts at its parent's resident size).
2. Image embedding speed of the imported ViT-B-16 here (`jax.jit` of the image tower, float32,
   the CPU's one JAX device) against open_clip's `encode_image` on the same weights and the same
   inputs, in this run, one after the other: images per second at batch 32 and 224 px, and the
   largest difference of their normalized embeddings. open_clip runs in the peers' venv (torch,
   open_clip; a stand-in torchvision, see tests/peers.py) as a subprocess.

    python experiments/pretrained_benchmark.py          # the recorded table (~10 min here)
    python experiments/pretrained_benchmark.py --models ViT-B-32 --iters 2   # a quick look

Writes experiments/results/pretrained_benchmark.{json,md}. The machine is a shared 2-core CPU:
the one-minute load average is recorded with each measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "experiments" / "results"
PEER_PYTHON = "/work/peers/bin/python"
MODELS = ("ViT-B-32", "ViT-B-16", "ViT-L-14")

_PEER = r"""
import json, sys, time
import numpy as np
sys.path.insert(0, {root!r})
from tests import peers
open_clip = peers.import_open_clip()
import torch, safetensors.torch
torch.set_num_threads({threads})
model = open_clip.create_model({name!r}, pretrained=None)
model.load_state_dict(safetensors.torch.load_file({weights!r}))
model.eval()
x = torch.from_numpy(np.load({inputs!r})).permute(0, 3, 1, 2).contiguous()
with torch.inference_mode():
  for _ in range({warmup}):
    emb = model.encode_image(x, normalize=True)
  start = time.perf_counter()
  for _ in range({iters}):
    emb = model.encode_image(x, normalize=True)
  seconds = time.perf_counter() - start
np.save({out!r}, emb.numpy())
print(json.dumps(dict(seconds=seconds, torch=torch.__version__, open_clip=open_clip.__version__)))
"""


def _load_average() -> float:
  return round(os.getloadavg()[0], 2)


def _maxrss_bytes() -> int:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def measure_load(path: str) -> dict:
  """(In the subprocess.) Imports, then loads `path`; what the load added to the peak RSS."""
  import jax
  import numpy as np

  from contrastive import models

  baseline = _maxrss_bytes()
  start = time.perf_counter()
  pre = models.load_pretrained(path)
  seconds = time.perf_counter() - start
  peak = _maxrss_bytes()
  n = sum(int(np.prod(np.shape(x))) for x in jax.tree.leaves(pre.params))
  return dict(seconds=seconds, baseline_bytes=baseline, peak_bytes=peak, params=n)


def _save_random(name: str, path: pathlib.Path) -> int:
  """A full-size random model of open_clip's `name`, saved in open_clip's layout."""
  import numpy as np

  from contrastive import models
  from contrastive.models.pretrained import common
  from contrastive.models.pretrained import open_clip

  config = open_clip.model_config_from_open_clip(open_clip.named_config(name))
  rng = np.random.default_rng(0)
  flat = {
    k: (rng.standard_normal(shape, dtype=np.float32) * 0.02)
    for k, shape in common.param_shapes(config).items()
  }
  for key in flat:
    if key.endswith("/scale"):  # LayerNorm gains near one keep the activations sane
      flat[key] += 1.0
  flat["log_scale"] = np.asarray(np.log(1 / 0.07), np.float32)
  models.save_pretrained(config, common.unflatten(flat), str(path), family="open_clip")
  return sum(v.size for v in flat.values())


def _speed_here(path: str, inputs, *, warmup: int, iters: int) -> tuple[float, object]:
  """Seconds for `iters` jitted image embeddings of `inputs`, and the last embeddings."""
  import jax

  from contrastive import models

  pre = models.load_pretrained(path)
  model = models.make_model(pre.model_config)
  params = jax.device_put(pre.params)
  embed = jax.jit(lambda p, x: model.apply({"params": p}, {"image": x}, train=False)[0]["image"])
  x = jax.device_put(inputs)
  for _ in range(warmup):
    emb = embed(params, x).block_until_ready()
  start = time.perf_counter()
  for _ in range(iters):
    emb = embed(params, x).block_until_ready()
  return time.perf_counter() - start, jax.device_get(emb)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--models", nargs="+", default=list(MODELS))
  parser.add_argument("--speed_model", default="ViT-B-16")
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--iters", type=int, default=5)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--workdir", default=None, help="where the checkpoints go (default: tmp)")
  parser.add_argument("--peer_python", default=PEER_PYTHON)
  parser.add_argument("--measure_load", default=None, help=argparse.SUPPRESS)
  parser.add_argument("--save", nargs=2, default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.measure_load:
    print(json.dumps(measure_load(args.measure_load)))
    return
  if args.save:
    _save_random(args.save[0], pathlib.Path(args.save[1]))
    return

  workdir = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="pretrained_benchmark_"))
  names = list(dict.fromkeys([*args.models, args.speed_model]))
  result = dict(
    machine=dict(
      platform=platform.platform(), cpus=os.cpu_count(), python=platform.python_version()
    ),
    command=" ".join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]]),
    loads=[],
    speed=None,
  )
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)  # one CPU device with every thread, as a user runs it
  # Subprocesses write the checkpoints, so this one stays small: a child's ru_maxrss starts at
  # its parent's resident size when it was forked.
  for name in names:
    path = workdir / name
    if not (path / "open_clip_model.safetensors").exists():
      subprocess.run([sys.executable, __file__, "--save", name, str(path)], env=env, check=True)
  for name in args.models:
    path = workdir / name
    before = _load_average()
    proc = subprocess.run(
      [sys.executable, __file__, "--measure_load", str(path)],
      env=env,
      capture_output=True,
      text=True,
      check=True,
    )
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    added = row["peak_bytes"] - row["baseline_bytes"]
    row.update(
      model=name,
      file_bytes=(path / "open_clip_model.safetensors").stat().st_size,
      added_bytes=added,
      added_over_param_bytes=added / (4 * row["params"]),
      load_average=max(before, _load_average()),
    )
    result["loads"].append(row)
    print(
      f"{name}: {row['params'] / 1e6:.1f}M params, load {row['seconds']:.2f} s, "
      f"+{added / 2**30:.2f} GiB ({row['added_over_param_bytes']:.2f}x param bytes)",
      flush=True,
    )

  import numpy as np  # after the loads: see above

  path = workdir / args.speed_model
  rng = np.random.default_rng(0)
  inputs = rng.standard_normal((args.batch, 224, 224, 3), dtype=np.float32)
  np.save(workdir / "inputs.npy", inputs)
  load_here = _load_average()
  seconds, here_emb = _speed_here(str(path), inputs, warmup=args.warmup, iters=args.iters)
  load_here = max(load_here, _load_average())
  speed = dict(
    model=args.speed_model,
    batch=args.batch,
    image_size=224,
    iters=args.iters,
    here_seconds=seconds,
    here_images_per_s=args.batch * args.iters / seconds,
    here_load_average=load_here,
  )
  if shutil.which(args.peer_python) or os.path.exists(args.peer_python):
    script = _PEER.format(
      root=str(ROOT),
      threads=os.cpu_count(),
      name=args.speed_model,
      weights=str(path / "open_clip_model.safetensors"),
      inputs=str(workdir / "inputs.npy"),
      warmup=args.warmup,
      iters=args.iters,
      out=str(workdir / "peer_emb.npy"),
    )
    load_peer = _load_average()
    proc = subprocess.run(
      [args.peer_python, "-c", script],
      capture_output=True,
      text=True,
      check=True,
      env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    peer = json.loads(proc.stdout.strip().splitlines()[-1])
    peer_emb = np.load(workdir / "peer_emb.npy")
    speed.update(
      peer_seconds=peer["seconds"],
      peer_images_per_s=args.batch * args.iters / peer["seconds"],
      peer_load_average=max(load_peer, _load_average()),
      torch=peer["torch"],
      open_clip=peer["open_clip"],
      peer_command=f"{args.peer_python} -c <script>",
      max_abs_embedding_diff=float(np.max(np.abs(peer_emb - here_emb))),
    )
    speed["ratio_here_over_open_clip"] = speed["here_images_per_s"] / speed["peer_images_per_s"]
  result["speed"] = speed
  print(json.dumps(speed, indent=1), flush=True)
  RESULTS.mkdir(exist_ok=True)
  (RESULTS / "pretrained_benchmark.json").write_text(json.dumps(result, indent=2) + "\n")
  (RESULTS / "pretrained_benchmark.md").write_text(_markdown(result))
  if args.workdir is None:
    shutil.rmtree(workdir, ignore_errors=True)


def _markdown(result: dict) -> str:
  lines = [
    "# Pretrained checkpoints: load cost and embedding speed",
    "",
    f"`python {result['command']}` on {result['machine']['platform']}, "
    f"{result['machine']['cpus']} CPUs (shared with other work: the load average is "
    "the one-minute figure at the time).",
    "",
    "## Loading (`models.load_pretrained`, open_clip layout, random full-size weights)",
    "",
    "| model | parameters | file | load time | peak host memory added | / parameter "
    "bytes | load avg |",
    "|---|---:|---:|---:|---:|---:|---:|",
  ]
  for r in result["loads"]:
    lines.append(
      f"| {r['model']} | {r['params'] / 1e6:.1f}M | {r['file_bytes'] / 2**20:,.0f} "
      f"MiB | {r['seconds']:.2f} s | {r['added_bytes'] / 2**20:,.0f} MiB | "
      f"{r['added_over_param_bytes']:.2f}x | {r['load_average']} |"
    )
  s = result["speed"]
  lines += [
    "",
    "The peak is `ru_maxrss` after the load minus `ru_maxrss` after importing the "
    "library, in a fresh process per model.",
    "",
    f"## Image embedding, {s['model']}, batch {s['batch']}, {s['image_size']} px, "
    "float32, same weights and inputs",
    "",
    "| | images/s | load avg |",
    "|---|---:|---:|",
    f"| here (jax.jit, 1 CPU device) | {s['here_images_per_s']:.1f} | {s['here_load_average']} |",
  ]
  if "peer_images_per_s" in s:
    lines += [
      f"| open_clip {s['open_clip']} (torch {s['torch']}) | "
      f"{s['peer_images_per_s']:.1f} | {s['peer_load_average']} |",
      "",
      f"Ratio here / open_clip: {s['ratio_here_over_open_clip']:.2f}. Largest difference "
      f"of the normalized embeddings: {s['max_abs_embedding_diff']:.2e}. open_clip ran "
      f"as `{s['peer_command']}` (the peers' venv).",
    ]
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  main()
