"""ImageNet's class names and CLIP's templates, and naming them in a zero-shot task."""

import pytest

from contrastive import evaluate
from contrastive.evaluate import imagenet
from contrastive.evaluate import runner
from contrastive.evaluate import tasks
from contrastive.evaluate.context import Context


def test_the_class_names_are_imagenet_1k_in_label_order():
  names = evaluate.IMAGENET_CLASSNAMES
  assert len(names) == 1000
  assert names[:3] == ("tench", "goldfish", "great white shark")
  assert names[-1] == "toilet paper"
  assert names[207] == "Golden Retriever" and names[409] == "analog clock"
  assert all(isinstance(n, str) and n == n.strip() and n for n in names)
  # Two names repeat in OpenAI's list (missile, sunglasses: two synsets each); the rest differ.
  assert len(set(names)) == 998


@pytest.mark.parametrize(
  "templates,size,first,last",
  [
    (evaluate.OPENAI_IMAGENET_TEMPLATES, 80, "a bad photo of a {}.", "a tattoo of the {}."),
    (evaluate.SIMPLE_IMAGENET_TEMPLATES, 7, "itap of a {}.", "a photo of the small {}."),
  ],
)
def test_templates(templates, size, first, last):
  assert len(templates) == size == len(set(templates))
  assert templates[0] == first and templates[-1] == last
  assert all(t.count("{}") == 1 for t in templates)
  assert "a photo of a {}." in evaluate.OPENAI_IMAGENET_TEMPLATES
  assert set(evaluate.SIMPLE_IMAGENET_TEMPLATES) <= set(evaluate.OPENAI_IMAGENET_TEMPLATES)


def test_named_sets_and_unknown_names():
  assert imagenet.templates("imagenet80") is imagenet.OPENAI_IMAGENET_TEMPLATES
  assert imagenet.templates("imagenet7") is imagenet.SIMPLE_IMAGENET_TEMPLATES
  assert imagenet.class_names("imagenet") is imagenet.IMAGENET_CLASSNAMES
  assert imagenet.templates(["a {}."]) == ("a {}.",) and imagenet.templates(None) is None
  with pytest.raises(
    ValueError,
    match=r"Unknown template set 'imagenet18'; known names: "
    r"\['imagenet7', 'imagenet80'\]",
  ):
    imagenet.templates("imagenet18")
  with pytest.raises(ValueError, match=r"Unknown class-name set 'imagenet1k'"):
    imagenet.class_names("imagenet1k")


def test_check_tasks_refuses_an_unknown_named_set_before_anything_runs():
  source = dict(name="tfds", dataset="imagenet2012", split="validation")
  ok = runner.check_tasks(
    dict(inet=dict(kind="zeroshot", source=source, class_names="imagenet", templates="imagenet80"))
  )
  assert ok["inet"]["templates"] == "imagenet80"
  with pytest.raises(ValueError, match="Unknown template set 'openai'"):
    runner.check_tasks(dict(inet=dict(kind="zeroshot", source=source, templates="openai")))


def test_zeroshot_task_reads_named_templates(fake):
  embed_fn, prepare, sources = fake
  ctx = Context(embed_fn=embed_fn, prepare=prepare, batch_size=8, sources=sources)
  source = {"name": "fake", "n": 24, "classes": 6}
  names = [f"c{i}" for i in range(6)]
  m = tasks.zeroshot(ctx, source=source, class_names=names, templates="imagenet7")
  assert m["top1"] == 1.0
  # Every one of the 7 templates of the 6 classes was embedded (and cached) once.
  assert sum(k.startswith("text:") for k in ctx._cache) == 42
