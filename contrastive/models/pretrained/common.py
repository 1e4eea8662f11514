"""What every checkpoint family shares: the loaded result, its errors, and weight-file readers.

A family module (`open_clip`, `hf`, `big_vision`) maps the family's keys and shapes onto this
library's parameter layout and back; everything it reads or writes goes through here.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import ml_collections


class PretrainedError(ValueError):
  """A checkpoint that cannot be loaded as asked; the message names the file and the mismatch."""


@dataclasses.dataclass
class Pretrained:
  """A checkpoint in this library's layout.

  Attributes:
    model_config: the model config for `models.make_model`.
    params: nested dict of float32 numpy arrays, the `params` collection of that model.
    data: the checkpoint's own data settings: `tokenizer` (a `data.make_tokenizer` spec),
      `max_len`, `image_size`, `resize`, `crop`, `mean`, `std`.
    family: `"open_clip"`, `"hf"` or `"big_vision"`.
    source: the path it was read from.
    meta: what the family keeps to write the checkpoint back as it came (e.g. open_clip's own
      `model_cfg`, whose tokenizer fields have no place in a model config).
  """

  model_config: ml_collections.ConfigDict
  params: dict[str, Any]
  data: ml_collections.ConfigDict
  family: str
  source: str
  meta: dict[str, Any] = dataclasses.field(default_factory=dict)


def data_settings(
  *,
  tokenizer: str,
  max_len: int,
  image_size: int,
  mean,
  std,
  resize: int | None = None,
  crop: str = "center",
  interpolation: str = "bicubic",
) -> ml_collections.ConfigDict:
  """The data settings that belong to a checkpoint (`Pretrained.data`).

  Args:
    tokenizer: a `data.make_tokenizer` spec.
    max_len: the text length the model was trained with (its context length).
    image_size: the side of the model's input images.
    mean, std: per-channel normalization of pixel values in [0, 1].
    resize: the side the image is resized to before cropping (default: `image_size`).
    crop: `"center"` (resize the shorter side to `resize`, then a centered `image_size` crop:
      CLIP, open_clip's `resize_mode="shortest"`), `"squash"` (resize both sides to
      `image_size`, no crop: SigLIP) or `"pad"` (resize the longer side, pad the rest).
    interpolation: the resize filter (`"bicubic"`, `"bilinear"`).
  """
  return ml_collections.ConfigDict(
    dict(
      tokenizer=tokenizer,
      max_len=int(max_len),
      image_size=int(image_size),
      resize=int(resize if resize is not None else image_size),
      crop=crop,
      mean=tuple(float(m) for m in mean),
      std=tuple(float(s) for s in std),
      interpolation=interpolation,
    )
  )


def describe(path: str | os.PathLike) -> str:
  """What a path holds, for error messages: a file, or a directory's first entries."""
  path = os.fspath(path)
  if os.path.isdir(path):
    names = sorted(os.listdir(path))
    shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
    return f"directory {path} with [{shown}]"
  if os.path.isfile(path):
    return f"file {path} ({os.path.getsize(path)} bytes)"
  return f"{path}, which does not exist"


def flatten(params: Any) -> dict[str, Any]:
  """A nested params dict as `{"image/encoder/.../kernel": array}`."""
  out = {}

  def visit(prefix, node):
    if hasattr(node, "items"):
      for key, value in node.items():
        visit(f"{prefix}/{key}" if prefix else str(key), value)
    else:
      out[prefix] = node

  visit("", params)
  return out


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
  """The inverse of `flatten`."""
  out: dict[str, Any] = {}
  for path, value in flat.items():
    *parents, leaf = path.split("/")
    node = out
    for key in parents:
      node = node.setdefault(key, {})
    node[leaf] = value
  return out


def param_shapes(model_config: Any) -> dict[str, tuple[int, ...]]:
  """The flat parameter shapes of the model a config describes, traced without memory."""
  import flax.linen as nn
  import jax

  from contrastive.models import config as config_lib

  config = ml_collections.ConfigDict(config_lib._to_dict(model_config))
  unroll = not config.get("scan", False)
  if unroll:  # one traced block instead of `depth` (seconds for a ViT-L), then unrolled names
    config.scan = True
  model = config_lib.make_model(config)
  variables = jax.eval_shape(
    lambda: model.init(jax.random.key(0), model.dummy_batch(1), train=False)
  )
  params = nn.meta.unbox(variables)["params"]
  shapes = {}
  for key, value in flatten(params).items():
    head, sep, tail = key.partition("/encoderblock/")
    if unroll and sep:
      for i in range(value.shape[0]):
        shapes[f"{head}/encoderblock_{i}/{tail}"] = tuple(value.shape[1:])
    else:
      shapes[key] = tuple(value.shape)
  return shapes
