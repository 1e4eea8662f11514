r"""Evaluating an imported checkpoint (`models.load_pretrained`) with its own data settings.

    python -m contrastive.evaluate --pretrained /ckpt/open_clip_vit_b16 --output runs/b16_eval
    python -m contrastive.evaluate --pretrained /ckpt/ViT-B-32.safetensors --pretrained_name \
        ViT-B-32 --config configs/finetune.py --output runs/b32_eval \
        --config.eval.tasks.imagenet.source.data_dir=/data/tfds

The model, its parameters and the input settings (tokenizer, context length, image size, resize
and crop, mean and std) all come from the checkpoint (`Pretrained.data`), so a model is fed what
its authors fed it. The tasks come from `--config`'s `eval` block (any run config: its `model`
is ignored; its `data` block serves the `data` source, e.g. an ArrayRecord folder from
`contrastive.data.build`); without `--config`, `default_tasks()` (the built-in dataset). Every
source the evaluation knows works: `synthetic`, `tfds` (ImageNet prepared by tfds, with
`class_names="imagenet"` and `templates="imagenet80"` for the published protocol),
`arrayrecord`, and `data`.

Images are prepared as open_clip and OpenAI prepare them, with the checkpoint's
`interpolation` (bicubic by default): `crop="center"` resizes the shorter side to `resize` and
cuts the centred `image_size` square (torchvision's `Resize` then `CenterCrop`); `crop="squash"`
(SigLIP) resizes the whole image to the `image_size` square; `crop="pad"` resizes the longer side
to `image_size` and centres the image on black. Then `(x / 255 - mean) / std`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import functools
import os
from typing import Any

from absl import logging
import flax.linen as nn
import jax
import ml_collections
import numpy as np
from PIL import Image

from contrastive import parallel
from contrastive.evaluate import context as context_lib
from contrastive.evaluate import runner
from contrastive.evaluate import sources as sources_lib

CROPS = ("center", "squash", "pad")
_INTERPOLATIONS = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}


def default_tasks(*, num_examples: int = 256) -> ml_collections.ConfigDict:
  """Zero-shot (shape, colour, count) and retrieval on the built-in dataset (64 px images,
  resized to the checkpoint's size), for a first look at any checkpoint."""
  tasks = runner.default_tasks(num_examples=num_examples, image_size=64)
  return ml_collections.ConfigDict(
    {k: v for k, v in tasks.items() if k.startswith("zeroshot") or k == "retrieval"}
  )


def prepare_image(image: Any, settings: ml_collections.ConfigDict) -> np.ndarray:
  """One image (uint8 `[H, W, C]` or encoded bytes) to float32 `[S, S, 3]` model input.

  `S` is `settings.image_size`; see the module docstring for `settings.crop`.
  """
  from contrastive.data import transforms

  image = transforms.decode_image(image)  # bytes, grey, RGBA, any dtype: to uint8 RGB
  size, crop = int(settings.image_size), settings.crop
  resample = _INTERPOLATIONS[settings.get("interpolation", None) or "bicubic"]
  pil = Image.fromarray(image)
  if crop == "squash":
    pil = pil.resize((size, size), resample)
  elif crop == "pad":
    # open_clip's resize_mode="longest": the longer side to `size`, then centred on black.
    w, h = pil.size
    ratio = max(w, h) / size
    pil = pil.resize((round(w / ratio), round(h / ratio)), resample)
    canvas = Image.new("RGB", (size, size))
    canvas.paste(pil, ((size - pil.size[0]) // 2, (size - pil.size[1]) // 2))
    pil = canvas
  elif crop == "center":
    # torchvision's Resize(resize) then CenterCrop(size), which open_clip and OpenAI use.
    short = int(settings.resize)
    w, h = pil.size
    new = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
    if new != (w, h):
      pil = pil.resize(new, resample)
    w, h = pil.size
    left, top = int(round((w - size) / 2.0)), int(round((h - size) / 2.0))
    pil = pil.crop((left, top, left + size, top + size))
  else:
    raise ValueError(f"Unknown crop {crop!r} in the checkpoint's data settings; known: {CROPS}.")
  mean = np.asarray(settings.mean, np.float32)
  std = np.asarray(settings.std, np.float32)
  return (np.asarray(pil, np.float32) / 255.0 - mean) / std


def make_prepare(
  settings: ml_collections.ConfigDict, *, image_modality: str = "image", text_modality: str = "text"
) -> context_lib.Prepare:
  """`raw -> model inputs` with a checkpoint's data settings (`Pretrained.data`).

  Texts go through the checkpoint's own tokenizer (`data.make_tokenizer(settings.tokenizer)`)
  to `[b, settings.max_len]` int32 ids; images through `prepare_image`.
  """
  from contrastive import data

  for key in ("tokenizer", "max_len", "image_size", "resize", "crop", "mean", "std"):
    if key not in settings:
      raise ValueError(f"The checkpoint's data settings have no {key!r}: {settings}.")
  if settings.crop not in CROPS:
    raise ValueError(
      f"Unknown crop {settings.crop!r} in the checkpoint's data settings; known: {CROPS}."
    )
  tokenizer = data.make_tokenizer(settings.tokenizer)
  max_len = int(settings.max_len)

  def prepare(raw: Mapping[str, Any]) -> dict[str, np.ndarray]:
    out = {}
    for key, value in raw.items():
      if key == image_modality:
        out[key] = np.stack([prepare_image(x, settings) for x in value])
      elif key == text_modality:
        out[key] = np.asarray(data.tokenize(tokenizer, [str(t) for t in value], max_len), np.int32)
      else:
        raise ValueError(
          f"Cannot prepare {key!r} for the model; it takes {image_modality!r} "
          f"and {text_modality!r}."
        )
    return out

  return prepare


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  return {
    "/".join(str(getattr(k, "key", k)) for k in path): tuple(np.shape(x))
    for path, x in jax.tree_util.tree_flatten_with_path(nn.meta.unbox(tree))[0]
  }


def _place(model: nn.Module, params: Any, mesh: jax.sharding.Mesh) -> Any:
  """The checkpoint's parameters on the mesh, sharded by the model's logical axis names."""
  init = functools.partial(model.init, train=False)
  abstract = jax.eval_shape(init, jax.random.key(0), model.dummy_batch(1))["params"]
  want, got = _shapes(abstract), _shapes(params)
  if want != got:
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    shapes = [
      f"{k} {got[k]} (model {want[k]})" for k in sorted(set(want) & set(got)) if want[k] != got[k]
    ]
    raise ValueError(
      f"The checkpoint's parameters do not fit its model config: missing "
      f"{missing[:3]}, unexpected {extra[:3]}, shapes {shapes[:3]}."
    )
  return jax.device_put(params, parallel.logical_shardings(abstract, mesh))


def evaluate_pretrained(
  pre: Any,
  tasks: Mapping[str, Any] | ml_collections.ConfigDict,
  *,
  batch_size: int = 64,
  mesh: jax.sharding.Mesh | None = None,
  output_dir: str | os.PathLike | None = None,
  report: bool = True,
  sources: Mapping[str, Callable[..., Any]] | None = None,
) -> dict[str, float]:
  """Runs evaluation `tasks` on an imported checkpoint; writes the report to `output_dir`.

  Args:
    pre: a `models.Pretrained` (from `models.load_pretrained`).
    tasks: `{name: {"kind": ..., **options}}` (see `contrastive.evaluate.tasks`).
    batch_size: the evaluation batch, divisible by the mesh's batch devices.
    mesh: where the model runs; default `parallel.make_mesh()` (all devices, data parallel).
    output_dir: where `metrics.json` (and with `report` the PNG plots) go; None: no files.
    report: draw the plots.
    sources: extra evaluation sources by name (e.g. `sources.data_sources(config.data)`).

  Returns:
    The metrics, keyed `"{task name}/{metric}"`.
  """
  from contrastive import models

  runner.check_tasks(tasks)
  mesh = mesh if mesh is not None else parallel.make_mesh()
  model = models.make_model(pre.model_config)
  params = _place(model, pre.params, mesh)
  if set(model.modalities) != {"image", "text"}:
    raise ValueError(
      f"An imported checkpoint has an image and a text tower; this model has "
      f"{tuple(model.modalities)}."
    )
  # The parameters are an argument, not constants folded into the compiled program.
  apply = jax.jit(lambda p, batch: model.apply({"params": p}, batch, train=False))

  with parallel.use_rules(mesh):
    # An empty batch runs no tower; the scale is replicated, so every host can read it.
    scale = float(apply(params, {})[1]["scale"])
    logging.info("Evaluating %s (%s) on %s.", pre.source, pre.family, sorted(tasks))
    return runner.evaluate(
      lambda batch: apply(params, batch)[0],
      tasks,
      prepare=make_prepare(pre.data),
      batch_size=int(batch_size),
      mesh=mesh,
      workdir=None if output_dir is None else os.fspath(output_dir),
      report=report,
      sources=sources,
      logit_scale=scale,
    )


def evaluate_path(
  path: str | os.PathLike,
  config: ml_collections.ConfigDict | None = None,
  *,
  name: str | None = None,
  output_dir: str | os.PathLike | None = None,
  image_size: int | None = None,
  max_len: int | None = None,
) -> dict[str, float]:
  """What `python -m contrastive.evaluate --pretrained PATH` runs.

  Args:
    path: a checkpoint as downloaded (see `models.load_pretrained`).
    config: a run config whose `eval` (tasks, batch_size, report), `mesh` and `data` blocks are
      used; None: `default_tasks()` at batch 64 on all devices.
    name: the architecture name where the path does not say (`models.load_pretrained`'s `name`).
    output_dir: where the report goes; None: no files.
    image_size, max_len: evaluate at this image size / text length, the position tables resized
      (`models.load_pretrained`'s).

  Returns:
    The metrics.
  """
  from contrastive import models

  config = config if config is not None else ml_collections.ConfigDict()
  ev = config.get("eval") or ml_collections.ConfigDict()
  tasks = ev.get("tasks") or default_tasks()
  runner.check_tasks(tasks)  # before the weights are read
  mesh_config = config.get("mesh")
  mesh = parallel.make_mesh(**(mesh_config.to_dict() if mesh_config else {}))
  sources = None
  if config.get("data") is not None:  # the `data` source: the run config's own data
    sources = sources_lib.data_sources(config.data)
  pre = models.load_pretrained(path, name=name, image_size=image_size, max_len=max_len)
  return evaluate_pretrained(
    pre,
    tasks,
    batch_size=int(ev.get("batch_size", 64)),
    mesh=mesh,
    output_dir=output_dir,
    report=bool(ev.get("report", True)),
    sources=sources,
  )
