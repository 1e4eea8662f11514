r"""The `quick` suite's wall time on a tiny imported model, and each dataset's overhead beyond
embedding, on tfds's mock data (each dataset's own feature spec; no download).

    python experiments/zeroshot_suite_benchmark.py [--examples 256] [--batch_size 64]

Writes experiments/results/zeroshot_suite.{md,json}. Two measurements:

1. End to end: `suite.run_pretrained(ckpt, "quick")`, as `python -m contrastive.evaluate
   --pretrained CKPT --suite quick` runs it: load the checkpoint, compile, read, embed, score,
   write the table.
2. Per dataset, on the same model and one shared `Context` (warm: compiled first), the time split
   into reading the records (here tfds's mock generator and a PNG encoding per image, standing in
   for ArrayRecord reads), preparing images and prompts (decode, resize, tokenize: `prepare`), the
   model (the jitted towers, waited for), and the rest (opening the source, building the task,
   batching, scoring, metrics): the overhead beyond embedding.

The model is `tests/pretrained_testing.py`'s tiny CLIP (one-layer ViT at 32 px, one-layer text
tower, OpenAI's BPE at 16 tokens), saved in the Hugging Face layout and loaded back; its numbers
measure the suite's machinery, not a real model's embedding cost.
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--examples", type=int, default=256, help="mock records per dataset")
  parser.add_argument("--batch_size", type=int, default=64)
  args = parser.parse_args()

  import jax
  import numpy as np

  from contrastive import models
  from contrastive import parallel
  from contrastive.evaluate import context as context_lib
  from contrastive.evaluate import pretrained
  from contrastive.evaluate import runner
  from contrastive.evaluate import suite
  from contrastive.evaluate import suite_datasets
  from tests import pretrained_testing as pt
  from tests.evaluate import test_suite_mock as mock

  tmp = tempfile.mkdtemp()
  ckpt = os.path.join(tmp, "tiny_hf")
  pt.save_tiny(ckpt, family="hf", seed=0)
  names = suite_datasets.SUITES["quick"]

  # 1. End to end, cold (a fresh process compiles once for images and once for texts).
  with mock.mock_tfds(args.examples):
    start = time.perf_counter()
    rows = suite.run_pretrained(
      ckpt,
      "quick",
      batch_size=args.batch_size,
      output_dir=os.path.join(tmp, "table"),
      require_prepared=False,
    )
    end_to_end = time.perf_counter() - start

  # 2. Per dataset, warm, with the time in prepare and in the model counted apart.
  pre = models.load_pretrained(ckpt)
  mesh = parallel.make_mesh()
  model = models.make_model(pre.model_config)
  params = pretrained._place(model, pre.params, mesh)
  apply = jax.jit(lambda p, b: model.apply({"params": p}, b, train=False)[0])
  clock = {"read": 0.0, "prepare": 0.0, "model": 0.0}
  base_prepare = pretrained.make_prepare(pre.data)
  base_getitem = mock._MockSource.__getitem__

  def getitem(self, i):  # reading a record: here tfds's mock generator and a PNG encoding
    t = time.perf_counter()
    out = base_getitem(self, i)
    clock["read"] += time.perf_counter() - t
    return out

  mock._MockSource.__getitem__ = getitem

  def prepare(raw):
    t = time.perf_counter()
    out = base_prepare(raw)
    clock["prepare"] += time.perf_counter() - t
    return out

  def embed_fn(batch):
    t = time.perf_counter()
    out = jax.block_until_ready(apply(params, batch))
    clock["model"] += time.perf_counter() - t
    return out

  per_dataset = []
  with mock.mock_tfds(args.examples), parallel.use_rules(mesh):
    tasks, _ = suite.suite_tasks("quick", require_prepared=False)
    ctx = context_lib.Context(
      embed_fn=embed_fn, prepare=prepare, batch_size=args.batch_size, mesh=mesh
    )
    runner.run_tasks(embed_fn, {"warmup": tasks[names[0]]}, prepare=prepare,
                     batch_size=args.batch_size, context=context_lib.Context(
                       embed_fn=embed_fn, prepare=prepare, batch_size=args.batch_size,
                       mesh=mesh))  # fmt: skip
    for name in names:
      clock.update(read=0.0, prepare=0.0, model=0.0)
      t = time.perf_counter()
      runner.run_tasks(
        embed_fn, {name: tasks[name]}, prepare=prepare, batch_size=args.batch_size, context=ctx
      )
      total = time.perf_counter() - t
      task = tasks[name]
      per_dataset.append(
        dict(
          dataset=name,
          images=args.examples,
          prompts=len(task["class_names"]) * len(task["templates"]),
          total_s=total,
          read_s=clock["read"],
          prepare_s=clock["prepare"],
          model_s=clock["model"],
          overhead_s=total - clock["read"] - clock["prepare"] - clock["model"],
        )
      )

  result = dict(
    suite="quick",
    datasets=list(names),
    examples_per_dataset=args.examples,
    batch_size=args.batch_size,
    end_to_end_s=end_to_end,
    rows_ran=sum(r["status"] == "ran" for r in rows),
    per_dataset=per_dataset,
    machine=dict(
      cpu_count=os.cpu_count(),
      devices=[str(d) for d in jax.devices()],
      python=platform.python_version(),
      jax=jax.__version__,
    ),
  )
  out_dir = os.path.join(ROOT, "experiments", "results")
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "zeroshot_suite.json"), "w") as f:
    json.dump(result, f, indent=2)
  with open(os.path.join(out_dir, "zeroshot_suite.md"), "w") as f:
    f.write(markdown(result, np))
  print(markdown(result, np))


def markdown(r, np) -> str:
  lines = [
    "# The `quick` zero-shot suite: wall time and overhead beyond embedding",
    "",
    "Written by `python experiments/zeroshot_suite_benchmark.py "
    f"--examples {r['examples_per_dataset']} --batch_size {r['batch_size']}` on "
    f"{r['machine']['cpu_count']} CPU cores (JAX devices: {len(r['machine']['devices'])}), "
    "tfds's mock data with each dataset's own feature spec, and a tiny random CLIP "
    "(`tests/pretrained_testing.py`: one-layer ViT at 32 px, one-layer text tower) imported from "
    "the Hugging Face layout. The machine is shared with other jobs: times are indicative.",
    "",
    "No table of a real model: this machine has no network, no Hugging Face cache and no "
    "prepared tfds dataset, and none of the suite's datasets can be prepared without a "
    "download; `python -m contrastive.evaluate --pretrained hf-hub:ORG/NAME --suite clip "
    "--suite_data_dir DIR` makes it where they are.",
    "",
    f"- End to end (`suite.run_pretrained(ckpt, 'quick')`: load, compile, read, embed, score, "
    f"write the table), {len(r['datasets'])} datasets x {r['examples_per_dataset']} images: "
    f"**{r['end_to_end_s']:.1f} s** ({r['rows_ran']} rows ran).",
    "",
    "Per dataset, warm (compiled), one shared context: `read` is reading the records (here "
    "tfds's mock generator plus a PNG encoding per image, standing in for ArrayRecord reads); "
    "`prepare` decoding, resizing and tokenizing; `model` the jitted towers; overhead is the "
    "rest (opening the source, the task, batching, scoring, metrics).",
    "",
    "| dataset | images | prompts | total (s) | read (s) | prepare (s) | model (s) "
    "| overhead (s) |",
    "|---|---|---|---|---|---|---|---|",
  ]
  for d in r["per_dataset"]:
    lines.append(
      f"| {d['dataset']} | {d['images']} | {d['prompts']} | {d['total_s']:.2f} | "
      f"{d['read_s']:.2f} | {d['prepare_s']:.2f} | {d['model_s']:.2f} | {d['overhead_s']:.2f} |"
    )
  over = np.mean([d["overhead_s"] for d in r["per_dataset"]])
  lines += [
    "",
    f"Mean overhead beyond embedding: {over:.2f} s per dataset. `prompts` counts the dataset's "
    "class names times templates; a prompt an earlier dataset already embedded (STL-10's "
    "\"a photo of a cat.\" is also CIFAR-10's) comes from the context's cache.",
    "",
  ]
  return "\n".join(lines)


if __name__ == "__main__":
  main()
