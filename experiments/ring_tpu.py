"""The ring on the TPU compiler: does each transfer overlap tile compute, and at what precision?

With `libtpu` installed, compiles the softmax and sigmoid rings (the loss alone, and its value
and gradient) for TPU topologies on this CPU-only machine, and reads from the scheduled HLO
(`contrastive.losses.overlap`) each collective-permute: asynchronous or not, and whether tile
compute runs between its start and its done. Before (the ring as of commit BEFORE, its column
accumulators travelling with their block) and after (inputs sent ahead of the tiles,
accumulators one hop behind). Also: the per-chip temporaries, the same on 8 simulated CPU
devices, which LIBTPU_INIT_ARGS flags libtpu honours, and what the TPU's default matrix
precision (bfloat16 operands) does to the losses, emulated on the CPU.

    python experiments/ring_tpu.py            # everything (~10 min on 2 cores)
    python experiments/ring_tpu.py --no-pod   # without the v5e:16x16 compiles

Writes experiments/results/ring_tpu.{json,md}.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # eager work stays on the CPU; TPU is compile-only
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # several compiling processes at once
os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()

import jax
from jax.experimental import mesh_utils
import jax.numpy as jnp
from jax.sharding import AxisType
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from contrastive import parallel
from contrastive.losses import emulation
from contrastive.losses import overlap
from contrastive.losses import ring
from contrastive.losses import sigmoid
from contrastive.losses import softmax

RESULTS = pathlib.Path(__file__).parent / "results"
ROOT = pathlib.Path(__file__).parent.parent
BEFORE = "b4f1f29"  # the last commit whose ring sends its accumulators with their block
# (topology, global batch, dim, block_size, device order): one tile per hop, four tiles per
# hop, a pod with the devices as `parallel.make_mesh` orders them (a cycle through neighbouring
# chips, `parallel.ring_order`) and as `mesh_utils.create_device_mesh` does (row by row).
CASES = [
  ("v5e:2x2", 4096, 256, None, "make_mesh"),
  ("v5e:2x2", 16384, 256, 1024, "make_mesh"),
  ("v5e:16x16", 1_048_576, 512, None, "make_mesh"),
  ("v5e:16x16", 1_048_576, 512, None, "mesh_utils"),
]
CPU_CASES = [(8192, 256, None), (65536, 512, 1024)]
FLAGS = [
  "",
  "--xla_enable_async_collective_permute=true",
  "--xla_enable_async_collective_permute=false",
  "--xla_tpu_enable_async_collective_permute=true",
]
MIB = 2**20


def _ring_before():
  """The ring module as of commit BEFORE, or None where git cannot give it."""
  try:
    text = subprocess.run(
      ["git", "show", f"{BEFORE}:contrastive/losses/ring.py"],
      cwd=ROOT,
      check=True,
      capture_output=True,
      text=True,
    ).stdout
  except (OSError, subprocess.CalledProcessError):
    return None
  path = pathlib.Path(tempfile.mkdtemp()) / "ring_before.py"
  path.write_text(text)
  spec = importlib.util.spec_from_file_location("ring_before", path)
  module = importlib.util.module_from_spec(spec)
  sys.modules["ring_before"] = module  # dataclasses look their module up while it loads
  spec.loader.exec_module(module)
  return module


def _loss_fns(ring_module, mesh, block_size, precision=None):
  """{loss: jit-able function of global (x, y, params...)} built on `ring_module`."""
  extra = {} if precision is None else {"precision": precision}
  soft = parallel.shard_loss(
    lambda x, y, s, axis_name: ring_module.ring_loss(
      softmax._softmax_tiles(0.0),
      x,
      y,
      {"scale": s},
      axis_name=axis_name,
      block_size=block_size,
      **extra,
    ),
    mesh,
  )
  sig = parallel.shard_loss(
    lambda x, y, s, b, axis_name: ring_module.ring_loss(
      sigmoid.SIGMOID_TILES,
      x,
      y,
      {"scale": s, "bias": b},
      axis_name=axis_name,
      block_size=block_size,
      **extra,
    ),
    mesh,
  )
  return {"softmax": (soft, 1), "sigmoid": (sig, 2)}


def _compile(fn, n_params, mesh, batch, dim, backward):
  array = jax.ShapeDtypeStruct(
    (batch, dim), jnp.float32, sharding=NamedSharding(mesh, P("data", None))
  )
  scalar = jax.ShapeDtypeStruct((), jnp.float32, sharding=NamedSharding(mesh, P()))
  f = jax.value_and_grad(fn, argnums=(0, 1)) if backward else fn
  start = time.perf_counter()
  compiled = jax.jit(f).lower(array, array, *[scalar] * n_params).compile()
  return compiled, time.perf_counter() - start


def _mesh(topology, order="make_mesh"):
  from jax.experimental import topologies

  devices = topologies.get_topology_desc(platform="tpu", topology_name=topology).devices
  if order == "mesh_utils":  # the layout make_mesh took before `parallel.ring_order`
    return Mesh(
      mesh_utils.create_device_mesh((len(devices), 1, 1), devices),
      parallel.MESH_AXES,
      axis_types=(AxisType.Auto,) * len(parallel.MESH_AXES),
    )
  return parallel.make_mesh(devices=devices)


def overlap_rows(rings, cases):
  rows = []
  for topology, batch, dim, block_size, order in cases:
    mesh = _mesh(topology, order)
    for version, module in rings.items():
      for loss, (fn, n_params) in _loss_fns(module, mesh, block_size).items():
        for backward in (False, True):
          compiled, seconds = _compile(fn, n_params, mesh, batch, dim, backward)
          transfers = overlap.ring_transfers(compiled.as_text())
          rows.append(
            dict(
              topology=topology,
              order=order,
              batch=batch,
              dim=dim,
              block_size=block_size,
              ring=version,
              loss=loss,
              pass_="fwd+bwd" if backward else "fwd",
              transfers=len(transfers),
              asynchronous=sum(t.is_async for t in transfers),
              overlapped=sum(bool(t.overlapped) for t in transfers),
              not_overlapped=[
                f"{'/'.join(t.arrays)} in {t.computation}" for t in transfers if not t.overlapped
              ],
              temp_mib=compiled.memory_analysis().temp_size_in_bytes / MIB,
              compile_s=round(seconds, 1),
            )
          )
          print(rows[-1], flush=True)
  return rows


def cpu_rows(rings):
  mesh = parallel.make_mesh(devices=jax.devices("cpu")[:8])
  rows = []
  for batch, dim, block_size in CPU_CASES:
    for version, module in rings.items():
      for loss, (fn, n_params) in _loss_fns(module, mesh, block_size).items():
        for backward in (False, True):
          compiled, _ = _compile(fn, n_params, mesh, batch, dim, backward)
          rows.append(
            dict(
              batch=batch,
              dim=dim,
              block_size=block_size,
              ring=version,
              loss=loss,
              pass_="fwd+bwd" if backward else "fwd",
              temp_mib=compiled.memory_analysis().temp_size_in_bytes / MIB,
            )
          )
          print(rows[-1], flush=True)
  return rows


_FLAG_PROBE = """
import json, sys
sys.argv = ["ring_tpu"]
from experiments import ring_tpu
rings = {"before": ring_tpu._ring_before()}
rows = ring_tpu.overlap_rows(rings, [("v5e:2x2", 16384, 256, 1024, "make_mesh")])
print("RESULT", json.dumps([r for r in rows if r["loss"] == "softmax"]))
"""


def flag_rows():
  """The before ring's softmax under each LIBTPU_INIT_ARGS (read when libtpu starts: a process
  each)."""
  rows = []
  for flag in FLAGS:
    env = dict(os.environ, LIBTPU_INIT_ARGS=flag, PYTHONPATH=str(ROOT))
    out = subprocess.run(
      [sys.executable, "-c", _FLAG_PROBE], env=env, cwd=ROOT, capture_output=True, text=True
    )
    result = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if result:
      for r in json.loads(result[0][len("RESULT ") :]):
        rows.append(
          dict(
            flag=flag or "(none)",
            pass_=r["pass_"],
            transfers=r["transfers"],
            asynchronous=r["asynchronous"],
            overlapped=r["overlapped"],
          )
        )
    else:
      error = [line for line in out.stderr.splitlines() if "flag" in line.lower()]
      rows.append(dict(flag=flag, error=(error or out.stderr.splitlines()[-1:] or ["?"])[-1]))
    print(rows[-1], flush=True)
  return rows


def precision_hlo():
  """What the similarity product looks like in the TPU's HLO, by precision."""
  mesh = _mesh("v5e:2x2")
  out = {}
  for precision in (None, "high", "highest"):
    fn, n_params = _loss_fns(ring, mesh, None, precision)["softmax"]
    text = _compile(fn, n_params, mesh, 4096, 256, False)[0].as_text()
    dots = [line for line in text.splitlines() if " convolution(" in line or " dot(" in line]
    out[str(precision)] = dict(
      bf16_converts=sum(" convert(" in line and "= bf16[" in line for line in text.splitlines()),
      dot_results=sorted(
        {
          line.split(" convolution(")[0].split(" = ")[1].split("{")[0]
          for line in dots
          if " convolution(" in line
        }
      ),
      operand_precision=sorted(
        {
          line.split("operand_precision=")[1].split("}")[0] + "}"
          for line in dots
          if "operand_precision=" in line
        }
      ),
    )
    print(precision, out[str(precision)], flush=True)
  return out


# ------------------------------------------------------------------------------------------------
# The precision study, on the CPU.


def embeddings(seed: int, batch: int, dim: int, rank: int = 16, noise: float = 1.0):
  """Unit [batch, dim] float64 pairs: a shared direction in a `rank`-dim subspace plus
  independent noise of norm about `noise` per side (positive cosine about 1 / (1 + noise^2));
  the subspace keeps negatives as close as trained embeddings' are, so that at a logit scale of
  100 the softmax loss is not zero."""
  k0, k1, k2 = jax.random.split(jax.random.key(seed), 3)
  shared = jax.random.normal(k0, (batch, rank), jnp.float64)
  shared = jnp.pad(
    shared / jnp.linalg.norm(shared, axis=-1, keepdims=True), ((0, 0), (0, dim - rank))
  )
  out = []
  for k in (k1, k2):
    e = shared + noise * jax.random.normal(k, (batch, dim), jnp.float64) / jnp.sqrt(dim)
    out.append(e / jnp.linalg.norm(e, axis=-1, keepdims=True))
  return out


def dense_softmax(matmul, x, y, t):
  logits = t * matmul(x, y)
  positive = t * jnp.sum(x * y, axis=-1)  # elementwise in float32 on the TPU too, not a product
  return (
    jnp.sum(jax.nn.logsumexp(logits, 1))
    + jnp.sum(jax.nn.logsumexp(logits, 0))
    - 2 * jnp.sum(positive)
  ) / (2 * x.shape[0])


def dense_sigmoid(matmul, x, y, t, bias=-10.0):
  logits = t * matmul(x, y) + bias
  sign = 2 * jnp.eye(x.shape[0], dtype=logits.dtype) - 1
  return -jnp.sum(jax.nn.log_sigmoid(sign * logits)) / x.shape[0]


def _exact(a, b):
  return jnp.dot(a, b.T, precision="highest")


def precision_error(loss: str, batch: int, dim: int, scale: float) -> dict:
  """Relative errors of the loss and its gradients: TPU-default (bf16 operands) and float32
  products, against float64."""
  fn = {"softmax": dense_softmax, "sigmoid": dense_sigmoid}[loss]
  with jax.enable_x64(True):
    x, y = embeddings(0, batch, dim)
    want, want_grads = jax.value_and_grad(lambda a, b: fn(_exact, a, b, scale), (0, 1))(x, y)
    want_grads = [g.astype(jnp.float32) for g in want_grads]
  x32, y32 = x.astype(jnp.float32), y.astype(jnp.float32)
  row = dict(loss=loss, batch=batch, dim=dim, scale=scale, value=float(want))
  for name, matmul in (("bf16", emulation.bf16_matmul), ("f32", _exact)):
    value, grads = jax.jit(
      jax.value_and_grad(lambda a, b, matmul=matmul: fn(matmul, a, b, jnp.float32(scale)), (0, 1))
    )(x32, y32)
    row[f"{name}_loss_abs"] = abs(float(value) - float(want))
    row[f"{name}_loss_rel"] = row[f"{name}_loss_abs"] / abs(float(want))
    row[f"{name}_grad_rel"] = max(
      float(jnp.linalg.norm(g - w) / jnp.linalg.norm(w)) for g, w in zip(grads, want_grads)
    )
  return row


def precision_rows():
  rows = []
  for batch in (256, 4096):
    for dim in (256, 768):
      for loss in ("softmax", "sigmoid"):
        for scale in (10.0, 100.0):
          rows.append(precision_error(loss, batch, dim, scale))
          print(rows[-1], flush=True)
  return rows


# ------------------------------------------------------------------------------------------------
# The report.


def _table(rows, columns):
  lines = [
    "| " + " | ".join(c for c, _ in columns) + " |",
    "| " + " | ".join("---" for _ in columns) + " |",
  ]
  lines += ["| " + " | ".join(fmt(r) for _, fmt in columns) + " |" for r in rows]
  return "\n".join(lines)


def write(results, seconds):
  RESULTS.mkdir(exist_ok=True)
  (RESULTS / "ring_tpu.json").write_text(json.dumps(results, indent=1) + "\n")
  md = [
    "# The ring on the TPU compiler",
    "",
    f"Written by `python experiments/ring_tpu.py` ({seconds / 60:.0f} min on a 2-core CPU, "
    f"no TPU; jax {jax.__version__}, libtpu compile-only). *before*: the ring of commit "
    f"`{BEFORE}`; *after*: inputs sent before the hop's tiles, accumulators one hop behind "
    "(`contrastive/losses/ring.py`, `ring_pass.py`).",
    "",
    "## Transfers and tile compute, from the scheduled HLO",
    "",
    "Per compiled program: collective-permutes, how many are asynchronous "
    "(`-start`/`-done`), and how many have tile compute (a dot, or a fusion or loop that "
    "computes or reads a similarity tile) scheduled between start and done; per-chip "
    "temporaries (`memory_analysis().temp_size_in_bytes`) and the compile time here.",
    "",
  ]
  md.append(
    _table(
      results["overlap"],
      [
        ("topology", lambda r: r["topology"]),
        ("device order", lambda r: r["order"]),
        ("B", lambda r: f"{r['batch']:,}"),
        ("d", lambda r: str(r["dim"])),
        ("block", lambda r: str(r["block_size"] or "auto")),
        ("loss", lambda r: r["loss"]),
        ("pass", lambda r: r["pass_"]),
        ("ring", lambda r: r["ring"]),
        ("transfers", lambda r: str(r["transfers"])),
        ("async", lambda r: str(r["asynchronous"])),
        ("overlap tile compute", lambda r: str(r["overlapped"])),
        ("temp MiB/chip", lambda r: f"{r['temp_mib']:.2f}"),
        ("compile s", lambda r: f"{r['compile_s']:.1f}"),
      ],
    )
  )
  md += [
    "",
    "## Temporaries on 8 simulated CPU devices",
    "",
    "XLA:CPU runs transfers synchronously; the new ring keeps three collecting "
    "accumulators (this hop's, the one leaving, the one arriving) and two visiting blocks "
    "where the old one kept one of each.",
    "",
  ]
  md.append(
    _table(
      results["cpu"],
      [
        ("B", lambda r: f"{r['batch']:,}"),
        ("d", lambda r: str(r["dim"])),
        ("block", lambda r: str(r["block_size"] or "auto")),
        ("loss", lambda r: r["loss"]),
        ("pass", lambda r: r["pass_"]),
        ("ring", lambda r: r["ring"]),
        ("temp MiB/device", lambda r: f"{r['temp_mib']:.2f}"),
      ],
    )
  )
  md += ["", "## LIBTPU_INIT_ARGS (the before ring, softmax, v5e:2x2, B=16,384, block 1024)", ""]
  md.append(
    _table(
      results["flags"],
      [
        ("flag", lambda r: f"`{r['flag']}`"),
        ("pass", lambda r: r.get("pass_", "")),
        ("transfers", lambda r: str(r.get("transfers", ""))),
        ("async", lambda r: str(r.get("asynchronous", ""))),
        ("overlap tile compute", lambda r: str(r.get("overlapped", r.get("error", "")))),
      ],
    )
  )
  md += [
    "",
    "## Precision of the similarity product",
    "",
    "In the TPU's HLO (softmax, v5e:2x2, B=4,096, d=256), by `precision=`:",
    "",
  ]
  md.append(
    _table(
      [dict(p=k, **v) for k, v in results["precision_hlo"].items()],
      [
        ("precision", lambda r: r["p"]),
        ("converts to bf16", lambda r: str(r["bf16_converts"])),
        ("similarity products", lambda r: ", ".join(r["dot_results"])),
        ("operand_precision", lambda r: ", ".join(r["operand_precision"]) or "(default)"),
      ],
    )
  )
  md += [
    "",
    "Emulated on the CPU (`contrastive.losses.emulation.bf16_matmul`: operands rounded "
    "to bfloat16, float32 sums, in the forward product and both gradient products) against "
    "float64, dense, for unit embeddings (`embeddings()` in the script: rank-16 shared part, "
    "positive cosine about 0.5); sigmoid with bias -10. Gradient error: the larger of x's "
    "and y's, relative in the Frobenius norm.",
    "",
  ]
  md.append(
    _table(
      results["precision"],
      [
        ("loss", lambda r: r["loss"]),
        ("B", lambda r: str(r["batch"])),
        ("d", lambda r: str(r["dim"])),
        ("scale", lambda r: f"{r['scale']:g}"),
        ("loss (f64)", lambda r: f"{r['value']:.4g}"),
        ("bf16: loss abs err", lambda r: f"{r['bf16_loss_abs']:.1e}"),
        ("bf16: loss rel err", lambda r: f"{r['bf16_loss_rel']:.1e}"),
        ("bf16: grad rel err", lambda r: f"{r['bf16_grad_rel']:.1e}"),
        ("f32: loss rel err", lambda r: f"{r['f32_loss_rel']:.1e}"),
        ("f32: grad rel err", lambda r: f"{r['f32_grad_rel']:.1e}"),
      ],
    )
  )
  (RESULTS / "ring_tpu.md").write_text("\n".join(md) + "\n")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--no-pod", action="store_true", help="skip the v5e:16x16 compiles")
  args = parser.parse_args()
  start = time.perf_counter()
  rings = {"before": _ring_before(), "after": ring}
  rings = {k: v for k, v in rings.items() if v is not None}
  cases = [c for c in CASES if not (args.no_pod and c[0] == "v5e:16x16")]
  results = dict(
    overlap=overlap_rows(rings, cases),
    cpu=cpu_rows(rings),
    flags=flag_rows(),
    precision_hlo=precision_hlo(),
    precision=precision_rows(),
  )
  write(results, time.perf_counter() - start)


if __name__ == "__main__":
  main()
