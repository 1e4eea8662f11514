"""The datasets of the standard zero-shot table, as data: tfds name, split, keys, class names,
templates, metric, and where each fact comes from.

Each `Dataset` becomes one ordinary task config (`Dataset.task`) for the existing `zeroshot` or
`retrieval` task over the existing `tfds` or `arrayrecord` source; `SUITES` names lists of them.

Where the facts come from (see docs/evaluation.md, "The standard table"):

- class names and templates: CLIP_benchmark's `en_classnames.json` and
  `en_zeroshot_classification_templates.json` (copied in `suite_data/`, with their source), CLIP's
  ImageNet names and 80 templates (`imagenet.py`, from open_clip's `zero_shot_metadata.py`), or
  the dataset's own tfds `ClassLabel` names, cleaned (`_`, `/` read as spaces), where
  CLIP_benchmark too uses the dataset's own names (Food-101, DTD, Cars, SUN397, RESISC45);
- metric: the CLIP paper's Table 9 (Radford et al., 2021): mean per-class accuracy for
  Oxford-IIIT Pets, Caltech-101 and Flowers-102 (and FGVC-Aircraft, not in tfds), top-1
  elsewhere; retrieval reports image-to-text and text-to-image recall@1/5/10;
- splits: the test split where the dataset has one; VTAB's splits (Zhai et al., 2019) where
  CLIP_benchmark reads the dataset through VTAB (EuroSAT and RESISC45: the last 20% of `train`;
  CLEVR: `validation`); COCO: tfds `coco_captions`'s `test`, the Karpathy 5k split.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import difflib
import functools
import json
import os
from typing import Any

from contrastive.evaluate import imagenet
from contrastive.evaluate import suite_labels

DATA_DIR = suite_labels.DATA_DIR
KINDS = ("zeroshot", "retrieval")
# What the table reports of a retrieval row: recall@5 both ways (open_clip's and CLIP_benchmark's).
RETRIEVAL_METRICS = ("image_to_text/recall@5", "text_to_image/recall@5")


@functools.cache
def _json(name: str) -> dict[str, Any]:
  with open(os.path.join(DATA_DIR, name)) as f:
    return {k: v for k, v in json.load(f).items() if not k.startswith("_")}


def templates(key: str) -> tuple[str, ...]:
  """A template set by key: `imagenet80`, or a CLIP_benchmark key, with `{c}` read as `{}`."""
  if key == "imagenet80":
    return imagenet.OPENAI_IMAGENET_TEMPLATES
  table = _json("templates.json")
  if key not in table:
    raise ValueError(f"Unknown template set {key!r}; known: {sorted(table) + ['imagenet80']}.")
  return tuple(t.replace("{c}", "{}") for t in table[key])


def _clean(name: str) -> str:
  """A tfds `ClassLabel` name as a phrase: `/a/abbey` -> `abbey`, `apple_pie` -> `apple pie`."""
  if name.startswith("/") and len(name) > 3 and name[2] == "/":
    name = name[3:]
  return " ".join(name.replace("_", " ").replace("/", " ").split())


def class_names(key: str, tfds_names: Sequence[str] | None = None) -> tuple[str, ...]:
  """Class names by key: `imagenet`, `imagenet_a`/`imagenet_r` (the 200 of CLIP's ImageNet
  names the subset keeps), `tfds` (the dataset's own names, cleaned: `tfds_names` needed), or a
  key of `suite_data/classnames.json`."""
  if key == "imagenet":
    return imagenet.IMAGENET_CLASSNAMES
  if key in ("imagenet_a", "imagenet_r"):
    return tuple(imagenet.IMAGENET_CLASSNAMES[i] for i in suite_labels.subset_indices(key))
  if key == "tfds":
    if not tfds_names:
      raise ValueError("The dataset has no class names of its own (no ClassLabel names).")
    return tuple(_clean(n) for n in tfds_names)
  table = _json("classnames.json")
  if key not in table:
    raise ValueError(
      f"Unknown class-name set {key!r}; known: {sorted(table) + ['imagenet', 'tfds']}."
    )
  return tuple(table[key])


@dataclasses.dataclass(frozen=True)
class Dataset:
  """One row of the table.

  Attributes:
    name: the row's name (and the task's: metrics are keyed `{name}/...`).
    tfds_name: the tfds dataset (with its config, e.g. `imagenet_v2/matched-frequency`); None for
      a source given by path (`path_source`).
    split: the tfds split read (slices allowed, e.g. `train[80%:]`).
    kind: `zeroshot` or `retrieval`.
    metric: the metric the table reports (a key of the zero-shot task's metrics); retrieval
      rows report `RETRIEVAL_METRICS`.
    classes: key of the class names (`class_names`); zero-shot only.
    templates: key of the templates (`templates`); zero-shot only.
    label_key: the tfds feature holding the label (or what a `label_transform` reads).
    label_transform: a key of `suite_labels.TRANSFORMS`, where the label is derived.
    caption_key: retrieval: the record field of the captions (`a/b` reaches into a dict).
    path_source: retrieval from an ArrayRecord folder (`contrastive.data.build`) given by path.
    group: `imagenet` (ImageNet and its variants), `zeroshot` (the other classification sets),
      `retrieval`: the table averages each group.
    source: where the protocol's facts for this row come from.
  """

  name: str
  tfds_name: str | None
  split: str
  kind: str = "zeroshot"
  metric: str = "top1"
  classes: str | None = "tfds"
  templates: str | None = None
  label_key: str = "label"
  label_transform: str | None = None
  caption_key: str = "caption"
  path_source: bool = False
  group: str = "zeroshot"
  source: str = "CLIP_benchmark"

  @property
  def metrics(self) -> tuple[str, ...]:
    """The metrics the table reports for this row."""
    return RETRIEVAL_METRICS if self.kind == "retrieval" else (self.metric,)

  def task(
    self,
    *,
    data_dir: str | None = None,
    path: str | None = None,
    num_examples: int | None = None,
    tfds_names: Sequence[str] | None = None,
  ) -> dict[str, Any]:
    """The task config (`contrastive.evaluate.tasks`) that evaluates this row.

    Args:
      data_dir: the tfds data dir (None: tfds's default).
      path: the ArrayRecord folder of a `path_source` row.
      num_examples: keep the first ones only (a quick look).
      tfds_names: the dataset's `ClassLabel` names, for `classes="tfds"`.
    """
    if self.path_source:
      if not path:
        raise ValueError(f"{self.name} reads an ArrayRecord folder: give its path.")
      source = dict(name="arrayrecord", path=path, split=self.split)
    else:
      source = dict(name="tfds", dataset=self.tfds_name, split=self.split, data_dir=data_dir)
      source["label_key"] = self.label_key  # renamed to `label` in the records
    if num_examples is not None:
      source["num_examples"] = int(num_examples)
    if self.kind == "retrieval":
      return dict(kind="retrieval", source=source, caption_key=self.caption_key)
    return dict(
      kind="zeroshot",
      source=source,
      class_names=list(class_names(self.classes, tfds_names)),
      templates=list(templates(self.templates)),
      label_transform=self.label_transform,
    )


def _imagenet(name: str, tfds_name: str, split: str, **kwargs) -> Dataset:
  return Dataset(
    name,
    tfds_name,
    split,
    classes=kwargs.pop("classes", "imagenet"),
    templates="imagenet80",
    group="imagenet",
    source=kwargs.pop("source", "CLIP (Radford et al., 2021): names and 80 templates"),
    **kwargs,
  )


_VTAB = "CLIP_benchmark's VTAB task (Zhai et al., 2019)"
_MPC = "; mean per-class accuracy as in CLIP's Table 9"

DATASETS: tuple[Dataset, ...] = (
  _imagenet("imagenet1k", "imagenet2012", "validation"),
  _imagenet("imagenet_v2", "imagenet_v2/matched-frequency", "test"),
  _imagenet("imagenet_sketch", "imagenet_sketch", "test"),
  _imagenet(
    "imagenet_a",
    "imagenet_a",
    "test",
    classes="imagenet_a",
    label_transform="imagenet_a",
    source="CLIP names and templates; scored among the 200 classes of ImageNet-A's own list",
  ),
  _imagenet(
    "imagenet_r",
    "imagenet_r",
    "test",
    classes="imagenet_r",
    label_transform="imagenet_r",
    source="CLIP names and templates; scored among the 200 classes of ImageNet-R's own list",
  ),
  _imagenet(
    "imagenet_real",
    "imagenet2012_real",
    "validation",
    label_key="real_label",
    label_transform="real",
    source="CLIP names and templates; ReaL label sets (Beyer et al., 2020), empty sets left out",
  ),
  Dataset("cifar10", "cifar10", "test", classes="cifar10", templates="cifar10"),
  Dataset("cifar100", "cifar100", "test", classes="cifar100", templates="cifar100"),
  Dataset("food101", "food101", "validation", templates="food101"),
  Dataset(
    "pets",
    "oxford_iiit_pet",
    "test",
    metric="mean_per_class",
    classes="pets",
    templates="pets",
    source="CLIP_benchmark" + _MPC,
  ),
  Dataset(
    "flowers",
    "oxford_flowers102",
    "test",
    metric="mean_per_class",
    classes="flowers",
    templates="flowers",
    source="CLIP_benchmark" + _MPC,
  ),
  Dataset("dtd", "dtd", "test", templates="dtd"),
  Dataset(
    "eurosat", "eurosat", "train[80%:]", classes="eurosat", templates="eurosat", source=_VTAB
  ),
  Dataset("resisc45", "resisc45", "train[80%:]", templates="resisc45", source=_VTAB),
  Dataset("svhn", "svhn_cropped", "test", classes="svhn", templates="svhn"),
  Dataset("mnist", "mnist", "test", classes="mnist", templates="mnist"),
  Dataset("stl10", "stl10", "test", classes="stl10", templates="stl10"),
  Dataset(
    "caltech101",
    "caltech101",
    "test",
    metric="mean_per_class",
    classes="caltech101_vtab",
    templates="caltech101",
    source="CLIP_benchmark (its VTAB-order names)" + _MPC,
  ),
  Dataset("sun397", "sun397", "test", templates="sun397"),
  Dataset("cars", "cars196", "test", templates="cars"),
  Dataset("pcam", "patch_camelyon", "test", classes="pcam", templates="pcam"),
  Dataset(
    "clevr_count",
    "clevr",
    "validation",
    classes="clevr_count_all",
    templates="clevr_count_all",
    label_key="objects",
    label_transform="clevr_count",
    source=_VTAB,
  ),
  Dataset(
    "clevr_distance",
    "clevr",
    "validation",
    classes="clevr_closest_object_distance",
    templates="clevr_closest_object_distance",
    label_key="objects",
    label_transform="clevr_distance",
    source=_VTAB,
  ),
  Dataset(
    "kitti_distance",
    "kitti",
    "test",
    classes="kitti_closest_vehicle_distance",
    templates="kitti_closest_vehicle_distance",
    label_key="objects",
    label_transform="kitti_distance",
    source=_VTAB,
  ),
  Dataset("dmlab", "dmlab", "test", classes="dmlab", templates="dmlab", source=_VTAB),
  Dataset(
    "diabetic_retinopathy",
    "diabetic_retinopathy_detection/btgraham-300",
    "test",
    classes="diabetic_retinopathy",
    templates="diabetic_retinopathy",
    source=_VTAB,
  ),
  Dataset(
    "coco",
    "coco_captions",
    "test",
    kind="retrieval",
    classes=None,
    label_key="captions",  # renamed to `label`: the captions are `label/text`
    caption_key="label/text",
    group="retrieval",
    source="tfds coco_captions 'test': the Karpathy 5k split, 5 captions an image",
  ),
  Dataset(
    "flickr30k",
    None,
    "test",
    kind="retrieval",
    classes=None,
    path_source=True,
    group="retrieval",
    source="an ArrayRecord folder from contrastive.data.build (Karpathy 1k test split)",
  ),
)
BY_NAME: dict[str, Dataset] = {d.name: d for d in DATASETS}

SUITES: dict[str, tuple[str, ...]] = {
  "imagenet": tuple(d.name for d in DATASETS if d.group == "imagenet"),
  "clip": tuple(d.name for d in DATASETS),
  "quick": ("cifar10", "cifar100", "stl10", "eurosat", "pets"),
}


def _unknown(what: str, name: str, known: Sequence[str]) -> ValueError:
  close = difflib.get_close_matches(name, known, n=len(known), cutoff=0.0)
  return ValueError(f"Unknown {what} {name!r}; known (closest first): {', '.join(close)}.")


def resolve(suite: str | Sequence[str]) -> tuple[Dataset, ...]:
  """The datasets of a named suite (`SUITES`), of dataset names, or of a mix of both (a list, or
  a comma-separated string), in order, each once."""
  parts = [s.strip() for s in suite.split(",")] if isinstance(suite, str) else list(suite)
  known = list(SUITES) + list(BY_NAME)
  out = []
  for part in filter(None, parts):
    if part not in SUITES and part not in BY_NAME:
      what = "suite or dataset" if len(parts) == 1 else "dataset"
      raise _unknown(what, part, known if len(parts) == 1 else list(BY_NAME) + list(SUITES))
    out += [BY_NAME[n] for n in SUITES.get(part, (part,)) if BY_NAME[n] not in out]
  if not out:
    raise ValueError("The suite names no dataset.")
  return tuple(out)
