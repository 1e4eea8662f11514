"""For notebooks: look at records, embed and classify a few inputs, tabulate and show results.

    emb = evaluate.Embedder(model, params, prepare)       # or train.load_run(workdir)
    pred, probs = emb.zeroshot(images, class_names, templates)
    evaluate.image_grid(images, [class_names[i] for i in pred])
    evaluate.metrics_table({"softmax": m1, "dcl": m2}, keys=["eval/zeroshot_shape/top1"])
    evaluate.show_report(workdir)                          # the report's PNGs, inline

Every function returns a value (a figure, a table, arrays) that a notebook displays as the
cell's result; none needs IPython except `show_report`'s inline display, which falls back to
returning the paths.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import dataclasses
import glob
import os
from typing import Any, Literal

import flax.linen as nn
import jax
import numpy as np

from contrastive.evaluate import zeroshot


def examples_by_field(source: Any, num: int, *, start: int = 0) -> dict[str, Any]:
  """`num` records of a random-access source (`data.make_source(...)`), field by field.

  Returns:
    `{field: values}`: array fields stacked (`image`: `[num, H, W, 3]`), the rest as lists.
  """
  if num < 1 or start < 0 or start + num > len(source):
    raise ValueError(f"Records {start}..{start + num - 1} asked of a source of {len(source)}.")
  rows = [source[i] for i in range(start, start + num)]
  out = {}
  for key in rows[0]:
    values = [row[key] for row in rows]
    out[key] = np.stack(values) if isinstance(values[0], np.ndarray) else values
  return out


def image_grid(
  images: Any, titles: Sequence[str] | None = None, *, columns: int = 8, size: float = 1.6
):
  """A matplotlib figure of `images` (`[n, H, W, 3]`, uint8 or floats in [0, 1]) with titles."""
  import matplotlib.pyplot as plt

  images = np.asarray(images)
  if images.ndim != 4:
    raise ValueError(f"image_grid takes [n, H, W, C] images, got shape {images.shape}.")
  if titles is not None and len(titles) != len(images):
    raise ValueError(f"{len(titles)} titles for {len(images)} images.")
  rows = -(-len(images) // columns)
  cols = min(columns, len(images))
  fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows * 1.25), squeeze=False)
  for i, ax in enumerate(axes.flat):
    ax.axis("off")
    if i < len(images):
      ax.imshow(images[i])
      if titles is not None:
        ax.set_title(_wrap(titles[i]), fontsize=7)
  fig.tight_layout()
  plt.close(fig)  # the figure is the cell's value; closing keeps it from showing twice
  return fig


def _wrap(text: str, width: int = 24) -> str:
  words, lines, line = str(text).split(), [], ""
  for word in words:
    if line and len(line) + len(word) + 1 > width:
      lines.append(line)
      line = word
    else:
      line = f"{line} {word}".strip()
  return "\n".join(lines + [line])


@dataclasses.dataclass
class Embedder:
  """A model with its parameters and input preparation: embeds raw images and texts.

  Attributes:
    model: a `models.TowerModel`.
    params: its `params` collection.
    prepare: raw batch (`{"image": uint8 images, "text": strings}`) -> model inputs, e.g.
      `evaluate.configured.make_prepare(config.data)` or
      `evaluate.pretrained.make_prepare(pre.data)`.
  """

  model: nn.Module
  params: Any
  prepare: Callable[[Mapping[str, Any]], Mapping[str, Any]]

  @classmethod
  def from_pretrained(cls, pre: Any) -> Embedder:
    """An imported checkpoint (`models.load_pretrained`), with its own input settings."""
    from contrastive import models
    from contrastive.evaluate import pretrained

    return cls(models.make_model(pre.model_config), pre.params, pretrained.make_prepare(pre.data))

  def __post_init__(self):
    self._apply = jax.jit(
      lambda params, batch: self.model.apply({"params": params}, batch, train=False)
    )

  def embed(self, modality: str, values: Sequence[Any]) -> np.ndarray:
    """`[n, embed_dim]` unit-norm embeddings of raw `values` of one modality."""
    embeddings, _ = self._apply(self.params, dict(self.prepare({modality: list(values)})))
    return np.asarray(embeddings[modality])

  @property
  def scale(self) -> float:
    """The model's logit scale (the clipped `exp(log_scale)`)."""
    return float(self._apply(self.params, {})[1]["scale"])

  def zeroshot(
    self,
    images: Sequence[Any],
    class_names: Sequence[str],
    templates: Sequence[str],
    *,
    ensemble: Literal["mean", "marginal"] = "mean",
  ) -> tuple[np.ndarray, np.ndarray]:
    """Zero-shot classification of raw images by their prompts' embeddings.

    Args:
      images: raw images (uint8 `[H, W, 3]` each).
      class_names, templates: the prompts are `template.format(class_name)`.
      ensemble: `"mean"` (CLIP's prompt ensemble: one normalized mean embedding per class) or
        `"marginal"` (each class scored by all its prompts, `zeroshot.marginal_log_probs`).

    Returns:
      `(predictions [n] int, probabilities [n, num_classes])`.
    """
    if ensemble not in ("mean", "marginal"):
      raise ValueError(f"ensemble must be 'mean' or 'marginal', got {ensemble!r}.")
    texts = zeroshot.prompts(class_names, templates)
    per_template = self.embed("text", texts).reshape(len(class_names), len(templates), -1)
    x = self.embed("image", list(images))
    if ensemble == "marginal":
      probs = np.exp(zeroshot.marginal_log_probs(x, per_template, scale=self.scale))
    else:
      logits = self.scale * x @ zeroshot.class_prototypes(per_template).T
      probs = np.exp(logits - logits.max(axis=1, keepdims=True))
      probs /= probs.sum(axis=1, keepdims=True)
    return probs.argmax(axis=1), probs


class Table:
  """A table of metrics that renders as HTML in a notebook and as markdown elsewhere."""

  def __init__(self, header: Sequence[str], rows: Sequence[Sequence[Any]]):
    self.header, self.rows = list(header), [list(r) for r in rows]

  @staticmethod
  def _cell(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)

  def markdown(self) -> str:
    lines = ["| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header)]
    lines += ["| " + " | ".join(self._cell(v) for v in row) + " |" for row in self.rows]
    return "\n".join(lines)

  __str__ = __repr__ = markdown

  def _repr_markdown_(self) -> str:
    return self.markdown()

  def _repr_html_(self) -> str:
    head = "".join(f"<th>{h}</th>" for h in self.header)
    body = "".join(
      "<tr>" + "".join(f"<td>{self._cell(v)}</td>" for v in row) + "</tr>" for row in self.rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def metrics_table(
  runs: Mapping[str, Mapping[str, float]] | Mapping[str, float],
  *,
  keys: Sequence[str] | None = None,
) -> Table:
  """Metrics side by side: one row per metric, one column per run.

  Args:
    runs: `{run name: metrics}` (e.g. what `train.train_and_evaluate` returns), or one run's
      metrics.
    keys: the metrics to show, in order; default every key any run has, sorted.
  """
  if runs and all(isinstance(v, (int, float)) for v in runs.values()):
    runs = {"value": runs}
  if keys is None:
    keys = sorted({k for metrics in runs.values() for k in metrics})
  unknown = [k for k in keys if not any(k in metrics for metrics in runs.values())]
  if unknown:
    raise KeyError(f"No run has the metrics {unknown}.")
  rows = [[key] + [metrics.get(key, "") for metrics in runs.values()] for key in keys]
  return Table(["metric", *runs], rows)


def plot_comparison(
  runs: Mapping[str, Mapping[str, float]], keys: Sequence[str], *, title: str | None = None
):
  """A grouped bar chart of `keys` for each run (accuracies, gap, uniformity...)."""
  import matplotlib.pyplot as plt

  missing = {name: [k for k in keys if k not in m] for name, m in runs.items()}
  missing = {name: ks for name, ks in missing.items() if ks}
  if missing:
    raise KeyError(f"Metrics missing from runs: {missing}.")
  fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(keys) * len(runs) / 2 + 2), 3.5))
  width = 0.8 / len(runs)
  for i, (name, metrics) in enumerate(runs.items()):
    ax.bar(np.arange(len(keys)) + i * width, [metrics[k] for k in keys], width, label=name)
  ax.set_xticks(np.arange(len(keys)) + width * (len(runs) - 1) / 2)
  ax.set_xticklabels([k.removeprefix("eval/") for k in keys], rotation=30, ha="right", fontsize=8)
  ax.legend()
  if title:
    ax.set_title(title)
  fig.tight_layout()
  plt.close(fig)
  return fig


def report_images(workdir: str | os.PathLike) -> list[str]:
  """The report's PNGs of a run (`{workdir}/eval/*.png`) or of an evaluation directory."""
  directory = os.fspath(workdir)
  if os.path.isdir(os.path.join(directory, "eval")):
    directory = os.path.join(directory, "eval")
  paths = sorted(glob.glob(os.path.join(directory, "*.png")))
  if not paths:
    raise FileNotFoundError(
      f"No report PNGs in {directory} (was the run evaluated with eval.report=True?)."
    )
  return paths


def show_report(workdir: str | os.PathLike) -> list[str]:
  """Displays the report's PNGs inline in a notebook; returns their paths."""
  paths = report_images(workdir)
  try:
    from IPython import display
  except ImportError:
    return paths
  for path in paths:
    display.display(display.Markdown(f"**{os.path.basename(path)}**"), display.Image(path))
  return paths
