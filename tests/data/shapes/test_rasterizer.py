"""Drawing the built-in dataset: colours, positions, anti-aliased coverage."""

import numpy as np
import pytest

from contrastive.data import shapes
from contrastive.data.shapes import rasterizer


def test_drawn_colour_and_position():
  """A large object on the left is drawn in its colour, left of the centre."""
  for colour in range(len(shapes.COLOURS)):
    scene = shapes.Scene(
      ((shapes.SHAPES.index("square"), colour, 1),), shapes.POSITIONS.index("on the left")
    )
    rng = np.random.default_rng(colour)
    image = rasterizer.render(scene, rng, 64).astype(np.float32)
    distance = np.abs(image - rasterizer.RGB[colour]).max(-1)
    ys, xs = np.nonzero(distance < 20)
    assert len(xs) > 150, shapes.COLOURS[colour]
    assert xs.mean() < 28


@pytest.mark.parametrize(
  "name, area",
  [  # in units of the radius squared, from `_mask`
    ("circle", np.pi),
    ("ring", np.pi * (1 - 0.36)),
    ("square", 1.64**2),
    ("diamond", 2.0),
    ("triangle", 0.58 * 1.7**2),
    ("cross", 2 * 0.6 * 1.9 - 0.6**2),
    ("hexagon", 0.87 * (2 + 2 * (1 - 0.87 / 1.732))),
  ],
)
def test_drawn_coverage_is_the_shapes_area(name, area):
  """Anti-aliased: each pixel holds its covered share, so the shares add up to the area."""
  size, r, centre = 32, 0.25, 0.5 + 0.3 / 32  # a radius of 8 pixels, off the pixel grid
  lo, hi = int((centre - r) * size), int(np.ceil((centre + r) * size)) + 1
  cover = rasterizer.coverage(shapes.SHAPES.index(name), lo, hi, lo, hi, centre, centre, r, size)
  assert cover.min() == 0.0 and cover.max() == 1.0
  assert ((cover > 0) & (cover < 1)).sum() >= 12  # the edge is partly covered, not cut
  np.testing.assert_allclose(cover.sum(), area * (r * size) ** 2, rtol=0.02)


def test_large_images_keep_hard_edges():
  """From 128 pixels on a shape is sampled once per pixel (sub-pixel detail is a few % there)."""
  cover = rasterizer.coverage(shapes.SHAPES.index("circle"), 0, 60, 0, 60, 0.12, 0.12, 0.1, 224)
  assert set(np.unique(cover)) == {0.0, 1.0}
  assert abs(cover.sum() - np.pi * 22.4**2) < 0.02 * np.pi * 22.4**2
