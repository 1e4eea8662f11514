"""Training from an imported checkpoint: run configs built from it, and `checkpoint.init_from`.

`checkpoint.init_from` names either another run's workdir or a checkpoint as downloaded (an
open_clip, Hugging Face or big_vision path that `models.load_pretrained` reads). For the latter,
`restore_params` loads it and checks that the run's model config builds the same towers as the
checkpoint's for every parameter group taken (`checkpoint.init_from_keys`), so a mismatch is one
line naming the differing keys, not a shape error inside flax. A run at another image size or
text length than the checkpoint's gets its learned position tables resized the checkpoint
family's way (`resize_to_run`, `models.load_pretrained(image_size=, max_len=)`).

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
RUNTIME_FIELDS = (
  "dtype",
  "remat",
  "scan",
  "dropout",
  "stoch_depth",
  "patch_dropout",
  "parent",
  "name",
)
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
def _settings(
  path: str, mtime: float, name: str | None, image_size: int | None, max_len: int | None
) -> Settings:
  del mtime  # part of the cache key only
  from contrastive import models

  pre = models.load_pretrained(path, name=name, image_size=image_size, max_len=max_len)
  return Settings(pre.model_config, pre.data, pre.family, path)


def settings(
  path: str | os.PathLike,
  *,
  name: str | None = None,
  image_size: int | None = None,
  max_len: int | None = None,
) -> Settings:
  """The model config and data settings of a checkpoint (`models.load_pretrained(path, name=,
  image_size=, max_len=)`: at another image size or text length, the sizes are the new ones).

  Cached per process, keyed by the path, its modification time, `name` and the sizes.
  """
  path = os.path.abspath(os.fspath(path))
  if not os.path.exists(path):
    raise FileNotFoundError(f"No pretrained checkpoint at {path}.")
  s = _settings(path, os.path.getmtime(path), name, image_size, max_len)
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


def resize_to_run(pre: Any, model_config: Any) -> Any:
  """`pre` (a `models.Pretrained`) with its position tables resized to the run's image size and
  text length, where the run's ViT image tower or text tower asks for other ones than the
  checkpoint's (fine-tuning at 336 px from a 224 px CLIP: `data.image_size=336` and the model's
  `image_size` with it)."""
  from contrastive.models.pretrained import resize

  run = ml_collections.ConfigDict(model_config).to_dict()["encoders"]
  ckpt = pre.model_config.encoders
  sizes = {}
  image, text = run.get("image", {}), run.get("text", {})
  if image.get("kind") == "vit" == ckpt.get("image", {}).get("kind"):
    if image.get("image_size", 224) != ckpt.image.get("image_size", 224):
      sizes["image_size"] = image.get("image_size", 224)
  if text.get("kind") == "text" == ckpt.get("text", {}).get("kind"):
    if text.get("max_len") != ckpt.text.get("max_len"):
      sizes["max_len"] = text.get("max_len")
  if not sizes:
    return pre
  logging.info("Resizing the position tables of %s to %s.", pre.source, sizes)
  try:
    return resize.resize_pretrained(pre, **sizes)
  except ValueError as e:
    raise ValueError(f"checkpoint.init_from={pre.source}: {e}") from None


def restore_run_params(
  workdir: str | os.PathLike, model_config: Any, *, step: int | None = None
) -> tuple[Any, int]:
  """A run directory's parameters (`run.workdir.restore_params`), their position tables resized
  to `model_config`'s image size and text length where the run's own differ (open_clip's way:
  bicubic with antialiasing for the patch grid, linear for the text; `resize_to_run`). None:
  as saved."""
  from contrastive import models
  from contrastive.run import workdir as workdir_lib

  params, step = workdir_lib.restore_params(workdir, step=step)
  saved = workdir_lib.saved_config(workdir)
  if model_config is None or saved is None or "model" not in saved:
    return params, step
  pre = models.Pretrained(
    model_config=ml_collections.ConfigDict(saved["model"]),
    params=params,
    data=ml_collections.ConfigDict(
      dict(
        image_size=saved.get("data", {}).get("image_size"),
        resize=saved.get("data", {}).get("image_size"),
        max_len=saved.get("data", {}).get("max_len"),
      )
    ),
    family="open_clip",
    source=os.fspath(workdir),
  )
  return resize_to_run(pre, model_config).params, step


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
  pre = resize_to_run(models.load_pretrained(path, name=name), model_config)
  keys = tuple(keys) or tuple(pre.params)
  diff = config_differences(model_config, pre.model_config, keys)
  if diff:
    raise ValueError(
      f"config.model does not match the checkpoint {os.fspath(path)} "
      f"(run vs checkpoint): {'; '.join(diff)}."
    )
  logging.info("Read %s (%s) for checkpoint.init_from.", pre.source, pre.family)
  return pre.params, 0
