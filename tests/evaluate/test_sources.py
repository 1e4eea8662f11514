"""Sources by name: the built-in dataset's views bring class names and templates."""

import jax.numpy as jnp
import numpy as np
import pytest

from contrastive.evaluate import sources


def test_synthetic_views():
  shape = sources.make_source(
    {"name": "synthetic", "split": "shape", "num_examples": 3, "image_size": 16}
  )
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


def test_arrayrecord_folder(tmp_path):
  import io

  from PIL import Image

  from contrastive.data import build

  def png(value):
    out = io.BytesIO()
    Image.fromarray(np.full((4, 4, 3), value, np.uint8)).save(out, format="PNG")
    return out.getvalue()

  examples = [
    build.Example(key=f"k{i}", image=png(i), captions=[f"caption {i}", "another"]) for i in range(5)
  ]
  build.write_dataset(examples, str(tmp_path), split="val", num_shards=2)
  made = sources.make_source(
    {"name": "arrayrecord", "path": str(tmp_path), "split": "val", "num_examples": 3}
  )
  assert len(made.source) == 3 and made.class_names is None
  assert sorted(made.source[i]["caption"][0] for i in range(3)) == [
    "caption 0",
    "caption 2",
    "caption 4",
  ]  # shards in turn: 0, 2, 4 are in shard 0


def test_errors():
  with pytest.raises(
    ValueError,
    match=r"Unknown evaluation source 'imagenet'; known: "
    r"\['arrayrecord', 'synthetic', 'tfds'\]",
  ):
    sources.make_source({"name": "imagenet"})
  with pytest.raises(ValueError, match=r"Bad options \['colour', 'num_examples', 'split'\]"):
    sources.make_source({"name": "synthetic", "split": "shape", "num_examples": 2, "colour": 1})


def test_data_sources_read_the_training_data_config():
  factory = sources.data_sources({"source": "synthetic", "image_size": 16})["data"]
  view = factory(split="colour", num_examples=5)
  assert len(view.source) == 5 and view.class_names[0] == "red"
  test = factory(split="test", num_examples=3)
  assert test.negative_types == ("attribute_swap", "relation_swap", "attribute_change")
  assert isinstance(test.source[2]["caption"], str)
  with pytest.raises(IndexError):
    test.source[3]


def _tiny_tfds(data_dir):
  """A two-class tfds dataset in ArrayRecord format, built without TensorFlow."""
  import io

  from PIL import Image
  import tensorflow_datasets as tfds

  class EvaluateTestColours(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict(
          {
            "picture": tfds.features.Image(shape=(8, 8, 3), encoding_format="png"),
            "colour": tfds.features.ClassLabel(names=["red_thing", "blue_thing"]),
          }
        ),
      )

    def _split_generators(self, dl_manager):
      return {"test": self._generate_examples()}

    def _generate_examples(self):
      for i in range(6):
        img = np.zeros((8, 8, 3), np.uint8)
        img[..., 0 if i % 2 == 0 else 2] = 200
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        yield i, {"picture": buf.getvalue(), "colour": i % 2}

  EvaluateTestColours(data_dir=data_dir, file_format="array_record").download_and_prepare(
    download_config=tfds.download.DownloadConfig(try_download_gcs=False)
  )
  return "evaluate_test_colours"


def test_tfds_zero_shot(tmp_path):
  import io

  from PIL import Image

  from contrastive.evaluate import runner

  name = _tiny_tfds(str(tmp_path))
  config = {
    "name": "tfds",
    "dataset": name,
    "split": "test",
    "data_dir": str(tmp_path),
    "image_key": "picture",
    "label_key": "colour",
  }
  made = sources.make_source(config)
  assert made.class_names == ("red thing", "blue thing") and len(made.source) == 6
  assert isinstance(made.source[0]["image"], bytes)  # left encoded

  table = np.eye(2, dtype=np.float32)

  def prepare(raw):  # decodes the PNGs: red is class 0, blue class 1
    if "image" in raw:
      pixels = [np.asarray(Image.open(io.BytesIO(b)))[0, 0] for b in raw["image"]]
      return {"image": np.array([int(p[2] > p[0]) for p in pixels], np.int32)}
    return {"text": np.array([int("blue" in t) for t in raw["text"]], np.int32)}

  m = runner.run_tasks(
    lambda b: {k: jnp.asarray(table)[v] for k, v in b.items()},
    {"colours": {"kind": "zeroshot", "source": config}},
    prepare=prepare,
    batch_size=4,
  )
  assert m["colours/top1"] == 1.0 and "colours/top5" not in m
