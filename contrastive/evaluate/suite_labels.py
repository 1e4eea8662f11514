"""Labels a dataset's records do not hold as one class index, derived as the published protocols do.

A zero-shot task names one by `label_transform` (a key of `TRANSFORMS`); it gets the records'
`label_key` field as a list and returns the labels the task scores, with the records to keep:

- `imagenet_a`, `imagenet_r`: tfds gives ImageNet-A and -R labels in ImageNet-1k's 1,000 classes;
  the published protocol scores among the dataset's own 200 classes only (the authors'
  `indices_in_1k`), so label `y` becomes its position in that list (`subset_indices`) and the
  class names are the 200 names at those positions.
- `real`: ImageNet-ReaL's `real_label` (a set of classes per image) as a `[num, 1000]` multi-hot;
  images with an empty set are left out (Beyer et al., 2020).
- `clevr_count`, `clevr_distance`, `kitti_distance`: VTAB's tasks (Zhai et al., 2019,
  `task_adaptation/data/{clevr,kitti}.py`), which CLIP and CLIP_benchmark evaluate: the number of
  objects less 3; the bin of the nearest object's depth (`pixel_coords[:, 2]`) among the
  thresholds `(0, 8, 8.5, 9, 9.5, 10, 100)`; the bin of the nearest vehicle's (type < 3: car, van,
  truck) distance `location[:, 2]` among `(-100, 8, 20, 999)`, 3 when there is no vehicle.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import functools
import json
import os
from typing import Any

import numpy as np

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "suite_data")

Transform = Callable[[Sequence[Any], int], tuple[np.ndarray, np.ndarray]]


@functools.cache
def _subsets() -> dict[str, Any]:
  with open(os.path.join(DATA_DIR, "imagenet_subsets.json")) as f:
    return json.load(f)


def subset_indices(name: str) -> tuple[int, ...]:
  """The positions among ImageNet-1k's classes of a 200-class subset (`imagenet_a`,
  `imagenet_r`), in the dataset's own class order."""
  table = {k: v for k, v in _subsets().items() if not k.startswith("_")}
  if name not in table:
    raise ValueError(f"Unknown ImageNet subset {name!r}; known: {sorted(table)}.")
  return tuple(table[name]["indices"])


def _subset(name: str, values: Sequence[Any], num_classes: int):
  indices = subset_indices(name)
  position = np.full(1000, -1, np.int64)
  position[list(indices)] = np.arange(len(indices))
  labels = np.asarray(values, np.int64).reshape(-1)
  if labels.size and (labels.min() < 0 or labels.max() >= 1000):
    raise ValueError(f"{name} labels must be ImageNet-1k classes in [0, 1000).")
  out = position[labels]
  return out, out >= 0


def _real(values: Sequence[Any], num_classes: int):
  multi_hot = np.zeros((len(values), num_classes), bool)
  for i, v in enumerate(values):
    v = np.asarray(v, np.int64).reshape(-1)
    if v.size and (v.min() < 0 or v.max() >= num_classes):
      raise ValueError(f"ReaL labels must lie in [0, {num_classes}), got {v.tolist()}.")
    multi_hot[i, v] = True
  return multi_hot, multi_hot.any(axis=1)


def _binned(dist: float, thresholds: Sequence[float]) -> int:
  """VTAB's `max(where(thrs - dist < 0))`: the last threshold below `dist` (-1: none)."""
  below = np.nonzero(np.asarray(thresholds) - dist < 0)[0]
  return int(below.max()) if below.size else -1


def _objects(values: Sequence[Any], key: str) -> list[np.ndarray]:
  try:
    return [np.asarray(v[key]) for v in values]
  except (KeyError, TypeError, IndexError) as e:
    raise ValueError(f"This label transform needs records whose field holds {key!r}.") from e


def _clevr_count(values: Sequence[Any], num_classes: int):
  labels = np.asarray([len(s) - 3 for s in _objects(values, "size")], np.int64)
  return labels, (labels >= 0) & (labels < num_classes)


def _clevr_distance(values: Sequence[Any], num_classes: int):
  thresholds = (0.0, 8.0, 8.5, 9.0, 9.5, 10.0, 100.0)
  labels = np.asarray(
    [
      _binned(float(np.min(c.reshape(-1, 3)[:, 2])), thresholds) if c.size else -1
      for c in _objects(values, "pixel_coords")
    ],
    np.int64,
  )
  return labels, (labels >= 0) & (labels < num_classes)


def _kitti_distance(values: Sequence[Any], num_classes: int):
  thresholds = (-100.0, 8.0, 20.0, 999.0)
  labels = []
  for kind, loc in zip(_objects(values, "type"), _objects(values, "location")):
    z = loc.reshape(-1, 3)[:, 2][kind.reshape(-1) < 3]
    labels.append(_binned(float(np.min(np.append(z, 1000.0))), thresholds))
  labels = np.asarray(labels, np.int64)
  return labels, (labels >= 0) & (labels < num_classes)


# name: (values of the label field, number of classes) -> (labels, keep mask).
TRANSFORMS: dict[str, Transform] = {
  "imagenet_a": functools.partial(_subset, "imagenet_a"),
  "imagenet_r": functools.partial(_subset, "imagenet_r"),
  "real": _real,
  "clevr_count": _clevr_count,
  "clevr_distance": _clevr_distance,
  "kitti_distance": _kitti_distance,
}


def transform(name: str, values: Sequence[Any], num_classes: int) -> tuple[np.ndarray, np.ndarray]:
  """`(labels, keep)`: the labels of the records (ints `[num]` or multi-hot `[num, classes]`) and
  a `[num]` bool mask of those the protocol scores."""
  if name not in TRANSFORMS:
    raise ValueError(f"Unknown label_transform {name!r}; known: {sorted(TRANSFORMS)}.")
  labels, keep = TRANSFORMS[name](values, num_classes)
  if not keep.any():
    raise ValueError(f"No record has a label under label_transform {name!r}.")
  return labels[keep], keep
