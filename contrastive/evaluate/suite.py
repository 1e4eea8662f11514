r"""The standard zero-shot table in one command: a suite of datasets, one table out.

    python -m contrastive.evaluate --pretrained hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K \
        --suite clip --suite_data_dir /data/tfds --output runs/b32_table
    python -m contrastive.evaluate --workdir runs/demo --suite quick --compare other/table.csv

A suite (`suite_datasets.SUITES`: `imagenet`, `clip`, `quick`, or a comma-separated list of
dataset names) becomes ordinary task configs (`suite_tasks`), run by the same evaluation as any
other tasks (`pretrained.evaluate_pretrained`, `workdir.evaluate_workdir`): each dataset's images
are embedded once, batched on the mesh (with a progress bar per dataset on a terminal, for an
imported checkpoint), and each distinct prompt once (the context's text cache serves every dataset
that shares prompts). A dataset not prepared in the tfds data dir is skipped with one line saying
how to prepare it. The table (`table_rows`) has one row per dataset and reported metric, then the
averages the papers report (over what ran):

    | dataset | metric | value | examples | classes | templates | source |

`write_table` writes it as `table.md` and `table.csv`; `compare` adds another run's CSV beside it
with the differences.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import csv
import os
import re
from typing import Any

from absl import logging
import ml_collections

from contrastive.evaluate import sources as sources_lib
from contrastive.evaluate import suite_datasets
from contrastive.evaluate.suite_datasets import Dataset

TABLE_MD, TABLE_CSV = "table.md", "table.csv"
COLUMNS = (
  "dataset",
  "group",
  "metric",
  "value",
  "examples",
  "classes",
  "templates",
  "status",
  "source",
)
GROUP_NAMES = {"imagenet": "ImageNet and variants", "zeroshot": "other zero-shot"}


def _base_split(split: str) -> str:
  return re.split(r"[\[+]", split, maxsplit=1)[0]


def _tfds_builder(d: Dataset, data_dir: str | None):
  import tensorflow_datasets as tfds

  return tfds.builder(d.tfds_name, data_dir=data_dir, try_gcs=False)


def unavailable(d: Dataset, *, data_dir: str | None, paths: Mapping[str, str]) -> str | None:
  """Why `d` cannot run here (one line), or None when its data is prepared."""
  if d.path_source:
    path = paths.get(d.name)
    if not path:
      return f"{d.name}: no ArrayRecord folder given (build one with contrastive.data.build)."
    return None if os.path.isdir(path) else f"{d.name}: {path} is not a directory."
  try:
    builder = _tfds_builder(d, data_dir)
  except Exception as e:  # tfds's own failure (an unknown name, a missing TensorFlow)
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return f"{d.name}: tfds cannot open {d.tfds_name!r} here ({first})."
  build = (
    f"`tfds build {d.tfds_name}{'' if data_dir is None else ' --data_dir ' + data_dir} "
    "--file_format=array_record`"
  )
  if _base_split(d.split) not in builder.info.splits:
    where = data_dir or "the default tfds data dir"
    return f"{d.name}: {d.tfds_name} is not prepared in {where}; prepare it with {build}."
  file_format = getattr(builder.info.file_format, "value", builder.info.file_format)
  if file_format not in (None, "array_record"):
    return f"{d.name}: {d.tfds_name} is prepared as {file_format}, not array_record: {build}."
  return None


def suite_tasks(
  suite: str | Sequence[str],
  *,
  data_dir: str | None = None,
  paths: Mapping[str, str] | None = None,
  num_examples: int | None = None,
  require_prepared: bool = True,
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
  """The task configs of a suite, and the datasets skipped with the reason.

  Args:
    suite: a name of `SUITES` or dataset names (see `suite_datasets.resolve`).
    data_dir: the tfds data dir.
    paths: ArrayRecord folders by dataset name (`flickr30k`).
    num_examples: keep the first ones of each dataset only.
    require_prepared: skip the datasets whose data is not prepared (False: build every task,
      e.g. under `tfds.testing.mock_data`).

  Returns:
    `({name: task config}, {name: why skipped})`.
  """
  paths = dict(paths or {})
  tasks, skipped = {}, {}
  for d in suite_datasets.resolve(suite):
    reason = unavailable(d, data_dir=data_dir, paths=paths) if require_prepared else None
    if reason is not None:
      logging.warning("Skipping %s", reason)
      skipped[d.name] = reason
      continue
    names = None
    if d.classes == "tfds":
      names = getattr(_tfds_builder(d, data_dir).info.features[d.label_key], "names", None)
    tasks[d.name] = d.task(
      data_dir=data_dir, path=paths.get(d.name), num_examples=num_examples, tfds_names=names
    )
  return tasks, skipped


class _Progress:
  """A source that draws a progress bar (tqdm, on a terminal) as its records are read."""

  def __init__(self, source, desc: str):
    self._source, self._desc, self._bar = source, desc, None

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int):
    if self._bar is None:
      import tqdm

      self._bar = tqdm.tqdm(total=len(self), desc=self._desc, unit="img", disable=None)
    self._bar.update(1)
    if self._bar.n >= len(self):
      self._bar.close()
    return self._source[index]


def progress_sources() -> dict[str, Any]:
  """The `tfds` and `arrayrecord` sources with a progress bar per dataset (pass as `sources=`)."""

  def wrap(factory, key):
    def make(**config):
      made = factory(**config)
      desc = str(config.get(key, ""))
      return sources_lib.EvalSource(
        _Progress(made.source, desc), made.class_names, made.templates, made.negative_types
      )

    return make

  return {
    "tfds": wrap(sources_lib.tfds, "dataset"),
    "arrayrecord": wrap(sources_lib.arrayrecord, "path"),
  }


def _count(task: Mapping[str, Any]) -> int | None:
  try:
    return len(sources_lib.make_source(task["source"]).source)
  except Exception:  # the count is informative only
    return None


def table_rows(
  suite: str | Sequence[str],
  tasks: Mapping[str, Mapping[str, Any]],
  metrics: Mapping[str, float],
  skipped: Mapping[str, str],
) -> list[dict[str, Any]]:
  """One row per dataset and reported metric, then the averages of each group that ran.

  `examples` is the number of records read (for ImageNet-ReaL, before the images without a label
  are left out); `value` is None for a skipped dataset (its `status` says why).
  """
  rows, by_group = [], {}
  for d in suite_datasets.resolve(suite):
    task = tasks.get(d.name)
    for metric in d.metrics:
      row = dict(
        dataset=d.name, group=d.group, metric=metric, value=None, examples=None, classes=None,
        templates=None, status=skipped.get(d.name, "not run"), source=d.source,
      )  # fmt: skip
      key = f"{d.name}/{metric}"
      if task is not None and key in metrics:
        row.update(value=float(metrics[key]), status="ran", examples=_count(task))
        if d.kind == "zeroshot":
          row.update(classes=len(task["class_names"]), templates=len(task["templates"]))
        by_group.setdefault(d.group, []).append(row["value"])
      rows.append(row)
  totals = {}
  for group, values in by_group.items():
    name = GROUP_NAMES.get(group, group)
    totals[f"mean {name}"] = values
  classification = by_group.get("imagenet", []) + by_group.get("zeroshot", [])
  if classification:
    totals["mean zero-shot classification"] = classification
  for name, values in totals.items():
    rows.append(
      dict(
        dataset=name,
        group="mean",
        metric="mean",
        value=sum(values) / len(values),
        examples=None,
        classes=None,
        templates=None,
        status=f"{len(values)} ran",
        source="",
      )  # fmt: skip
    )
  return rows


def read_table(path: str | os.PathLike) -> list[dict[str, Any]]:
  """The rows of a `table.csv` (values as floats, empty cells as None)."""
  with open(path, newline="") as f:
    rows = list(csv.DictReader(f))
  if rows and not {"dataset", "metric", "value"} <= set(rows[0]):
    raise ValueError(f"{path} is not a suite table: it has no dataset, metric and value columns.")
  for row in rows:
    row["value"] = float(row["value"]) if row.get("value") not in (None, "") else None
  return rows


def compare(rows: Sequence[Mapping[str, Any]], other: Sequence[Mapping[str, Any]]):
  """`rows` with `other` (another run's table) and `diff` (`value - other`) per row, matched by
  dataset and metric; a row the other table lacks gets None."""
  theirs = {(r["dataset"], r["metric"]): r.get("value") for r in other}
  out = []
  for row in rows:
    o = theirs.get((row["dataset"], row["metric"]))
    diff = None if o is None or row["value"] is None else row["value"] - o
    out.append({**row, "other": o, "diff": diff})
  return out


def _cell(value: Any, pct: bool) -> str:
  if value is None:
    return ""
  if isinstance(value, float):
    return f"{100 * value:.2f}" if pct else f"{value:.4f}"
  return str(value)


def markdown(rows: Sequence[Mapping[str, Any]]) -> str:
  """The table as Markdown, values in percent; skipped datasets listed under it."""
  extra = [c for c in ("other", "diff") if rows and c in rows[0]]
  head = ["dataset", "metric", "value (%)", *extra, "examples", "classes", "templates", "source"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  skipped = []
  for r in rows:
    if r["value"] is None:
      skipped.append(f"- {r['dataset']} ({r['metric']}): {r['status']}")
      continue
    cells = [r["dataset"], r["metric"], _cell(r["value"], True)]
    cells += [_cell(r[c], True) for c in extra]
    cells += [_cell(r.get(c), False) for c in ("examples", "classes", "templates", "source")]
    lines.append("| " + " | ".join(cells) + " |")
  ran = sum(r["status"] == "ran" for r in rows)
  lines.append("")
  lines.append(f"{ran} dataset metrics ran, {len(skipped)} skipped.")
  if skipped:
    lines += ["", "Skipped:", *skipped]
  return "\n".join(lines) + "\n"


def write_table(
  rows: Sequence[Mapping[str, Any]], output_dir: str | os.PathLike
) -> tuple[str, str]:
  """Writes `table.md` and `table.csv` (columns `COLUMNS`, then `other` and `diff` when
  compared); returns their paths."""
  os.makedirs(output_dir, exist_ok=True)
  md, csv_path = os.path.join(output_dir, TABLE_MD), os.path.join(output_dir, TABLE_CSV)
  with open(md, "w") as f:
    f.write(markdown(rows))
  columns = list(COLUMNS) + [c for c in ("other", "diff") if rows and c in rows[0]]
  with open(csv_path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for r in rows:
      writer.writerow({k: ("" if r.get(k) is None else r[k]) for k in columns})
  return md, csv_path


def _finish(suite, tasks, metrics, skipped, output_dir, compare_with):
  rows = table_rows(suite, tasks, metrics, skipped)
  if compare_with:
    rows = compare(rows, read_table(compare_with))
  if output_dir is not None:
    write_table(rows, output_dir)
  return rows


def run_pretrained(
  path: str | os.PathLike,
  suite: str | Sequence[str],
  *,
  name: str | None = None,
  image_size: int | None = None,
  max_len: int | None = None,
  data_dir: str | None = None,
  paths: Mapping[str, str] | None = None,
  num_examples: int | None = None,
  batch_size: int = 64,
  mesh=None,
  output_dir: str | os.PathLike | None = None,
  compare_with: str | os.PathLike | None = None,
  require_prepared: bool = True,
) -> list[dict[str, Any]]:
  """The suite on an imported checkpoint (a path, `hf-hub:ORG/NAME` or open_clip's `(name, tag)`,
  loaded by `models.load_pretrained(path, name=, image_size=, max_len=)`); returns the table's
  rows and writes it to `output_dir`."""
  from contrastive import models
  from contrastive.evaluate import pretrained

  tasks, skipped = suite_tasks(
    suite, data_dir=data_dir, paths=paths, num_examples=num_examples,
    require_prepared=require_prepared,
  )  # fmt: skip
  metrics = {}
  if tasks:
    kwargs = {k: v for k, v in dict(image_size=image_size, max_len=max_len).items() if v}
    pre = models.load_pretrained(path, name=name, **kwargs)
    metrics = pretrained.evaluate_pretrained(
      pre,
      tasks,
      batch_size=batch_size,
      mesh=mesh,
      output_dir=output_dir,
      report=False,
      sources=progress_sources(),
    )
  return _finish(suite, tasks, metrics, skipped, output_dir, compare_with)


def run_workdir(
  config: ml_collections.ConfigDict,
  workdir: str | os.PathLike,
  suite: str | Sequence[str],
  *,
  step: int | None = None,
  data_dir: str | None = None,
  paths: Mapping[str, str] | None = None,
  num_examples: int | None = None,
  output_dir: str | os.PathLike | None = None,
  compare_with: str | os.PathLike | None = None,
  require_prepared: bool = True,
) -> list[dict[str, Any]]:
  """The suite on a run's checkpoint (its model and data transforms, in place of its
  `eval.tasks`); returns the table's rows and writes it to `output_dir` (default
  `{workdir}/eval`)."""
  from contrastive.evaluate import workdir as workdir_lib

  tasks, skipped = suite_tasks(
    suite, data_dir=data_dir, paths=paths, num_examples=num_examples,
    require_prepared=require_prepared,
  )  # fmt: skip
  output_dir = os.path.join(os.fspath(workdir), "eval") if output_dir is None else output_dir
  metrics = {}
  if tasks:
    config = ml_collections.ConfigDict(config.to_dict())
    config.eval.tasks = ml_collections.ConfigDict(tasks)
    config.eval.report = False
    metrics = workdir_lib.evaluate_workdir(config, workdir, step=step, output_dir=output_dir)
  return _finish(suite, tasks, metrics, skipped, output_dir, compare_with)
