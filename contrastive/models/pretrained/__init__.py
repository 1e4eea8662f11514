"""Published checkpoints in and out: open_clip / OpenAI CLIP, Hugging Face, big_vision.

```python
pre = models.load_pretrained(path, name=None)     # a file or a directory, as downloaded
model = models.make_model(pre.model_config)
emb, extras = model.apply({"params": pre.params}, batch, train=False)
models.save_pretrained(pre, params, out_dir, family="open_clip")   # or family="hf"
```

`load_pretrained` asks each family, in the order open_clip, hf, big_vision, whether the path is
its layout (`detect`) and loads with the first that says yes; `name=` an open_clip model name
picks open_clip for any weights file. Anything else is refused with what the path holds and what
each family expects.

A family module (`open_clip.py`, `hf.py`, `big_vision.py`) names keys and reshapes, nothing
else:

- `detect(path) -> bool`: whether `path` (a file or a directory) is this family's layout;
- `load(path, *, name=None) -> Pretrained`: config, params (float32 numpy, this library's
  layout), data settings; one-line `PretrainedError`s naming the file and the mismatch;
- `save(model_config, params, path, **extras) -> None` (open_clip and hf): the layout the peer
  library reads unchanged; `extras` may carry `data` and `meta` of a `Pretrained`. A round trip
  here -> family -> here is bit-exact.

Shared pieces: `common` (the `Pretrained` result, `PretrainedError`, data settings, flat
parameter shapes) and `weights` (lazy readers for safetensors, sharded safetensors, npz and
`.bin`, and a safetensors writer).
"""

from __future__ import annotations

import importlib
import inspect
import os
from typing import Any

from absl import logging

from contrastive.models.pretrained.common import Pretrained
from contrastive.models.pretrained.common import PretrainedError
from contrastive.models.pretrained.common import describe

FAMILIES = ("open_clip", "hf", "big_vision")
SAVE_FAMILIES = ("open_clip", "hf")
_EXPECTED = {
  "open_clip": "a directory with open_clip_config.json and open_clip_model.safetensors (or "
  "open_clip_pytorch_model.bin), or such a weights file (with name= an open_clip "
  "model name when no config is beside it)",
  "hf": "a directory with config.json and model.safetensors (or sharded with "
  "model.safetensors.index.json) of a CLIPModel or SiglipModel",
  "big_vision": "a big_vision SigLIP .npz (img/..., txt/..., t, b)",
}


def family_module(family: str):
  """The module of a checkpoint family (imported when first asked for)."""
  if family not in FAMILIES:
    raise PretrainedError(f"Unknown checkpoint family {family!r}; known: {list(FAMILIES)}.")
  try:
    return importlib.import_module(f"contrastive.models.pretrained.{family}")
  except ModuleNotFoundError as e:
    if e.name == f"contrastive.models.pretrained.{family}":
      return None
    raise


def detect_family(path: str | os.PathLike, *, name: str | None = None) -> str | None:
  """The first family whose layout `path` is, or None."""
  open_clip = family_module("open_clip")
  if name is not None and name in open_clip.NAMES and os.path.isfile(os.fspath(path)):
    return "open_clip"
  for family in FAMILIES:
    try:
      module = family_module(family)
    except Exception as e:  # noqa: BLE001  (one family's import error must not hide the others)
      if family == "open_clip":
        raise
      logging.warning("Checkpoint family %r is unavailable: %s", family, e)
      continue
    if module is not None and module.detect(path):
      return family
  return None


def load_pretrained(path: str | os.PathLike, *, name: str | None = None) -> Pretrained:
  """A published checkpoint in this library's layout.

  Args:
    path: a file or a directory, as downloaded (see the family modules for the layouts).
    name: the architecture where the files do not give it: an open_clip model name
      (`open_clip.NAMES`), or a big_vision variant.

  Returns:
    A `Pretrained`: `model_config` for `models.make_model`, `params` (float32 numpy), `data`
    (tokenizer, max_len, image_size, resize, crop, mean, std, interpolation), `family`, `source`.

  Raises:
    PretrainedError: a path no family recognizes (the message says what was found and what each
      family expects), or the family's own one-line error.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise PretrainedError(f"{path}: no such file or directory.")
  family = detect_family(path, name=name)
  if family is None:
    expected = "; ".join(f"{f}: {_EXPECTED[f]}" for f in FAMILIES)
    raise PretrainedError(
      f"Not a checkpoint this library reads: {describe(path)}. Expected {expected}."
    )
  return family_module(family).load(path, name=name)


def save_pretrained(
  pre_or_config: Pretrained | Any, params: Any, path: str | os.PathLike, *, family: str
) -> None:
  """Writes `params` in a family's layout, so that the peer library loads them unchanged.

  Args:
    pre_or_config: a `Pretrained` (its model config, data settings and family metadata are
      used) or a model config.
    params: the model's params (nested dict of arrays) in this library's layout.
    path: the directory to write.
    family: `"open_clip"` or `"hf"`.

  Raises:
    PretrainedError: an unknown family, or a model the family cannot hold.
  """
  if family not in SAVE_FAMILIES:
    raise PretrainedError(
      f"Cannot save as {family!r}; families with a writer: {list(SAVE_FAMILIES)}."
    )
  module = family_module(family)
  if module is None:
    raise PretrainedError(f"The {family!r} family is not available in this installation.")
  extras = {}
  if isinstance(pre_or_config, Pretrained):
    accepted = inspect.signature(module.save).parameters
    extras = {
      "data": pre_or_config.data,
      "meta": pre_or_config.meta if pre_or_config.family == family else {},
    }
    extras = {k: v for k, v in extras.items() if k in accepted}
    config = pre_or_config.model_config
  else:
    config = pre_or_config
  module.save(config, params, os.fspath(path), **extras)


__all__ = [
  "FAMILIES",
  "Pretrained",
  "PretrainedError",
  "describe",
  "detect_family",
  "family_module",
  "load_pretrained",
  "save_pretrained",
]
