r"""A run's objective as a weighted sum of named terms.

.. math::
  L = \sum_k w_k L_k

`config.loss` is the first term (named by `loss.name`, weight `loss.weight`, its options and
side inputs as always), so a config with one loss is the one-term case; `config.loss.terms`
adds more, `{term_name: {name, weight, ...}}`. A term is one of:

- `RingTerm`: a registered objective (`contrastive.losses.LOSSES`) on the modalities'
  embeddings, over the ring, with its side inputs and options; with `teacher`, its side data
  `teacher_x`, `teacher_y` are a teacher's embeddings of the first and second modality,
  computed in the step (`distill`: ALBEF's momentum distillation with `teacher="ema"`,
  open_clip's distillation with `teacher="frozen"`). See `contrastive.train.teachers`.
- `CaptionTerm` (`name="caption"`): the token cross-entropy of a captioning decoder
  (`losses.caption_loss`) on the model's `extras["caption_logits"]` and the text's tokens
  `1..L`; a per-example term, computed on the batch as it is.

```python
config.loss.name = "softmax"                          # CoCa: L = L_con + 2 L_cap
config.loss.terms = dict(caption=dict(name="caption", weight=2.0, label_smoothing=0.1))
```

Each term's value is logged as `train/loss/<term>` beside the total `train/loss`; the first
term is called by its loss's name.
"""

from __future__ import annotations

from collections.abc import Mapping
import dataclasses
from typing import Any

from contrastive import losses

CAPTION = "caption"
TEACHERS = ("ema", "frozen")
# Keys of a `loss.terms` entry that the trainer reads; any other is an option of the loss.
TERM_KEYS = ("name", "weight", "side_inputs", "teacher", "momentum", "teacher_from", "teacher_name")
CAPTION_KEYS = ("name", "weight", "pad_id", "label_smoothing")
TEACHER_SIDE = ("teacher_x", "teacher_y")


@dataclasses.dataclass(frozen=True)
class SideInput:
  """Side data of a ring term taken from the batch: as it is, or embedded by one of the towers.

  With `modality=None`, `batch[batch_key]` is passed to the objective as `side[side_key]` as it
  is (e.g. `meaning_id` `[batch]` as the `labels` of `supcon`). Otherwise `batch[batch_key]`,
  `[batch, k, ...]` inputs of modality `modality` (e.g. the tokenized hard-negative captions
  `[batch, 3, seq_len]`), is embedded by that tower into `[batch, k, embed_dim]` first; its
  gradient flows back into the tower like the main embeddings'.
  """

  side_key: str
  modality: str | None
  batch_key: str


@dataclasses.dataclass(frozen=True)
class Teacher:
  """Where a teacher term's teacher comes from.

  Attributes:
    kind: `"ema"`: an exponential moving average of the model being trained, updated after
      each optimizer step, `theta_t <- m theta_t + (1 - m) theta` (ALBEF: m = 0.995);
      `"frozen"`: a model loaded from `source` and never updated.
    momentum: `m` of the EMA (`"ema"` only).
    source: a run directory or a checkpoint as downloaded (`"frozen"` only).
    source_name: the architecture name where `source`'s files do not give it.
  """

  kind: str
  momentum: float | None = None
  source: str | None = None
  source_name: str | None = None


@dataclasses.dataclass(frozen=True)
class RingTerm:
  """A registered objective over the ring (see the module docstring)."""

  name: str
  objective: losses.Objective
  weight: float = 1.0
  side_keys: tuple[str, ...] = ()
  side_inputs: tuple[SideInput, ...] = ()
  options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  teacher: Teacher | None = None


@dataclasses.dataclass(frozen=True)
class CaptionTerm:
  """The captioning decoder's token cross-entropy (`losses.caption_loss`)."""

  name: str
  weight: float = 1.0
  pad_id: int = 0
  label_smoothing: float = 0.0


Term = RingTerm | CaptionTerm


def caption_term(term_name: str, spec: Mapping[str, Any]) -> CaptionTerm:
  """A checked `loss.terms.<term_name>` entry with `name="caption"`."""
  where = f"loss.terms.{term_name}"
  unknown = sorted(set(spec) - set(CAPTION_KEYS))
  if unknown:
    raise ValueError(
      f"{where}: a caption term takes {list(CAPTION_KEYS)}, got unknown {unknown[0]!r}."
    )
  pad_id = spec.get("pad_id", 0)
  if isinstance(pad_id, bool) or not isinstance(pad_id, int):
    raise ValueError(f"{where}.pad_id must be a token id (int), got {pad_id!r}.")
  eps = spec.get("label_smoothing", 0.0)
  if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0.0 <= eps < 1.0:
    raise ValueError(f"{where}.label_smoothing must be a number in [0, 1), got {eps!r}.")
  return CaptionTerm(
    name=term_name,
    weight=float(spec.get("weight", 1.0)),  # finite: checked by `run.config.resolve`
    pad_id=pad_id,
    label_smoothing=float(eps),
  )


def teacher_of(term_name: str, spec: Mapping[str, Any], objective: losses.Objective):
  """The checked `Teacher` of a ring term's entry, or None when it names none."""
  where = f"loss.terms.{term_name}"
  kind = spec.get("teacher")
  teacher_keys = ("momentum", "teacher_from", "teacher_name")
  if kind is None:
    given = [k for k in teacher_keys if spec.get(k) is not None]
    if given:
      raise ValueError(f"{where}.{given[0]} is set, but the term has no teacher (teacher=...).")
    return None
  if kind not in TEACHERS:
    raise ValueError(f"{where}.teacher must be one of {list(TEACHERS)}, got {kind!r}.")
  if not set(TEACHER_SIDE) <= set(objective.side_keys):
    readers = [n for n, o in losses.LOSSES.items() if set(TEACHER_SIDE) <= set(o.side_keys)]
    raise ValueError(
      f"{where}: loss {objective.name!r} reads no teacher embeddings ({list(TEACHER_SIDE)}); "
      f"a teacher term needs one that does: {readers}."
    )
  if kind == "ema":
    m = spec.get("momentum")
    if isinstance(m, bool) or not isinstance(m, (int, float)) or not 0.0 <= m <= 1.0:
      raise ValueError(
        f"{where}.momentum must be a number in [0, 1] for an EMA teacher (ALBEF: 0.995), got {m!r}."
      )
    if spec.get("teacher_from") is not None:
      raise ValueError(f"{where}.teacher_from is for teacher='frozen'; an EMA teacher has none.")
    return Teacher("ema", momentum=float(m))
  source = spec.get("teacher_from")
  if not isinstance(source, str) or not source:
    raise ValueError(
      f"{where}.teacher_from must name the frozen teacher's checkpoint (a run directory or a "
      f"checkpoint as downloaded), got {source!r}."
    )
  if spec.get("momentum") is not None:
    raise ValueError(f"{where}.momentum is for teacher='ema'; a frozen teacher does not move.")
  return Teacher("frozen", source=source, source_name=spec.get("teacher_name"))


def split_options(spec: Mapping[str, Any]) -> dict[str, Any]:
  """A ring term entry's keyword options of its loss (all but the trainer's keys)."""
  return {k: v for k, v in spec.items() if k not in TERM_KEYS}


def values_metrics(values: Mapping[str, Any]) -> dict[str, Any]:
  """`{"loss/<term>": value}`: the per-term metrics of a step with more than one term."""
  return {f"loss/{name}": value for name, value in values.items()} if len(values) > 1 else {}
