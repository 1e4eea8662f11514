"""Evaluation tasks by kind: each reads sources through a `Context` and returns flat metrics.

A task is a function `task(ctx, **options) -> dict[str, float]` with keyword-only options; a
config names it by its key in `TASKS` (`kind`) and gives its options, e.g.

```python
{"kind": "retrieval", "source": {"name": "synthetic", "split": "test", "num_examples": 512},
 "meaning_key": "meaning_id", "subset_key": "heldout"}
```

Source configs are described in `contrastive.evaluate.sources`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np

from contrastive.evaluate import binding as binding_lib
from contrastive.evaluate import captioning
from contrastive.evaluate import gap_removal
from contrastive.evaluate import geometry as geometry_lib
from contrastive.evaluate import imagenet
from contrastive.evaluate import probes
from contrastive.evaluate import retrieval as retrieval_lib
from contrastive.evaluate import sources as sources_lib
from contrastive.evaluate import suite_labels
from contrastive.evaluate import zeroshot as zeroshot_lib
from contrastive.evaluate.context import Context

Source = Mapping[str, Any]


def _captions(values: Sequence[Any], key: str) -> tuple[list[str], np.ndarray]:
  """Flattens one-or-several captions per record into a list and its `y_to_x` owner index."""
  texts, owner = [], []
  for i, v in enumerate(values):
    group = [v] if isinstance(v, (str, bytes)) else list(np.ravel(np.asarray(v, dtype=object)))
    group = [t.decode() if isinstance(t, bytes) else t for t in group]
    if not group or not all(isinstance(t, str) for t in group):
      raise ValueError(
        f"Field {key!r} of record {i} must be a str or a non-empty sequence of str, got {v!r}."
      )
    texts += group
    owner += [i] * len(group)
  return texts, np.asarray(owner, np.int32)


def _field(fields: Mapping[str, list[Any]], key: str) -> list[Any]:
  """A record field as a list over records; `a/b` reaches into nested dicts."""
  top, *rest = key.split("/")
  if top not in fields:
    raise ValueError(f"The records have no field {top!r}; fields: {sorted(fields)}.")
  values = fields[top]
  for part in rest:
    try:
      values = [v[part] for v in values]
    except (KeyError, TypeError, IndexError) as e:
      raise ValueError(
        f"Cannot read field {key!r} of the records: no {part!r} in "
        f"{type(values[0]).__name__} values."
      ) from e
  return values


def _subsets(fields, subset_key: str | None, names: Sequence[str]) -> dict[str, np.ndarray]:
  if subset_key is None:
    return {}
  flag = np.asarray(_field(fields, subset_key), bool)
  return {names[0]: ~flag, names[1]: flag}


def zeroshot(
  ctx: Context,
  *,
  source: Source,
  class_names: Sequence[str] | str | None = None,
  templates: Sequence[str] | str | None = None,
  label_key: str = "label",
  image_key: str = "image",
  ks: Sequence[int] = (1, 5),
  ensemble: Literal["mean", "marginal"] = "mean",
  scale: float | None = None,
  label_transform: str | None = None,
) -> dict[str, float]:
  """Zero-shot classification of a labelled source with a prompt ensemble.

  Class names and templates default to the source's own (the built-in labelled views, tfds
  label names), or name a set of `contrastive.evaluate.imagenet` (`class_names="imagenet"`,
  `templates="imagenet80"` or `"imagenet7"`); labels are ints or multi-hot vectors.
  `ensemble="mean"` predicts the nearest averaged prototype (CLIP;
  `zeroshot.class_prototypes`), `"marginal"` sums each class's prompt probabilities under the
  model's softmax at logit scale `scale` (default: the model's own, `ctx.logit_scale`;
  `zeroshot.marginal_log_probs`). `label_transform` derives the labels from the `label_key`
  field and drops the records the protocol leaves out (`suite_labels.TRANSFORMS`: ImageNet-A/R's
  200 classes, ReaL's label sets, VTAB's CLEVR and KITTI tasks). See `zeroshot.zeroshot_metrics`.
  """
  if ensemble not in ("mean", "marginal"):
    raise ValueError(f"ensemble must be 'mean' or 'marginal', got {ensemble!r}.")
  class_names, templates = imagenet.class_names(class_names), imagenet.templates(templates)
  scale = scale if scale is not None else ctx.logit_scale
  if ensemble == "marginal" and scale is None:
    raise ValueError(
      "ensemble='marginal' needs the model's logit scale: give the task a scale, "
      "or evaluate with logit_scale set."
    )
  spec = ctx.source(source)
  names = tuple(class_names or spec.class_names or ())
  if not names:
    raise ValueError(f"Source {dict(source)} has no class names; give class_names.")
  temps = tuple(templates or spec.templates or sources_lib.DEFAULT_TEMPLATES)
  x, fields = ctx.load(source, image_key=image_key)
  text = ctx.embed_texts(zeroshot_lib.prompts(names, temps)).reshape(len(names), len(temps), -1)
  if label_transform is None:
    labels = np.asarray(_field(fields, label_key))
  else:  # the protocol's own labels; the records it leaves out are dropped
    labels, keep = suite_labels.transform(label_transform, _field(fields, label_key), len(names))
    x = x[keep]
  if ensemble == "marginal":
    scores = zeroshot_lib.marginal_log_probs(x, text, scale=scale, block_size=ctx.block_size)
    return zeroshot_lib.score_metrics(scores, labels=labels, ks=ks, class_names=names)
  return zeroshot_lib.zeroshot_metrics(
    x,
    zeroshot_lib.class_prototypes(text),
    labels=labels,
    ks=ks,
    class_names=names,
    block_size=ctx.block_size,
    mesh=ctx.mesh,
  )


def retrieval(
  ctx: Context,
  *,
  source: Source,
  caption_key: str = "caption",
  image_key: str = "image",
  meaning_key: str | None = None,
  subset_key: str | None = None,
  subset_names: Sequence[str] = ("seen", "heldout"),
  ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
  """Image-text retrieval both ways over a source's images and its (one or more) captions.

  With `meaning_key`, a hit of the same meaning counts; with `subset_key` (a bool field), the
  metrics are repeated for the images with the flag off and on (`subset_names`), ranked against
  the whole set. See `retrieval.retrieval_metrics`.
  """
  x, fields = ctx.load(source, image_key=image_key)
  texts, y_to_x = _captions(_field(fields, caption_key), caption_key)
  meaning = None if meaning_key is None else np.asarray(_field(fields, meaning_key), np.int64)
  if meaning is not None:  # compact ids (the built-in ones reach 2**23)
    meaning = np.unique(meaning, return_inverse=True)[1].astype(np.int32)
  return retrieval_lib.retrieval_metrics(
    x,
    ctx.embed_texts(texts),
    y_to_x=y_to_x,
    meaning_ids=meaning,
    subsets=_subsets(fields, subset_key, subset_names),
    ks=ks,
    x_name=ctx.image_modality,
    y_name=ctx.text_modality,
    block_size=ctx.block_size,
    mesh=ctx.mesh,
  )


def binding(
  ctx: Context,
  *,
  source: Source,
  caption_key: str = "caption",
  image_key: str = "image",
  negatives_key: str = "hard_negative_captions",
  valid_key: str | None = "hard_negative_valid",
  negative_types: Sequence[str] | None = None,
  subset_key: str | None = None,
  subset_names: Sequence[str] = ("seen", "heldout"),
) -> dict[str, float]:
  """Compositional binding: true caption against its hard negatives, per negative type.

  Each record's `negatives_key` holds one caption per type (`negative_types`, by default the
  source's own), `valid_key` says which exist. See `binding.binding_metrics`.
  """
  spec = ctx.source(source)
  x, fields = ctx.load(source, image_key=image_key)
  texts, y_to_x = _captions(_field(fields, caption_key), caption_key)
  first = np.unique(y_to_x, return_index=True)[1]
  y = ctx.embed_texts([texts[i] for i in first])
  negs = [list(n) for n in _field(fields, negatives_key)]
  kinds = tuple(negative_types or spec.negative_types or ())
  if any(len(n) != len(kinds) for n in negs):
    raise ValueError(
      f"Each record's {negatives_key!r} needs one entry per negative type "
      f"{kinds}; give negative_types."
    )
  valid = (
    np.ones((len(negs), len(kinds)), bool)
    if valid_key is None
    else np.asarray(_field(fields, valid_key), bool).reshape(len(negs), len(kinds))
  )
  img, col = np.nonzero(valid)
  if not len(img):
    raise ValueError(f"No valid hard negatives in source {dict(source)}.")
  negatives = ctx.embed_texts([negs[i][k] for i, k in zip(img, col)])
  types = np.asarray(kinds)[col]
  out = binding_lib.binding_metrics(x, y, negatives, negative_of=img, negative_types=types)
  for name, mask in _subsets(fields, subset_key, subset_names).items():
    keep = mask[img]
    if mask.any() and keep.any():
      new_index = np.cumsum(mask) - 1
      part = binding_lib.binding_metrics(
        x[mask],
        y[mask],
        negatives[keep],
        negative_of=new_index[img[keep]],
        negative_types=types[keep],
      )
      out.update({f"{name}/{k}": v for k, v in part.items()})
  return out


def geometry(
  ctx: Context,
  *,
  source: Source,
  caption_key: str = "caption",
  image_key: str = "image",
  separability: bool = True,
  report: bool = True,
) -> dict[str, float]:
  """Modality gap, alignment, uniformity, cosines and effective rank of images and captions.

  With `report`, the pairs are kept for the report's plots. See `geometry.geometry_metrics`.
  """
  x, fields = ctx.load(source, image_key=image_key)
  texts, y_to_x = _captions(_field(fields, caption_key), caption_key)
  first = np.unique(y_to_x, return_index=True)[1]
  y = ctx.embed_texts([texts[i] for i in first])
  if report:
    ctx.pairs[ctx.task_name or "geometry"] = (x, y)
  return geometry_lib.geometry_metrics(
    x,
    y,
    x_name=ctx.image_modality,
    y_name=ctx.text_modality,
    separability=separability,
    block_size=ctx.block_size,
    mesh=ctx.mesh,
  )


def _labelled(ctx: Context, source: Source, label_key: str, image_key: str):
  x, fields = ctx.load(source, image_key=image_key)
  labels = np.asarray(_field(fields, label_key))
  if labels.ndim != 1:
    raise ValueError(
      f"Probes need integer labels, got field {label_key!r} of shape {labels.shape}."
    )
  return x, labels.astype(np.int32)


def linear_probe(
  ctx: Context,
  *,
  train_source: Source,
  test_source: Source,
  label_key: str = "label",
  image_key: str = "image",
  l2_grid: Sequence[float] = probes.DEFAULT_L2_GRID,
  val_fraction: float = 0.2,
  steps: int = 100,
  seed: int = 0,
) -> dict[str, float]:
  """A logistic-regression probe on frozen image embeddings. See `probes.linear_probe`."""
  train_x, train_y = _labelled(ctx, train_source, label_key, image_key)
  test_x, test_y = _labelled(ctx, test_source, label_key, image_key)
  return probes.linear_probe(
    train_x,
    train_y,
    test_x,
    test_y,
    l2_grid=l2_grid,
    val_fraction=val_fraction,
    steps=steps,
    seed=seed,
  )


def knn(
  ctx: Context,
  *,
  train_source: Source,
  test_source: Source,
  label_key: str = "label",
  image_key: str = "image",
  k: int = 20,
  weighting: Literal["uniform", "similarity"] = "similarity",
  temperature: float = 0.07,
) -> dict[str, float]:
  """k-NN classification on frozen image embeddings. See `probes.knn_classifier`."""
  train_x, train_y = _labelled(ctx, train_source, label_key, image_key)
  test_x, test_y = _labelled(ctx, test_source, label_key, image_key)
  return probes.knn_classifier(
    train_x,
    train_y,
    test_x,
    test_y,
    k=min(k, len(train_x)),
    weighting=weighting,
    temperature=temperature,
    block_size=ctx.block_size,
    mesh=ctx.mesh,
  )


# kind: task. Configs name tasks by these keys.
def caption(
  ctx: Context,
  *,
  source: Source,
  caption_key: str = "caption",
  image_key: str = "image",
  subset_key: str | None = None,
  subset_names: Sequence[str] = ("seen", "heldout"),
  method: Literal["greedy", "beam"] = "greedy",
  beam_size: int = 4,
) -> dict[str, float]:
  """Captions generated for a source's images against its captions: exact match and token
  accuracy (`captioning.caption_metrics`), overall and, with `subset_key`, for the images with
  the flag off and on. Needs a model with a captioning decoder (`ctx.caption_fn`)."""
  if ctx.caption_fn is None:
    raise ValueError(
      "Task kind 'caption' needs a model with a captioning decoder (CoCa: model.decoder); "
      "this model has none."
    )
  src = ctx.source(source).source
  records = [src[i] for i in range(len(src))]
  if not records or image_key not in records[0] or caption_key not in records[0]:
    raise ValueError(
      f"Task 'caption' reads {image_key!r} and {caption_key!r} from the records of "
      f"{dict(source)}; fields: {sorted(records[0]) if records else 'none (empty)'}."
    )
  generated, references = [], []
  for idx in captioning.padded_batches(len(records), ctx.batch_size):
    batch = [records[i] for i in idx]
    images = ctx.prepare_inputs({ctx.image_modality: [r[image_key] for r in batch]})
    ids = np.asarray(ctx.caption_fn(images[ctx.image_modality], method=method, beam_size=beam_size))
    texts = [r[caption_key] for r in batch]
    refs = ctx.prepare_inputs({ctx.text_modality: [str(t) for t in texts]})[ctx.text_modality]
    keep = len(set(idx.tolist()))
    generated.append(ids[:keep])
    references.append(refs[:keep])
  fields = {k: [r[k] for r in records] for k in ([subset_key] if subset_key else [])}
  return captioning.caption_metrics(
    np.concatenate(generated),
    np.concatenate(references),
    subsets=_subsets(fields, subset_key, subset_names),
  )


TASKS: dict[str, Callable[..., dict[str, float]]] = {
  "zeroshot": zeroshot,
  "retrieval": retrieval,
  "binding": binding,
  "geometry": geometry,
  "linear_probe": linear_probe,
  "knn": knn,
  "caption": caption,
}
# Another task with each modality's mean, over a reference source, removed (GR-CLIP).
TASKS["gap_removed"] = gap_removal.gap_removed_task(
  TASKS, lambda fields, key: _captions(_field(fields, key), key)
)
