"""Training from an imported checkpoint: run configs built from it, and `checkpoint.init_from`.

`checkpoint.init_from` names either another run's workdir or a checkpoint as downloaded (an
open_clip, Hugging Face or big_vision path that `models.load_pretrained` reads). For the latter,
`restore_params` loads it and checks that the run's model config builds the same towers as the
checkpoint's for every parameter group taken (`checkpoint.init_from_keys`), so a mismatch is one
line naming the differing keys, not a shape error inside flax.

The recipes `configs/finetune.py:pretrained=PATH` and `configs/lit.py:pretrained=PATH` read the
checkpoint's model config and data settings with `settings(path)` when the config is built (the
weights are read once more, by the trainer, through `init_from`), and turn the data settings
into a data config with `data_config`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
import functools
import os
from typing import Any

from absl import logging
import ml_collections
import numpy as np

# Encoder fields that change how a tower runs, not the parameters it has or what they mean.
RUNTIME_FIELDS = ("dtype", "remat", "scan", "dropout", "stoch_depth", "parent", "name")
# Size fields, compared through the encoder's resolved `dims` instead.
SIZE_FIELDS = ("variant", "width", "depth", "mlp_dim", "num_heads", "patch_size")


def is_run_directory(path: str | os.PathLike) -> bool:
  """Whether `path` is a trainer's workdir (or its `checkpoints/`), not an imported checkpoint."""
  path = os.fspath(path)
  if os.path.isdir(os.path.join(path, "checkpoints")):
    return True
  return os.path.isdir(path) and any(
    name.isdigit() and os.path.isdir(os.path.join(path, name)) for name in os.listdir(path)
  )


@dataclasses.dataclass(frozen=True)
class Settings:
  """What a recipe needs of a checkpoint: its model config, data settings and family."""

  model_config: ml_collections.ConfigDict
  data: ml_collections.ConfigDict
  family: str
  path: str


@functools.lru_cache(maxsize=8)
def _settings(path: str, mtime: float, name: str | None) -> Settings:
  del mtime  # part of the cache key only
  from contrastive import models

  pre = models.load_pretrained(path, name=name)
  return Settings(pre.model_config, pre.data, pre.family, path)


def settings(path: str | os.PathLike, *, name: str | None = None) -> Settings:
  """The model config and data settings of a checkpoint (`models.load_pretrained(path, name=)`).

  Cached per process, keyed by the path, its modification time and `name`.
  """
  path = os.path.abspath(os.fspath(path))
  if not os.path.exists(path):
    raise FileNotFoundError(f"No pretrained checkpoint at {path}.")
  s = _settings(path, os.path.getmtime(path), name)
  return Settings(
    ml_collections.ConfigDict(s.model_config.to_dict()),
    ml_collections.ConfigDict(s.data.to_dict()),
    s.family,
    s.path,
  )


def uses_bias(model_config: Mapping[str, Any] | ml_collections.ConfigDict) -> bool:
  """Whether a model config has SigLIP's logit bias (its family's loss is then `sigmoid`)."""
  from contrastive import models

  return models.make_model(model_config).bias_init is not None


def normalization(mean: Sequence[float], std: Sequence[float]) -> str:
  """The `data.normalization` name of a checkpoint's per-channel mean and std.

  Raises:
    ValueError: no entry of `data.NORMALIZATIONS` has them (naming both).
  """
  from contrastive import data

  for name, (m, s) in data.NORMALIZATIONS.items():
    if np.allclose(m, mean, atol=1e-6) and np.allclose(s, std, atol=1e-6):
      return name
  raise ValueError(
    f"The checkpoint normalizes with mean {tuple(mean)} and std {tuple(std)}, "
    f"which no data.normalization has; known: {dict(data.NORMALIZATIONS)}."
  )


def data_config(settings_: Settings, base: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`base` (a data config) with the checkpoint's tokenizer, length, image size and
  normalization."""
  d = settings_.data
  out = ml_collections.ConfigDict(base.to_dict())
  out.update(
    tokenizer=d.tokenizer,
    max_len=int(d.max_len),
    image_size=int(d.image_size),
    normalization=normalization(d.mean, d.std),
  )
  return out


def _describe(encoder: Any, tower: Mapping[str, Any], embed_dim: int) -> dict[str, Any]:
  """The fields of a built encoder that fix its parameters, plus its tower head's."""
  fields = {
    f.name: getattr(encoder, f.name)
    for f in dataclasses.fields(encoder)
    if f.name not in RUNTIME_FIELDS + SIZE_FIELDS
  }
  if hasattr(encoder, "dims"):
    fields.update(encoder.dims)
  fields.update(
    kind=tower.get("kind"),
    proj_bias=bool(tower.get("proj_bias", False)),
    proj=bool(tower.get("proj", True)),
    embed_dim=int(embed_dim),
  )
  return {k: (tuple(v) if isinstance(v, list) else v) for k, v in fields.items()}


def config_differences(model_config: Any, checkpoint_config: Any, keys: Sequence[str]) -> list[str]:
  """`"{modality}.{field}: run vs checkpoint"` for every field that differs between the towers
  the two model configs build, over the modalities among `keys`."""
  from contrastive import models

  run, ckpt = (ml_collections.ConfigDict(c).to_dict() for c in (model_config, checkpoint_config))
  out = []
  for key in keys:
    if key not in ckpt["encoders"] or key not in run["encoders"]:
      continue  # not a tower (log_scale, bias); shapes are checked by the caller
    a = _describe(
      models.make_encoder(run["encoders"][key], modality=key),
      run["encoders"][key],
      run["embed_dim"],
    )
    b = _describe(
      models.make_encoder(ckpt["encoders"][key], modality=key),
      ckpt["encoders"][key],
      ckpt["embed_dim"],
    )
    out += [
      f"{key}.{f}: {a.get(f)!r} vs {b.get(f)!r}"
      for f in sorted(set(a) | set(b))
      if a.get(f) != b.get(f)
    ]
  return out


def restore_params(
  path: str | os.PathLike,
  model_config: Any,
  *,
  keys: Sequence[str] = (),
  step: int | None = None,
  name: str | None = None,
) -> tuple[dict[str, Any], int]:
  """The parameters of an imported checkpoint for `checkpoint.init_from`, checked against the
  run's model config.

  Args:
    path: the checkpoint, as `models.load_pretrained` takes it.
    model_config: the run's `config.model`.
    keys: the top-level parameter groups that will be taken (`checkpoint.init_from_keys`;
      empty: all of the checkpoint's).
    step: must be None (`checkpoint.init_from_step` is for run directories).
    name: the architecture name, where the path does not say.

  Returns:
    `(params, 0)`: the checkpoint's parameters (host arrays) and step 0, as
    `contrastive.run.workdir.restore_params` returns a run's.

  Raises:
    ValueError: a path that is neither a run directory nor a checkpoint, a `step`, or a tower
      whose config differs from the checkpoint's (naming the fields).
  """
  from contrastive import models

  path = os.fspath(path)
  if os.path.exists(path) and models.pretrained.detect_family(path, name=name) is None:
    raise ValueError(
      f"checkpoint.init_from={path} is neither a run directory (it has no "
      f"checkpoints/) nor a checkpoint models.load_pretrained reads: "
      f"{models.pretrained.describe(path)}."
    )
  if step is not None:
    raise ValueError(
      f"checkpoint.init_from_step={step} is for run directories; "
      f"{path} is an imported checkpoint (one set of weights)."
    )
  pre = models.load_pretrained(path, name=name)
  keys = tuple(keys) or tuple(pre.params)
  diff = config_differences(model_config, pre.model_config, keys)
  if diff:
    raise ValueError(
      f"config.model does not match the checkpoint {os.fspath(path)} "
      f"(run vs checkpoint): {'; '.join(diff)}."
    )
  logging.info("Read %s (%s) for checkpoint.init_from.", pre.source, pre.family)
  return pre.params, 0
