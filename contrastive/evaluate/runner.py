"""Running the evaluation tasks a config names, and writing the report.

The trainer calls `evaluate` at intervals (and the CLI once on a checkpoint):

```python
metrics = evaluate.evaluate(
    jax.jit(lambda b: model.apply({"params": params}, b, train=False)[0]), config.eval.tasks,
    prepare=prepare, batch_size=config.eval.batch_size, mesh=mesh,
    workdir=os.path.join(workdir, "eval"), step=step)
```

`tasks` maps a task name (the metric prefix) to `{"kind": <key of TASKS>, **options}`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import inspect
import os
import time
from typing import Any

from absl import logging
import jax
from jax.sharding import Mesh
import ml_collections

from contrastive import parallel
from contrastive.evaluate import imagenet
from contrastive.evaluate import report as report_lib
from contrastive.evaluate import similarity
from contrastive.evaluate.context import Context
from contrastive.evaluate.context import Prepare
from contrastive.evaluate.tasks import TASKS


def _plain(config: Any) -> Any:
  if isinstance(config, ml_collections.ConfigDict):
    return config.to_dict()
  if isinstance(config, Mapping):
    return {k: _plain(v) for k, v in config.items()}
  return config


def check_tasks(
  tasks: Mapping[str, Mapping[str, Any]] | ml_collections.ConfigDict,
) -> dict[str, dict[str, Any]]:
  """Validates a tasks config before anything runs; returns it as plain dicts.

  Every task needs a known `kind` and only that task's options (its required ones included);
  errors name the task, the bad key and the accepted ones.
  """
  tasks = _plain(tasks)
  if not isinstance(tasks, Mapping) or not tasks:
    raise ValueError(f"tasks must be a non-empty mapping of name to task config, got {tasks!r}.")
  out = {}
  for name, config in tasks.items():
    if not isinstance(config, Mapping):
      raise ValueError(f"Task {name!r} must be a mapping with a 'kind', got {config!r}.")
    config = dict(config)
    kind = config.pop("kind", None)
    if kind not in TASKS:
      raise ValueError(f"Task {name!r} has unknown kind {kind!r}; known: {sorted(TASKS)}.")
    params = inspect.signature(TASKS[kind]).parameters
    options = [p for p in params if p != "ctx"]
    unknown = sorted(set(config) - set(options))
    if unknown:
      raise ValueError(f"Task {name!r} ({kind}) has unknown option(s) {unknown}; known: {options}.")
    missing = [
      p for p in options if params[p].default is inspect.Parameter.empty and p not in config
    ]
    if missing:
      raise ValueError(f"Task {name!r} ({kind}) needs option(s) {missing}.")
    if kind == "zeroshot":  # a misspelt named set fails here, not after other tasks have run
      imagenet.class_names(config.get("class_names"))
      imagenet.templates(config.get("templates"))
    out[name] = {"kind": kind, **config}
  return out


def run_tasks(
  embed_fn: Callable[[dict[str, jax.Array]], Mapping[str, jax.Array]],
  tasks: Mapping[str, Mapping[str, Any]] | ml_collections.ConfigDict,
  *,
  prepare: Prepare,
  batch_size: int,
  mesh: Mesh | None = None,
  sources: Mapping[str, Callable[..., Any]] | None = None,
  image_modality: str = "image",
  text_modality: str = "text",
  batch_axes: Sequence[str] = parallel.BATCH_AXES,
  block_size: int = similarity.DEFAULT_BLOCK_SIZE,
  jit: bool = False,
  logit_scale: float | None = None,
  caption_fn: Callable[..., Any] | None = None,
  context: Context | None = None,
) -> dict[str, float]:
  """Runs every task of `tasks` and returns their metrics, keyed `"{task name}/{metric}"`.

  Args:
    embed_fn: `batch -> {modality: [batch, dim]}` (see `context`).
    tasks: `{name: {"kind": ..., **options}}`; checked first (`check_tasks`).
    prepare: raw batch -> model inputs (see `context`).
    batch_size: the fixed evaluation batch size.
    mesh: optional; batches are placed on it and similarity rows split over it.
    sources: extra evaluation-source factories by name.
    image_modality, text_modality: the model's modality names.
    batch_axes: the mesh axes of the batch dimension.
    block_size: the largest similarity tile.
    jit: wrap `embed_fn` in `jax.jit` here (else the caller has jitted it).
    logit_scale: the model's logit scale, for zero-shot `ensemble="marginal"`.
    caption_fn: a model with a decoder's caption generator, for `caption` tasks (see
      `context`).
    context: reuse a `Context` (its caches, and its kept `pairs` for a report).

  Returns:
    Flat float metrics.
  """
  tasks = check_tasks(tasks)
  ctx = context or Context(
    embed_fn=embed_fn,
    prepare=prepare,
    batch_size=batch_size,
    mesh=mesh,
    batch_axes=tuple(batch_axes),
    image_modality=image_modality,
    text_modality=text_modality,
    sources=sources,
    block_size=block_size,
    jit=jit,
    logit_scale=logit_scale,
    caption_fn=caption_fn,
  )
  metrics = {}
  for name, config in tasks.items():
    options = dict(config)
    kind = options.pop("kind")
    start = time.perf_counter()
    ctx.task_name = name
    result = TASKS[kind](ctx, **options)
    metrics.update({f"{name}/{k}": float(v) for k, v in result.items()})
    logging.info("Evaluation task %r (%s) took %.1f s.", name, kind, time.perf_counter() - start)
  return metrics


def evaluate(
  embed_fn: Callable[[dict[str, jax.Array]], Mapping[str, jax.Array]],
  tasks: Mapping[str, Mapping[str, Any]] | ml_collections.ConfigDict,
  *,
  prepare: Prepare,
  batch_size: int,
  workdir: str | os.PathLike | None = None,
  step: int | None = None,
  mesh: Mesh | None = None,
  report: bool = True,
  sources: Mapping[str, Callable[..., Any]] | None = None,
  image_modality: str = "image",
  text_modality: str = "text",
  batch_axes: Sequence[str] = parallel.BATCH_AXES,
  block_size: int = similarity.DEFAULT_BLOCK_SIZE,
  jit: bool = False,
  logit_scale: float | None = None,
  caption_fn: Callable[..., Any] | None = None,
) -> dict[str, float]:
  """`run_tasks`, then (on process 0, with a `workdir`) the history line and the report.

  The report's embedding plots use the pairs of the first `geometry` task; `curves.png` draws
  `history.jsonl`, to which this evaluation is appended when `step` is given.

  Args:
    embed_fn, tasks, prepare, batch_size, mesh, sources, image_modality, text_modality,
      batch_axes, block_size, jit, logit_scale, caption_fn: as for `run_tasks`.
    workdir: where `metrics.json`, `history.jsonl` and the PNGs go; None: no files.
    step: the training step (recorded in the files).
    report: draw the plots (False: only `metrics.json` and the history).

  Returns:
    The metrics of `run_tasks`.
  """
  ctx = Context(
    embed_fn=embed_fn,
    prepare=prepare,
    batch_size=batch_size,
    mesh=mesh,
    batch_axes=tuple(batch_axes),
    image_modality=image_modality,
    text_modality=text_modality,
    sources=sources,
    block_size=block_size,
    jit=jit,
    logit_scale=logit_scale,
    caption_fn=caption_fn,
  )
  metrics = run_tasks(embed_fn, tasks, prepare=prepare, batch_size=batch_size, context=ctx)
  if workdir is not None and jax.process_index() == 0:
    if step is not None:
      report_lib.append_history(workdir, step, metrics)
    if report:
      x, y = next(iter(ctx.pairs.values()), (None, None))
      report_lib.write_report(
        workdir,
        metrics,
        x=x,
        y=y,
        names=(ctx.image_modality, ctx.text_modality),
        history=report_lib.read_history(workdir),
        step=step,
      )
    else:
      report_lib.write_metrics(workdir, metrics, step=step)
  return metrics


def default_tasks(
  *,
  num_examples: int = 256,
  image_size: int = 64,
  seed: int = 0,
  num_heldout: int = 8,
  probe: bool = False,
) -> ml_collections.ConfigDict:
  """Evaluation tasks on the built-in dataset, as a config snippet for `config.eval.tasks`.

  Zero-shot on the `shape`, `colour` and `count` views (shape and colour with the marginal
  ensemble over their nuisance attributes, which needs the model's `logit_scale`); retrieval
  (a hit of the same meaning counts), binding and geometry on the `test` split with seen and
  held-out combinations reported apart; with `probe`, a linear probe and k-NN of the shape
  labels. `image_size`, `seed` and `num_heldout` must match the training data's.
  """

  def source(split: str, n: int = num_examples, **extra) -> dict[str, Any]:
    return dict(
      name="synthetic",
      split=split,
      num_examples=n,
      image_size=image_size,
      seed=seed,
      num_heldout=num_heldout,
      **extra,
    )

  test = source("test")
  tasks = {
    "zeroshot_shape": dict(kind="zeroshot", source=source("shape"), ensemble="marginal"),
    "zeroshot_colour": dict(kind="zeroshot", source=source("colour"), ensemble="marginal"),
    "zeroshot_count": dict(kind="zeroshot", source=source("count")),
    "retrieval": dict(
      kind="retrieval", source=test, meaning_key="meaning_id", subset_key="heldout"
    ),
    "binding": dict(kind="binding", source=test, subset_key="heldout"),
    "geometry": dict(kind="geometry", source=test),
  }
  if probe:
    # The probe's train set is a second seed of the shape view, so no test image is seen.
    probe_train = source("shape", 4 * num_examples)
    probe_train["seed"] = seed + 1
    tasks["probe_shape"] = dict(
      kind="linear_probe", train_source=probe_train, test_source=source("shape")
    )
    tasks["knn_shape"] = dict(kind="knn", train_source=probe_train, test_source=source("shape"))
  return ml_collections.ConfigDict(tasks)
