"""Where does zero-shot shape fail? Diagnoses trained runs on single objects of the built-in data.

For each workdir (a run on the built-in dataset), on 3,000 images of the `shape` view:
  ensemble: zero-shot accuracy with the view's prompt ensemble averaged into one prototype per
    class (`ensemble="mean"`, the CLIP protocol).
  marginal: the same prompts scored with the model's softmax and summed per class
    (`ensemble="marginal"`, what the demo reports).
  marginal_heldout: the same, on the images (about one in eight) whose (colour, shape) pair
    training never showed.
  max_prompt: each class scored by its best-matching prompt instead of the mean.
  conditional: the caption with the image's own colour, size and position, over the 8 shapes
    (how well the model names the shape when the rest of the caption is given).
  probe_embedding, probe_features: `evaluate`'s linear probe (logistic regression, L2 chosen on a
    validation split; 2,000 train, 1,000 test images) on the image embeddings and on the image
    tower's pooled features: how much shape the image side
    holds at all, whatever the text side does with it.

    python experiments/shape_diagnosis.py runs/demo runs/other --name shape_diagnosis

Writes experiments/results/NAME.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import ml_collections
import numpy as np

from contrastive import models
from contrastive.data import shapes
from contrastive.evaluate import configured as evaluation
from contrastive.evaluate import probes
from contrastive.evaluate import zeroshot
from contrastive.run import workdir as workdir_lib

RESULTS = pathlib.Path(__file__).parent / "results"
NUM_IMAGES, NUM_TRAIN = 3000, 2000


def _probe(x: np.ndarray, labels: np.ndarray) -> float:
  """Test accuracy of `evaluate`'s linear probe (first NUM_TRAIN rows train, the rest test)."""
  return probes.linear_probe(
    x[:NUM_TRAIN],
    labels[:NUM_TRAIN],
    x[NUM_TRAIN:],
    labels[NUM_TRAIN:],
    num_classes=len(shapes.SHAPES),
  )["accuracy"]


def diagnose(workdir: str) -> dict[str, float]:
  config = json.loads((pathlib.Path(workdir) / "config.json").read_text())
  config = ml_collections.ConfigDict(config)
  model = models.make_model(config.model)
  params, step = workdir_lib.restore_params(workdir)
  prepare = evaluation.make_prepare(config.data)

  def embed(batch):
    return model.apply({"params": params}, prepare(batch), train=False)

  source = shapes.ShapesSource(
    split="shape", num_examples=NUM_IMAGES, seed=1, image_size=config.data.image_size
  )
  records = [source[i] for i in range(NUM_IMAGES)]
  labels = np.array([r["label"] for r in records])
  heldout = np.array([r["heldout"] for r in records])
  images, features = [], []
  for start in range(0, NUM_IMAGES, 500):
    emb, extras = embed({"image": [r["image"] for r in records[start : start + 500]]})
    images.append(np.asarray(emb["image"]))
    features.append(np.asarray(extras["image/features"]))
  images = np.concatenate(images)

  view = shapes.labelled_views()["shape"]
  prompts = np.asarray(embed({"text": sum(view.prompts(), [])})[0]["text"])
  prompts = prompts.reshape(len(view.class_names), len(view.templates), -1)
  ensemble = np.argmax(images @ zeroshot.class_prototypes(prompts).T, -1)
  scale = evaluation.logit_scale(model, params)
  marginal = np.argmax(zeroshot.marginal_log_probs(images, prompts, scale=scale), -1)
  max_prompt = np.argmax(np.einsum("nd,ctd->nct", images, prompts).max(-1), -1)

  n = 1000  # the conditional captions: 8 per image
  captions = []
  for i in range(n):
    scene, _ = source.scene_at(i)
    (_, colour, size), layout = scene.objects[0], scene.layout
    captions += [
      shapes.caption(shapes.Scene(((s, colour, size),), layout)) for s in range(len(shapes.SHAPES))
    ]
  texts = np.concatenate(
    [
      np.asarray(embed({"text": captions[k : k + 800]})[0]["text"])
      for k in range(0, len(captions), 800)
    ]
  ).reshape(n, 8, -1)
  conditional = np.argmax(np.einsum("nd,nkd->nk", images[:n], texts), -1)
  return {
    "step": step,
    "ensemble": float(np.mean(ensemble == labels)),
    "marginal": float(np.mean(marginal == labels)),
    "marginal_heldout": float(np.mean((marginal == labels)[heldout])),
    "max_prompt": float(np.mean(max_prompt == labels)),
    "conditional": float(np.mean(conditional == labels[:n])),
    "probe_embedding": _probe(images, labels),
    "probe_features": _probe(np.concatenate(features), labels),
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("workdirs", nargs="+")
  parser.add_argument("--name", default="shape_diagnosis")
  args = parser.parse_args()
  rows = {w: diagnose(w) for w in args.workdirs}
  keys = (
    "step",
    "ensemble",
    "marginal",
    "marginal_heldout",
    "max_prompt",
    "conditional",
    "probe_embedding",
    "probe_features",
  )
  lines = ["| run | " + " | ".join(keys) + " |", "| --- |" + " ---: |" * len(keys)]
  for workdir, row in rows.items():
    lines.append(
      f"| `{workdir}` | "
      + " | ".join(str(row[k]) if k == "step" else f"{row[k]:.3f}" for k in keys)
      + " |"
    )
  table = "\n".join(lines)
  print(table)
  RESULTS.mkdir(exist_ok=True)
  (RESULTS / f"{args.name}.json").write_text(json.dumps(rows, indent=1))
  (RESULTS / f"{args.name}.md").write_text(
    f"# Zero-shot shape, diagnosed\n\n`python experiments/shape_diagnosis.py "
    f"{' '.join(args.workdirs)}` (see the script's docstring for the columns).\n\n{table}\n"
  )


if __name__ == "__main__":
  main()
