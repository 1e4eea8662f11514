"""How fast can an image tower learn shape at 32 pixels? A supervised probe of the demo's towers.

Each tower gets a linear 8-way head and is trained on single objects of the built-in dataset
(`shape` split), then tested on held-out images. It measures how learnable shape is for an
architecture, with the full label signal that a contrastive loss only gives indirectly.

    python experiments/shape_probe.py                        # every tower, 400 steps x 128
    python experiments/shape_probe.py --towers vit_conv_stem --steps 200

Writes experiments/results/shape_probe.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import time

import flax.linen as nn
import jax
import numpy as np
import optax

from contrastive import models
from contrastive.data import shapes
from contrastive.data import transforms

RESULTS = pathlib.Path(__file__).parent / "results"
_VIT = dict(width=128, depth=3, mlp_dim=256, num_heads=4, image_size=32, pool="cls")
TOWERS = {
  "vit_patch8": dict(patch_size=8, **_VIT),
  "vit_patch4": dict(patch_size=4, **_VIT),
  "vit_conv_stem": dict(patch_size=8, stem="conv", **_VIT),  # the demo's
}


class Probe(nn.Module):
  tower: dict

  @nn.compact
  def __call__(self, images):
    pooled, _ = models.ViT(**self.tower)(images, train=False)
    return nn.Dense(len(shapes.SHAPES))(pooled)


def _examples(seed: int, num: int, size: int) -> tuple[np.ndarray, np.ndarray]:
  source = shapes.ShapesSource(split="shape", num_examples=num, image_size=size, seed=seed)
  records = [source[i] for i in range(num)]
  images = np.stack([transforms.normalize(r["image"], "inception") for r in records])
  return images.astype(np.float32), np.array([r["label"] for r in records])


def probe(tower: dict, train, test, *, steps: int, batch_size: int, every: int) -> dict:
  model = Probe(tower)
  params = model.init(jax.random.key(0), train[0][:1])
  schedule = optax.warmup_cosine_decay_schedule(0.0, 2e-3, steps // 12, steps)
  tx = optax.adamw(schedule, weight_decay=0.05)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, images, labels):
    loss_fn = lambda p: optax.softmax_cross_entropy_with_integer_labels(
      model.apply(p, images), labels
    ).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  predict = jax.jit(model.apply)
  curve, start = [], time.perf_counter()
  for i in range(steps):
    rows = slice(i * batch_size, (i + 1) * batch_size)
    params, opt_state, _ = step(params, opt_state, train[0][rows], train[1][rows])
    if (i + 1) % every == 0 or i + 1 == steps:
      accuracy = float((np.argmax(predict(params, test[0]), -1) == test[1]).mean())
      curve.append((i + 1, accuracy))
      print(f"  step {i + 1}: test accuracy {accuracy:.3f}", flush=True)
  return dict(
    curve=curve,
    wall_s=time.perf_counter() - start,
    params=sum(x.size for x in jax.tree.leaves(params)),
  )


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--towers", default=",".join(TOWERS))
  parser.add_argument("--steps", type=int, default=400)
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--test_size", type=int, default=1000)
  parser.add_argument("--every", type=int, default=100)
  args = parser.parse_args()
  train = _examples(5, args.steps * args.batch_size, 32)
  test = _examples(6, args.test_size, 32)
  results = {}
  for name in args.towers.split(","):
    print(name, flush=True)
    results[name] = probe(
      TOWERS[name], train, test, steps=args.steps, batch_size=args.batch_size, every=args.every
    )
  lines = [
    f"# Supervised shape probe: 8-way shape of single objects at 32 px ({args.steps} "
    f"steps x {args.batch_size}, {args.test_size} test images)",
    "",
    f"Load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.",
    "",
    "| tower | parameters | test accuracy by step | wall s |",
    "|---|---:|---|---:|",
  ]
  for name, r in results.items():
    curve = ", ".join(f"{s}: {a:.3f}" for s, a in r["curve"])
    lines.append(f"| {name} | {r['params']:,} | {curve} | {r['wall_s']:.0f} |")
  RESULTS.mkdir(parents=True, exist_ok=True)
  (RESULTS / "shape_probe.json").write_text(json.dumps(results, indent=1))
  (RESULTS / "shape_probe.md").write_text("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
