"""Which checkpoint family a path is, and loading and saving through that family's module.

`detect_family` asks each family, in the order open_clip, hf, big_vision, whether the path is its
layout; `load_pretrained` loads with the first that says yes, `save_pretrained` writes with the
family named. The family modules are imported when first asked for (`family_module`), so one
that cannot be imported (a missing optional dependency) hides none of the others.
"""

from __future__ import annotations

import importlib
import inspect
import os
from typing import Any

from absl import logging

from contrastive.models.pretrained import hub
from contrastive.models.pretrained import resize
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
    except Exception as e:
      if family == "open_clip":
        raise
      logging.warning("Checkpoint family %r is unavailable: %s", family, e)
      continue
    if module is not None and module.detect(path):
      return family
  return None


def load_pretrained(
  path: str | os.PathLike,
  *,
  name: str | None = None,
  image_size: int | tuple[int, int] | None = None,
  max_len: int | None = None,
) -> Pretrained:
  """A published checkpoint in this library's layout.

  Args:
    path: a file or a directory, as downloaded (see the family modules for the layouts), or a
      hub checkpoint, `"hf-hub:ORG/NAME"` or open_clip's `(name, tag)`, resolved through the
      Hugging Face cache (`hub.resolve`; offline with `HF_HUB_OFFLINE=1`).
    name: the architecture where the files do not give it: an open_clip model name
      (`open_clip.NAMES`), or a big_vision variant.
    image_size: resize the ViT's learned position table to this image size's patch grid (an
      int or `(height, width)`), the family's way (`resize.FAMILY_METHODS`).
    max_len: resize the text tower's position table to this context length.

  Returns:
    A `Pretrained`: `model_config` for `models.make_model`, `params` (float32 numpy), `data`
    (tokenizer, max_len, image_size, resize, crop, mean, std, interpolation), `family`, `source`.

  Raises:
    PretrainedError: a path no family recognizes (the message says what was found and what each
      family expects), or the family's own one-line error.
  """
  if hub.is_hub_name(path):  # "hf-hub:ORG/NAME" or open_clip's (name, tag): the local snapshot
    path = hub.resolve(path)
  path = os.fspath(path)
  if not os.path.exists(path):
    raise PretrainedError(f"{path}: no such file or directory.")
  family = detect_family(path, name=name)
  if family is None:
    expected = "; ".join(f"{f}: {_EXPECTED[f]}" for f in FAMILIES)
    raise PretrainedError(
      f"Not a checkpoint this library reads: {describe(path)}. Expected {expected}."
    )
  pre = family_module(family).load(path, name=name)
  if image_size is None and max_len is None:
    return pre
  try:
    return resize.resize_pretrained(pre, image_size=image_size, max_len=max_len)
  except ValueError as e:
    raise PretrainedError(f"{path}: {e}") from None


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
