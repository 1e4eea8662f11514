"""Evaluating a model as its run config says: inputs from raw records, sources, and a run.

`make_prepare(config.data)` turns the raw batches the evaluation tasks read (uint8 images,
caption strings) into model inputs with the training pipeline's own transforms (centre crop and
resize, normalization, tokenizer, length), so evaluation sees what training saw. `run` is what
the trainer calls at its evaluation steps, and `python -m contrastive.evaluate` on a checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import os
from typing import Any

import flax.linen as nn
import jax
from jax.sharding import Mesh
import ml_collections
import numpy as np

from contrastive import data
from contrastive import models
from contrastive import parallel
from contrastive.data import tokenizers
from contrastive.data import transforms
from contrastive.evaluate import runner
from contrastive.evaluate import sources as sources_lib


def make_prepare(
  data_config: ml_collections.ConfigDict,
  *,
  image_modality: str = "image",
  text_modality: str = "text",
) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
  """`raw -> model inputs` for the evaluation tasks (see `contrastive.evaluate.context`)."""
  cfg = data.resolve_config(data_config)
  tokenizer = data.make_tokenizer(cfg)
  size, kind, max_len = int(cfg.image_size), cfg.normalization, int(cfg.max_len)

  def image(x: Any) -> np.ndarray:
    if isinstance(x, (bytes, np.bytes_)) or (isinstance(x, np.ndarray) and x.dtype == object):
      x = transforms.decode_image(x)  # encoded (JPEG, PNG, ...), as tfds sources leave them
    x = np.asarray(x)
    if x.ndim == 2:
      x = x[:, :, None]
    if x.shape[-1] == 1:
      x = np.repeat(x, 3, axis=-1)
    if x.shape[:2] != (size, size):
      x = transforms.center_crop_resize(x[..., :3], size)
    return transforms.normalize(x[..., :3], kind)

  def prepare(raw: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in raw.items():
      if key == image_modality:
        out[key] = np.stack([image(x) for x in value])
      elif key == text_modality:
        out[key] = tokenizers.tokenize(tokenizer, [str(t) for t in value], max_len)
      else:
        raise ValueError(
          f"Cannot prepare {key!r} for the model; it takes {image_modality!r} "
          f"and {text_modality!r}."
        )
    return out

  return prepare


def run(
  model: nn.Module,
  params: Any,
  config: ml_collections.ConfigDict,
  *,
  mesh: Mesh,
  workdir: str | os.PathLike | None,
  step: int | None,
) -> dict[str, float]:
  """Runs `config.eval.tasks` on the model with `params`; writes the report under `workdir`."""

  def embed_fn(batch):
    return model.apply({"params": params}, batch, train=False)[0]

  # Traced (by the evaluation's own jit) under the logical axis rules, like the train step.
  with parallel.use_rules(mesh):
    return runner.evaluate(
      embed_fn,
      config.eval.tasks,
      prepare=make_prepare(config.data),
      batch_size=int(config.eval.batch_size),
      mesh=mesh,
      workdir=None if workdir is None else os.fspath(workdir),
      step=step,
      report=bool(config.eval.report),
      sources=eval_sources(config.data),
      logit_scale=logit_scale(model, params),
      caption_fn=caption_fn(model, params, config.data, mesh),
    )


def caption_fn(
  model: nn.Module, params: Any, data_config: ml_collections.ConfigDict, mesh: Mesh | None
) -> Callable[..., np.ndarray] | None:
  """`(images, method=, beam_size=) -> [batch, max_len]` ids generated with the run's tokenizer's
  start, end and padding ids (`models.generate`), for a model with a decoder; else None."""
  if not getattr(model, "has_decoder", False):
    return None
  cfg = data.resolve_config(data_config)
  tokenizer = data.make_tokenizer(cfg)
  if getattr(tokenizer, "bos_id", None) is None or tokenizer.eos_id is None:
    raise ValueError(
      f"Generating captions needs a tokenizer with start and end ids; {tokenizer!r} lacks one "
      "(for the built-in data: data.tokenizer='words_bos')."
    )
  ids = dict(sot_id=tokenizer.bos_id, eot_id=tokenizer.eos_id, pad_id=tokenizer.pad_id)

  def generate(images, *, method="greedy", beam_size=4):
    tokens = models.generate(
      model,
      params,
      images,
      max_len=int(cfg.max_len),
      method=method,
      beam_size=beam_size,
      mesh=mesh,
      **ids,
    )
    return np.asarray(jax.device_get(tokens))

  return generate


def logit_scale(model: nn.Module, params: Any) -> float:
  """The model's logit scale (the clipped `exp(log_scale)`), as the losses see it."""
  # An empty batch runs no tower; the scale is replicated, so every host can read it.
  return float(jax.jit(lambda p: model.apply({"params": p}, {}, train=False)[1]["scale"])(params))


def eval_sources(data_config: ml_collections.ConfigDict) -> dict[str, Callable[..., Any]]:
  """Evaluation sources beyond `contrastive.evaluate.SOURCES`: `data` (the run's own data
  config, any split) and `synthetic_subset` (see `synthetic_subset`)."""
  return {**sources_lib.data_sources(data_config), "synthetic_subset": synthetic_subset}


class _Subset:
  """The records of `source` at `indices` (a stable, deterministic selection)."""

  def __init__(self, source, indices: list[int]):
    self._source, self._indices = source, list(indices)

  def __len__(self) -> int:
    return len(self._indices)

  def __getitem__(self, index: int):
    return self._source[self._indices[index]]

  def __repr__(self) -> str:
    return f"_Subset({self._source!r}, {len(self._indices)} records)"


def synthetic_subset(
  *, split: str, num_examples: int, heldout: bool = True, **kwargs
) -> sources_lib.EvalSource:
  """The first `num_examples` records of a built-in split whose `heldout` flag is `heldout`.

  E.g. `{"name": "synthetic_subset", "split": "shape", "num_examples": 500}` is zero-shot shape
  classification on held-out (colour, shape) combinations only: objects never seen in training.
  (An adapter until the evaluation tasks split zero-shot results by subset themselves.)
  """
  from contrastive.data import shapes

  source = shapes.ShapesSource(split=split, num_examples=2**30, **kwargs)
  indices, index = [], 0
  while len(indices) < num_examples:
    if index > 64 * num_examples + 10_000:
      raise ValueError(
        f"Found only {len(indices)} records with heldout={heldout} in split "
        f"{split!r}; is num_heldout 0?"
      )
    if source.is_heldout(index) == heldout:
      indices.append(index)
    index += 1
  view = shapes.labelled_views().get(split)
  return sources_lib.EvalSource(
    _Subset(source, indices),
    view.class_names if view else None,
    view.templates if view else None,
    tuple(shapes.HARD_NEGATIVE_KINDS),
  )
