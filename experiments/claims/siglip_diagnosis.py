"""Why the sigmoid loss sometimes stays at chance on the loss-zoo recipe's short runs.

Trains configs/loss_zoo.py with `loss=sigmoid` at the batch study's settings (batch 128, 150
steps, warmup a twentieth of the steps, AdamW at 3e-3; experiments/claims/batch.py) with the
library's own train state and jitted step, and before each update records, on that step's
batch: the loss, the scale t and bias b, the mean positive and negative logits
(`t x_i.y_i + b` and `t x_i.y_j + b`, i != j), the mean positive and negative cosines, the
mean cosine between two different images (and two different captions: how far each tower's
embeddings have collapsed to one direction), and the gradient norms of the image tower, the
text tower, `log_scale` and `bias` (before clipping), plus the clip factor the global norm
clip applies. A variant (`--variants`) changes one setting of the recipe, so the same seeds
show which setting decides whether a run learns: `bias_init=-10` is SigLIP's initialization
(what configs/loss_zoo.py used before the fix), `recipe` the config as it is (since the fix, the
bias starts at `-log(B - 1)`, -4.84 at batch 128).

    python experiments/claims/siglip_diagnosis.py --seeds 0,1      # SigLIP's -10, and the fix
    python experiments/claims/siglip_diagnosis.py --seeds 0 --variants "optim.b2=0.95"

Writes experiments/results/claims/siglip_diagnosis.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import _study
import numpy as np

SHOWN_STEPS = (0, 1, 2, 5, 10, 20, 40, 80, 149)
# Zero-shot colour top-1 below this is counted as a collapse (chance is 1/8; the runs that learn
# reach 0.75 or more in 150 steps).
COLLAPSED_BELOW = 0.3


def parse_variant(text: str) -> dict:
  """`recipe` -> {}; `a=1;b=x` -> {"a": 1.0, "b": "x"} (dotted config keys allowed)."""
  if text == "recipe":
    return {}
  out = {}
  for part in text.split(";"):
    key, value = part.split("=", 1)
    try:
      out[key] = float(value)
    except ValueError:
      out[key] = {"None": None, "True": True, "False": False}.get(value, value)
  return out


KEYS = {"bias_init": "model.bias_init", "scale_init": "model.scale_init"}


def make_config(seed, batch, steps, lr, variant):
  overrides = {"optim.warmup_steps": max(1, steps // 20), "optim.lr": lr}
  overrides.update({KEYS.get(k, k): v for k, v in variant.items()})
  return _study.zoo_config(
    "sigmoid",
    steps=steps,
    batch_size=batch,
    seed=seed,
    tasks=("zeroshot_shape", "zeroshot_colour"),
    eval_examples=500,
    overrides=overrides,
  )


def trace(config, steps: int) -> tuple[list[dict], dict]:
  """Per-step diagnostics of one run (see the module docstring), trained by the library's step,
  and the zero-shot top-1 (shape, colour) on held-out data at the end."""
  import jax
  import jax.numpy as jnp

  from contrastive import data
  from contrastive import losses
  from contrastive import models
  from contrastive import parallel
  from contrastive.evaluate import configured as evaluation
  from contrastive.run import config as run_config
  from contrastive.train import assemble
  from contrastive.train import config as config_lib
  from contrastive.train import optimizer as optimizer_lib
  from contrastive.train import step as step_lib

  config = run_config.resolve(config)
  objective = losses.get(config.loss.name)
  model = models.make_model(config.model)
  mesh = parallel.make_mesh(**config.mesh)
  step_config = config_lib.check_run(config, model=model, objective=objective, mesh=mesh)
  train_iter = data.make_pipeline(
    config.data, training=True, mesh=mesh, batch_axes=parallel.batch_axes(mesh)
  )
  state, shardings, tx = assemble.create_train_state(config, model, mesh)
  train_step = assemble.make_train_step(config, model, objective, tx, mesh, shardings, step_config)
  grad_fn = step_lib.make_grad_fn(model, objective, mesh, step_config, shardings.params)
  keys = assemble.batch_keys(step_config)
  clip = config.optim.grad_clip_norm
  base_key = jax.random.key(config.seed)

  @jax.jit
  def probe(params, batch, step):
    (loss, aux), grads = grad_fn(params, batch, jax.random.fold_in(base_key, step))
    scale, bias = aux[:2]  # (scale, bias), and each term's value where the step has terms
    emb, _ = model.apply({"params": params}, {m: batch[m] for m in ("image", "text")}, train=False)
    x, y = emb["image"], emb["text"]
    cos = x @ y.T
    n = cos.shape[0]
    off = 1.0 - jnp.eye(n)
    logits = scale * cos + bias
    mean_off = lambda m: jnp.sum(m * off) / (n * (n - 1))
    norm = optimizer_lib.global_norm
    total = norm(grads)
    return dict(
      loss=loss,
      scale=scale,
      bias=bias,
      pos_logit=jnp.mean(jnp.diag(logits)),
      neg_logit=mean_off(logits),
      max_neg_logit=jnp.max(logits - 1e9 * jnp.eye(n)),
      pos_cos=jnp.mean(jnp.diag(cos)),
      neg_cos=mean_off(cos),
      image_image_cos=mean_off(x @ x.T),
      text_text_cos=mean_off(y @ y.T),
      grad_image=norm(grads["image"]),
      grad_text=norm(grads["text"]),
      grad_log_scale=jnp.abs(grads["log_scale"]),
      grad_bias=jnp.abs(grads["bias"]),
      grad_total=total,
      clip_factor=jnp.minimum(1.0, clip / total) if clip else jnp.float32(1.0),
    )

  rows = []
  try:
    for step in range(steps):
      batch = data.to_global(
        {k: b for k, b in next(train_iter).items() if k in keys}, parallel.batch_sharding(mesh)
      )
      with parallel.use_rules(mesh):
        row = probe(state.params, batch, step)
      rows.append({"step": step, **{k: float(v) for k, v in jax.device_get(row).items()}})
      state, _ = train_step(state, batch)
  finally:
    if hasattr(train_iter, "close"):
      train_iter.close()
  final = evaluation.run(model, state.params, config, mesh=mesh, workdir=None, step=None)
  return rows, {k: float(v) for k, v in final.items() if k.endswith("/top1")}


def summary_row(rows: list[dict], final: dict) -> dict:
  """Where a run's scalars and logits are at the end, its last losses and its zero-shot."""
  last = rows[-10:]
  return dict(
    zeroshot_shape=final["zeroshot_shape/top1"],
    zeroshot_colour=final["zeroshot_colour/top1"],
    final_loss=float(np.mean([r["loss"] for r in last])),
    final_scale=rows[-1]["scale"],
    final_bias=rows[-1]["bias"],
    final_pos_cos=rows[-1]["pos_cos"],
    final_neg_cos=rows[-1]["neg_cos"],
    final_image_image_cos=rows[-1]["image_image_cos"],
    collapsed=final["zeroshot_colour/top1"] < COLLAPSED_BELOW,
  )


COLUMNS = [
  ("step", "step", "{:.0f}"),
  ("loss", "loss", "{:.3f}"),
  ("scale", "t", "{:.2f}"),
  ("bias", "b", "{:.2f}"),
  ("pos_logit", "pos logit", "{:.2f}"),
  ("neg_logit", "neg logit", "{:.2f}"),
  ("pos_cos", "pos cos", "{:.3f}"),
  ("neg_cos", "neg cos", "{:.3f}"),
  ("image_image_cos", "img-img cos", "{:.3f}"),
  ("text_text_cos", "txt-txt cos", "{:.3f}"),
  ("grad_image", "|g| image", "{:.3g}"),
  ("grad_text", "|g| text", "{:.3g}"),
  ("grad_log_scale", "|g| log t", "{:.3g}"),
  ("grad_bias", "|g| b", "{:.3g}"),
  ("clip_factor", "clip", "{:.3f}"),
]


def write_markdown(path: pathlib.Path, report: dict) -> None:
  a = report["args"]
  lines = [
    "# SigLIP on the loss-zoo recipe's short runs: diagnostics of the first steps",
    "",
    f"Setup: configs/loss_zoo.py `loss=sigmoid` at batch {a['batch']}, {a['steps']} steps, "
    f"AdamW at lr {a['lr']:g} with warmup {max(1, a['steps'] // 20)} steps (the batch study's "
    "settings, experiments/claims/batch.py), trained by the library's jitted step; every "
    "quantity is measured on the step's own batch before its update. Gradient norms are before "
    "clipping; `clip` is the factor the global-norm clip at 1.0 multiplies every gradient by. "
    f"Zero-shot: top-1 on 500 held-out images per view; `collapsed`: colour below "
    f"{COLLAPSED_BELOW:g} (chance 1/8).",
    "",
    f"Wall time {report['wall_s'] / 60:.1f} min. Command: `{report['command']}`",
    "",
    "## Summary per variant and seed",
    "",
    "| variant | seed | zero-shot colour | zero-shot shape | final loss (last 10 steps) | t | b "
    "| pos cos | neg cos | img-img cos | collapsed |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
  ]
  for run in report["runs"]:
    s = run["summary"]
    lines.append(
      f"| {run['variant']} | {run['seed']} | {s['zeroshot_colour']:.3f} | "
      f"{s['zeroshot_shape']:.3f} | {s['final_loss']:.3f} | {s['final_scale']:.2f} | "
      f"{s['final_bias']:.2f} | {s['final_pos_cos']:.3f} | {s['final_neg_cos']:.3f} | "
      f"{s['final_image_image_cos']:.3f} | {'**yes**' if s['collapsed'] else 'no'} |"
    )
  for run in report["runs"]:
    lines += [
      "",
      f"## {run['variant']}, seed {run['seed']}",
      "",
      "| " + " | ".join(name for _, name, _ in COLUMNS) + " |",
      "|" + "---:|" * len(COLUMNS),
    ]
    for r in run["rows"]:
      if r["step"] in SHOWN_STEPS or r["step"] == len(run["rows"]) - 1:
        lines.append("| " + " | ".join(f.format(r[k]) for k, _, f in COLUMNS) + " |")
  if report.get("notes"):
    lines += ["", "## Notes", "", report["notes"]]
  path.write_text("\n".join(lines) + "\n")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--seeds", default="0,1")
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--steps", type=int, default=150)
  parser.add_argument("--lr", type=float, default=3e-3)
  parser.add_argument(
    "--variants",
    default="bias_init=-10,recipe",
    help="comma-separated: `recipe`, or `key=value;key=value` (bias_init, scale_init, or a "
    "dotted config key such as optim.b2)",
  )
  parser.add_argument("--out", default=str(_study.RESULTS / "siglip_diagnosis"))
  parser.add_argument("--notes", default="")
  parser.add_argument("--from_json", default=None, help="rewrite the markdown from this json")
  parser.add_argument(
    "--append", action="store_true", help="add these runs to the json already at --out"
  )
  args = parser.parse_args()
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)

  def write(report):
    out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    write_markdown(out.with_suffix(".md"), report)

  if args.from_json:
    report = json.loads(pathlib.Path(args.from_json).read_text())
    report["notes"] = args.notes or report.get("notes", "")
    write(report)
    return
  report = dict(
    args=dict(batch=args.batch, steps=args.steps, lr=args.lr),
    runs=[],
    wall_s=0.0,
    command=_study.command(),
    notes=args.notes,
  )
  if args.append:
    report = json.loads(out.with_suffix(".json").read_text())
    report["command"] += f"; {_study.command()}"
    report["notes"] = args.notes or report.get("notes", "")
  for variant in args.variants.split(","):
    for seed in (int(s) for s in args.seeds.split(",")):
      start = time.time()
      config = make_config(seed, args.batch, args.steps, args.lr, parse_variant(variant))
      rows, final = trace(config, args.steps)
      s = summary_row(rows, final)
      print(f"[{variant} seed {seed}] " + json.dumps(s), flush=True)
      report["runs"].append(dict(variant=variant, seed=seed, summary=s, rows=rows))
      report["wall_s"] += time.time() - start
      write(report)
  print(f"Wrote {out}.{{md,json}}")


if __name__ == "__main__":
  main()
