"""Sources by name: the built-in dataset's views bring class names and templates."""

import pytest

from contrastive.evaluate import sources


def test_synthetic_views():
  shape = sources.make_source({"name": "synthetic", "split": "shape", "num_examples": 3,
                               "image_size": 16})
  assert len(shape.source) == 3 and "circle" in shape.class_names
  assert all("{}" in t for t in shape.templates)
  record = shape.source[0]
  assert record["image"].shape == (16, 16, 3) and 0 <= record["label"] < len(shape.class_names)
  test = sources.make_source({"name": "synthetic", "split": "test", "num_examples": 2})
  assert test.class_names is None
  assert test.negative_types == ("attribute_swap", "relation_swap", "attribute_change")


def test_extra_sources_and_bare_sources():
  made = sources.make_source({"name": "mine", "n": 4}, sources={"mine": lambda n: list(range(n))})
  assert isinstance(made, sources.EvalSource) and made.source == [0, 1, 2, 3]


def test_errors():
  with pytest.raises(ValueError, match=r"Unknown evaluation source 'imagenet'; known: "
                                       r"\['synthetic', 'tfds'\]"):
    sources.make_source({"name": "imagenet"})
  with pytest.raises(ValueError, match=r"Bad options \['colour', 'num_examples', 'split'\]"):
    sources.make_source({"name": "synthetic", "split": "shape", "num_examples": 2,
                         "colour": 1})
