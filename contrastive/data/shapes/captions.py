"""The caption grammar of the built-in dataset, its zero-shot prompts and its word vocabulary.

A caption names every attribute of every object and the layout, in one of a few templates per
number of objects: "a small red circle on the left", "a large blue square above a small green
triangle", "a small red star, a large white ring and a small cyan cross from left to right".

The labelled views `shape`, `colour` (one object each) and `count` (one to three objects) are
zero-shot classification tasks; `labelled_views()` gives their class names and prompt templates.
"""

from __future__ import annotations

import dataclasses
import re

from contrastive.data.shapes import scenes

COUNT_NAMES = ("one", "two", "three")

# Caption templates by number of objects; `{0}`, `{1}`, `{2}` are objects, `{r}` the layout.
_TEMPLATES = (
  ("a {0} {r}", "{r}, a {0}", "there is a {0} {r}", "a picture of a {0} {r}"),
  ("a {0} {r} a {1}", "there is a {0} {r} a {1}", "a picture of a {0} {r} a {1}"),
  (
    "a {0}, a {1} and a {2} {r}",
    "{r}: a {0}, a {1} and a {2}",
    "a row of shapes {r}: a {0}, a {1} and a {2}",
  ),
)


def num_templates(num_objects: int) -> int:
  """How many caption templates a scene of `num_objects` objects has."""
  return len(_TEMPLATES[num_objects - 1])


def object_phrase(obj: tuple[int, int, int]) -> str:
  shape, colour, size = obj
  return f"{scenes.SIZES[size]} {scenes.COLOURS[colour]} {scenes.SHAPES[shape]}"


def caption(scene: scenes.Scene, template: int = 0) -> str:
  """The caption of `scene` in template number `template` (taken modulo their number)."""
  n = len(scene.objects)
  layout = (scenes.POSITIONS, scenes.RELATIONS, scenes.DIRECTIONS)[n - 1][scene.layout]
  templates = _TEMPLATES[n - 1]
  return templates[template % len(templates)].format(
    *(object_phrase(o) for o in scene.objects), r=layout
  )


@dataclasses.dataclass(frozen=True)
class LabelledView:
  """A zero-shot classification task on the built-in dataset.

  Attributes:
    name: the split that holds its images (`"shape"`, `"colour"` or `"count"`); records carry
      the class index under `"label"`.
    class_names: the name of each class, in label order.
    templates: prompt templates with one `{}` for a class name.
  """

  name: str
  class_names: tuple[str, ...]
  templates: tuple[str, ...]

  def prompts(self) -> list[list[str]]:
    """`[num_classes][num_templates]` prompt strings."""
    return [[t.format(c) for t in self.templates] for c in self.class_names]


def labelled_views() -> dict[str, LabelledView]:
  """The zero-shot views `shape`, `colour` and `count`, by name.

  Shape and colour prompts are ensembles over the attributes a one-object caption always names
  with them (CLIP's prompt ensembling): every such caption says "a {size} {colour} {shape}
  {position}", so the bare "a circle" is out of distribution for the text tower, while the
  ensemble over every size, colour (or shape) and position marginalizes the other attributes
  out; score it with `evaluate.marginal_log_probs` (zero-shot `ensemble="marginal"`).
  """
  shape_templates = tuple(
    f"a {size} {colour} {{}} {position}"
    for size in scenes.SIZES
    for colour in scenes.COLOURS
    for position in scenes.POSITIONS
  )
  colour_templates = tuple(
    f"a {size} {{}} {shape} {position}"
    for size in scenes.SIZES
    for shape in scenes.SHAPES
    for position in scenes.POSITIONS
  )
  return {
    "shape": LabelledView("shape", scenes.SHAPES, shape_templates),
    "colour": LabelledView("colour", scenes.COLOURS, colour_templates),
    "count": LabelledView(
      "count",
      COUNT_NAMES,
      ("{} shapes", "a picture of {} shapes", "there are {} shapes", "{} objects"),
    ),
  }


def vocabulary() -> tuple[str, ...]:
  """Every word and punctuation mark of the captions and zero-shot prompts, sorted."""
  phrases = (
    scenes.SHAPES
    + scenes.COLOURS
    + scenes.SIZES
    + scenes.POSITIONS
    + scenes.RELATIONS
    + scenes.DIRECTIONS
    + COUNT_NAMES
    + sum(_TEMPLATES, ())
    + sum((v.templates for v in labelled_views().values()), ())
  )
  words = set()
  for phrase in phrases:
    words.update(re.findall(r"\w+|[^\w\s]", re.sub(r"\{\w*\}", " ", phrase.lower())))
  return tuple(sorted(words))
