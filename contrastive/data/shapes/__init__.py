"""The built-in dataset: procedurally drawn shapes with compositional captions.

Every example is a pure function of `(seed, split, index)`: one to three objects, each a shape
(8), a colour (8) and a size (2), placed on a varied background, and a caption that names every
attribute and the layout ("a small red circle on the left", "a large blue square above a small
green triangle", "a small red star, a large white ring and a small cyan cross from left to
right"), with three compositional hard negatives. Nothing is downloaded and nothing is stored.

One module per idea:

- `scenes`: what an image shows (`Scene`: objects and layout), its canonical meaning
  (`meaning_id`) and the held-out (colour, shape) pairs (`heldout_pairs`).
- `captions`: the caption grammar (`caption`), the zero-shot views `shape`, `colour` and `count`
  (`labelled_views`) and the closed word vocabulary (`vocabulary`).
- `negatives`: the attribute-swap, relation-swap and attribute-change negatives of a scene.
- `rasterizer`: a scene drawn as an image (`render`), anti-aliased below 128 pixels.
- `draws`: the random draws of one record, from one generator.
- `source`: `ShapesSource`, the grain random-access source that ties them together; the data
  config's source `"synthetic"` reads it.
"""

from contrastive.data.shapes.captions import COUNT_NAMES
from contrastive.data.shapes.captions import LabelledView
from contrastive.data.shapes.captions import caption
from contrastive.data.shapes.captions import labelled_views
from contrastive.data.shapes.captions import vocabulary
from contrastive.data.shapes.negatives import HARD_NEGATIVE_KINDS
from contrastive.data.shapes.negatives import hard_negatives
from contrastive.data.shapes.rasterizer import render
from contrastive.data.shapes.scenes import COLOURS
from contrastive.data.shapes.scenes import DIRECTIONS
from contrastive.data.shapes.scenes import POSITIONS
from contrastive.data.shapes.scenes import RELATIONS
from contrastive.data.shapes.scenes import SHAPES
from contrastive.data.shapes.scenes import SIZES
from contrastive.data.shapes.scenes import Scene
from contrastive.data.shapes.scenes import canonical
from contrastive.data.shapes.scenes import heldout_pairs
from contrastive.data.shapes.scenes import meaning_id
from contrastive.data.shapes.source import SPLITS
from contrastive.data.shapes.source import ShapesSource

__all__ = [
  "COLOURS",
  "COUNT_NAMES",
  "DIRECTIONS",
  "HARD_NEGATIVE_KINDS",
  "LabelledView",
  "POSITIONS",
  "RELATIONS",
  "SHAPES",
  "SIZES",
  "SPLITS",
  "Scene",
  "ShapesSource",
  "canonical",
  "caption",
  "hard_negatives",
  "heldout_pairs",
  "labelled_views",
  "meaning_id",
  "render",
  "vocabulary",
]
