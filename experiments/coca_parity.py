"""open_clip's CoCa loaded here: embeddings, caption logits and parameter counts against open_clip.

1. The committed fixtures (`tests/models/pretrained/fixtures/open_clip_coca*`, tiny random
   `open_clip.CoCa` models made by open_clip itself with `_fixtures_coca.py`): the largest
   absolute difference of the unit image and text embeddings and of the caption logits
   (`model(image, text)["logits"]`) against open_clip's, float32 on the CPU; the parameter
   count here (`jax.eval_shape` of `init`) against open_clip's. No torch needed.
2. The parameter counts of `coca_ViT-B-32` and `coca_ViT-L-14` here (`name=` configs, traced
   with `jax.eval_shape`) against open_clip's (`fixtures/open_clip_param_counts.json`, built by
   open_clip on the meta device).
3. With `--peer_python` (an interpreter with torch and open_clip, e.g. the peers' venv of
   docs/pretrained.md): `coca_ViT-B-32` (and with `--full_size`, `coca_ViT-L-14`) at full
   size, every tensor drawn at random by torch, saved in open_clip's hub layout by open_clip's
   side, two 224 px images and two captions through open_clip's tokenizer; the same
   differences, and the load time here.

    python experiments/coca_parity.py                                   # 1 and 2 (~1 min)
    python experiments/coca_parity.py --peer_python /tmp/peers/bin/python   # and 3 (~3 min)
    python experiments/coca_parity.py --peer_python /tmp/peers/bin/python \
        --full_size coca_ViT-B-32 coca_ViT-L-14                      # both at full size

Writes experiments/results/coca_parity.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import tempfile
import time

import jax
import numpy as np

from contrastive import models
from contrastive.models.pretrained import open_clip as oc

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "models" / "pretrained" / "fixtures"
RESULTS = ROOT / "experiments" / "results"
KEYS = ("image_emb", "text_emb", "caption_logits")

_PEER = r"""
import json, os, sys
import numpy as np
sys.path.insert(0, {root!r})
from tests import peers
open_clip = peers.import_open_clip()
import torch
from tests.models.pretrained import _fixtures_coca as fx
from tests.models.pretrained import _fixtures_open_clip as fx_clip
torch.set_num_threads(2)
name = {name!r}
model = open_clip.create_model(name, pretrained=None)
fx_clip.randomize(model, 0)
fx_clip.save_hub_layout(model, open_clip.get_model_config(name), fx.PREPROCESS, {out!r}, bin_=False)
images = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
tokens = open_clip.get_tokenizer(name)(["a red square above a blue circle", "two dogs"]).numpy()
out = fx.outputs(model, images, tokens)
np.savez(os.path.join({out!r}, "expected.npz"), images=images.transpose(0, 2, 3, 1),
         tokens=tokens.astype(np.int32), **out)
print(json.dumps(dict(torch=torch.__version__, open_clip=open_clip.__version__)))
"""


def differences(pre, expected) -> dict[str, float]:
  """Largest absolute differences of this library's outputs from open_clip's `expected`."""
  model = models.make_model(pre.model_config)
  emb, extras = jax.jit(lambda p, b: model.apply({"params": p}, b, train=False))(
    pre.params, {"image": expected["images"], "text": expected["tokens"]}
  )
  ours = dict(image_emb=emb["image"], text_emb=emb["text"], caption_logits=extras["caption_logits"])
  out = {k: float(np.abs(np.asarray(ours[k]) - expected[k]).max()) for k in KEYS}
  out["scale_equal"] = bool(np.float32(extras["scale"]) == expected["scale"])
  return out


def count(config) -> int:
  """Parameters of a model config, traced with `jax.eval_shape` (no weights)."""
  model = models.make_model(config)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), model.dummy_batch(1), train=False))
  return models.count_params(shapes["params"])


def fixtures() -> list[dict]:
  rows = []
  for name in ("open_clip_coca", "open_clip_coca_fused"):
    pre = models.load_pretrained(FIXTURES / name)
    expected = np.load(FIXTURES / name / "expected.npz")
    rows.append(
      dict(
        model=name,
        **differences(pre, expected),
        params=count(pre.model_config),
        open_clip_params=int(expected["params"]),
      )
    )
  return rows


def named_counts() -> list[dict]:
  with open(FIXTURES / "open_clip_param_counts.json") as f:
    peer = json.load(f)
  rows = []
  for name in oc.coca.NAMES:
    config = oc.model_config_from_open_clip(oc.named_config(name))
    config.scan = True  # the same parameters, traced faster
    rows.append(dict(model=name, params=count(config), open_clip_params=peer[name]["params"]))
  return rows


def full_size(peer_python: str, name: str = "coca_ViT-B-32") -> dict:
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, name)
    script = _PEER.format(root=str(ROOT), name=name, out=out)
    done = subprocess.run(
      [peer_python, "-c", script], check=True, capture_output=True, text=True, cwd=ROOT
    )
    versions = json.loads(done.stdout.strip().splitlines()[-1])
    start = time.perf_counter()
    pre = models.load_pretrained(out)
    seconds = time.perf_counter() - start
    expected = np.load(os.path.join(out, "expected.npz"))
    return dict(
      model=f"{name}, full size",
      **differences(pre, expected),
      params=models.count_params(pre.params),
      open_clip_params=int(expected["params"]),
      load_seconds=round(seconds, 1),
      **versions,
    )


def markdown(result: dict) -> str:
  lines = [
    "# open_clip CoCa parity (`experiments/coca_parity.py`)",
    "",
    "Max abs difference against open_clip, float32 on the CPU (unit embeddings; caption logits",
    '`model(image, text)["logits"]`), and parameter counts here (`jax.eval_shape`) and there.',
    "",
    "| model | image | text | caption logits | scale | params | open_clip's |",
    "| ----- | ----- | ---- | -------------- | ----- | ------ | ----------- |",
  ]
  for row in result["fixtures"] + result.get("full_size", []):
    lines.append(
      f"| `{row['model']}` | {row['image_emb']:.1e} | {row['text_emb']:.1e} | "
      f"{row['caption_logits']:.1e} | {'equal' if row['scale_equal'] else 'differs'} | "
      f"{row['params']:,} | {row['open_clip_params']:,} |"
    )
  for row in result["named"]:
    lines.append(
      f"| `{row['model']}` (counts only) | | | | | {row['params']:,} | "
      f"{row['open_clip_params']:,} |"
    )
  return "\n".join(lines) + "\n"


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--peer_python", default=None, help="a python with torch and open_clip")
  parser.add_argument(
    "--full_size",
    nargs="+",
    default=["coca_ViT-B-32"],
    choices=oc.coca.NAMES,
    help="the open_clip names to check at full size (with --peer_python)",
  )
  args = parser.parse_args(argv)
  result = dict(fixtures=fixtures(), named=named_counts())
  if args.peer_python:
    result["full_size"] = [full_size(args.peer_python, name) for name in args.full_size]
  RESULTS.mkdir(parents=True, exist_ok=True)
  (RESULTS / "coca_parity.json").write_text(json.dumps(result, indent=1) + "\n")
  table = markdown(result)
  (RESULTS / "coca_parity.md").write_text(table)
  print(table)


if __name__ == "__main__":
  main()
