"""Captions of the built-in dataset: the zero-shot labelled views."""

from contrastive.data import shapes
from contrastive.data.shapes import captions


def test_labelled_views():
  views = captions.labelled_views()
  assert set(views) == {"shape", "colour", "count"}
  assert views["shape"].class_names == shapes.SHAPES and len(shapes.SHAPES) >= 8
  assert views["colour"].class_names == shapes.COLOURS and len(shapes.COLOURS) >= 8
  prompts = views["count"].prompts()
  assert len(prompts) == 3 and "two" in prompts[1][0]
  for name, view in views.items():
    src = shapes.ShapesSource(split=name, num_examples=100, image_size=8)
    labels = []
    for i in range(40):
      r = src[i]
      labels.append(r["label"])
      if name == "count":
        assert r["label"] == r["num_objects"] - 1
      else:
        assert r["num_objects"] == 1
        assert view.class_names[r["label"]] in r["caption"].split()
    assert len(set(labels)) > 1
  assert shapes.ShapesSource(split="train", num_examples=5, image_size=8)[0]["label"] == -1
