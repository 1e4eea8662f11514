"""Writes fixtures/resize_torch.npz: torch.nn.functional.interpolate outputs for test_resize.py.

Run with a torch install outside the project's environment (see /work/shared/RECIPES.md):

    /tmp/torchF/bin/python tests/models/pretrained/make_resize_fixture.py

Each case `{name}/x` is a `[h, w, d]` grid (or `[L, d]` table) of float32 normals and
`{name}/y` torch's resampling of it, with the options open_clip (`bicubic`, antialias) and
transformers (`bicubic`, no antialias) use for the patch grid, and `linear` for text tables.
`open_clip_clip/visual` and `open_clip_clip/text` are the position tables of the committed
open_clip fixture resized as open_clip's `resize_pos_embed` and `resize_text_pos_embed` do
(class row kept, grid 4x4 -> 6x6; context 8 -> 12).
"""

import json
import math
import os
import struct

import numpy as np
import torch
import torch.nn.functional as F

CASES = {  # name: (method, in shape, out size)
  "bicubic_antialias_up": ("bicubic_antialias", (7, 5, 3), (12, 9)),
  "bicubic_antialias_down": ("bicubic_antialias", (14, 11, 3), (6, 4)),
  "bicubic_antialias_mixed": ("bicubic_antialias", (7, 16, 2), (24, 9)),
  "bicubic_up": ("bicubic", (7, 5, 3), (12, 9)),
  "bicubic_down": ("bicubic", (14, 11, 3), (6, 4)),
  "linear_up": ("linear", (16, 4), (77,)),
  "linear_down": ("linear", (77, 4), (32,)),
}


def _read_safetensors(path):
  with open(path, "rb") as f:
    (size,) = struct.unpack("<Q", f.read(8))
    header = json.loads(f.read(size))
    data = f.read()
  out = {}
  for key, info in header.items():
    if key == "__metadata__":
      continue
    assert info["dtype"] == "F32", info
    lo, hi = info["data_offsets"]
    out[key] = np.frombuffer(data[lo:hi], np.float32).reshape(info["shape"])
  return out


def _open_clip_resized(new_grid=(6, 6), new_len=12):
  """open_clip's resize_pos_embed / resize_text_pos_embed (open_clip/pos_embed.py), inlined."""
  here = os.path.dirname(__file__)
  weights = _read_safetensors(
    os.path.join(here, "fixtures", "open_clip_clip", "open_clip_model.safetensors")
  )
  old = torch.from_numpy(weights["visual.positional_embedding"].copy())
  tok, img = old[:1], old[1:]
  g = int(math.sqrt(len(img)))
  img = img.reshape(1, g, g, -1).permute(0, 3, 1, 2)
  img = F.interpolate(img, size=new_grid, mode="bicubic", antialias=True, align_corners=False)
  img = img.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], -1)[0]
  visual = torch.cat([tok, img], dim=0).numpy()
  text = torch.from_numpy(weights["positional_embedding"].copy())
  text = text.reshape(1, text.shape[0], -1).permute(0, 2, 1)
  text = F.interpolate(text, size=new_len, mode="linear", antialias=False, align_corners=False)
  text = text.permute(0, 2, 1)[0].numpy()
  return visual, text


def main():
  rng = np.random.default_rng(0)
  out = {}
  for name, (method, shape, size) in CASES.items():
    x = rng.standard_normal(shape).astype(np.float32)
    t = torch.from_numpy(x).permute(-1, *range(len(shape) - 1))[None]  # [1, d, ...]
    if method == "linear":
      y = F.interpolate(t, size=size, mode="linear", align_corners=False)
    else:
      y = F.interpolate(
        t, size=size, mode="bicubic", antialias=method == "bicubic_antialias", align_corners=False
      )
    y = y[0].permute(*range(1, len(shape)), 0).numpy()
    out[f"{name}/x"], out[f"{name}/y"] = x, y
  out["open_clip_clip/visual"], out["open_clip_clip/text"] = _open_clip_resized()
  path = os.path.join(os.path.dirname(__file__), "fixtures", "resize_torch.npz")
  np.savez(path, torch_version=np.array(torch.__version__), **out)
  print(f"Wrote {path} ({len(CASES)} cases, torch {torch.__version__}).")


if __name__ == "__main__":
  main()
