"""Sources by name: the registry contract, a tfds ArrayRecord dataset read without TensorFlow."""

import numpy as np
import pytest

from contrastive.data import config as config_lib
from contrastive.data import pipeline
from contrastive.data import sources
from contrastive.data.transforms import ERROR_KEY

tfds = pytest.importorskip("tensorflow_datasets")


class ContrastiveDataTestCaptions(tfds.core.GeneratorBasedBuilder):
  """Six images with a caption, a nested alt text and a label; record 4 has no caption."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(
      builder=self,
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Image(shape=(None, None, 3)),
          "caption": tfds.features.Text(),
          "meta": {"alt": tfds.features.Text()},
          "label": tfds.features.ClassLabel(names=["even", "odd"]),
        }
      ),
    )

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples(6), "test": self._generate_examples(2)}

  def _generate_examples(self, n):
    from PIL import Image

    for i in range(n):
      image = Image.fromarray(np.full((10 + i, 12, 3), 20 * i, np.uint8))
      yield (
        i,
        {
          "image": image,
          "caption": "" if i == 4 else f"caption {i}",
          "meta": {"alt": f"alt {i}"},
          "label": i % 2,
        },
      )


@pytest.fixture
def tfds_dir(tmp_path):
  builder = ContrastiveDataTestCaptions(data_dir=str(tmp_path), file_format="array_record")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return str(tmp_path)


def _config(**kwargs):
  cfg = config_lib.default_config()
  cfg.update(kwargs)
  return cfg


def test_tfds_source_reads_without_tensorflow(tfds_dir):
  cfg = _config(source="tfds", label_key="label", image_size=8, batch_size=2)
  cfg.tfds.name = "contrastive_data_test_captions"
  cfg.tfds.data_dir = tfds_dir
  src = sources.make_source(cfg, split="train")
  assert len(src) == 6 and set(src.fields) == {"image", "caption", "meta", "label"}
  record = src[0]
  assert isinstance(record["image"], bytes) and record["index"] == 0  # decoded by the pipeline
  it = pipeline.make_pipeline(cfg, split="train", training=False)
  batches = list(it)
  assert it.num_batches == 3 and len(batches) == 3
  labels = np.concatenate([b["label"] for b in batches])
  masks = np.concatenate([b["mask"] for b in batches])
  assert masks.sum() == 5 and it.num_skipped == 1  # the empty caption
  texts = [it.tokenizer.decode(t) for b in batches for t, m in zip(b["text"], b["mask"]) if m]
  for text, label in zip(texts, labels[masks]):
    assert int(text.split()[1]) % 2 == label
  cfg.text_key = "meta/alt"
  first = next(pipeline.make_pipeline(cfg, split="test", training=False))
  assert it.tokenizer.decode(first["text"][0]).startswith("alt ")


def test_tfds_errors(tfds_dir, tmp_path):
  cfg = _config(source="tfds")
  with pytest.raises(ValueError, match="needs data.tfds.name"):
    sources.make_source(cfg, split="train")
  cfg.tfds.name = "contrastive_data_test_captions"
  cfg.tfds.data_dir = tfds_dir
  with pytest.raises(ValueError, match="'validation'.*known: \\['test', 'train'\\]"):
    sources.make_source(cfg, split="validation")
  cfg.text_key = "captions"
  with pytest.raises(ValueError, match="text_key='captions'.*fields"):
    sources.make_source(cfg, split="train")
  cfg.tfds.data_dir = str(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match="nowhere"):
    sources.make_source(cfg, split="train")


def test_registry_contract(tmp_path, arrayrecord_dir):
  """Every registered source gives records with its declared fields and an index."""
  configs = {
    "synthetic": _config(image_size=16),
    "arrayrecord": _config(source="arrayrecord"),
    "tfds": None,
    "xor": _config(source="xor", image_size=16),
  }
  configs["arrayrecord"].arrayrecord.path = arrayrecord_dir
  assert set(configs) == set(sources.SOURCES)
  for name, cfg in configs.items():
    if cfg is None:
      continue  # covered above with a prepared builder
    src = sources.make_source(cfg, split="train")
    assert isinstance(src, sources.Source) and len(src) > 0, name
    record = src[1]
    assert set(src.fields) <= set(record) and record["index"] == 1
    assert src.dataset()[1]["index"] == 1
    assert "Source" in repr(src.data)
  with pytest.raises(
    ValueError, match="'webdataset'.*known: \\['arrayrecord', 'synthetic', 'tfds', 'xor'\\]"
  ):
    sources.make_source(_config(source="webdataset"), split="train")
  with pytest.raises(ValueError, match="needs data.arrayrecord.path"):
    sources.make_source(_config(source="arrayrecord"), split="train")
  with pytest.raises(ValueError, match="label_key='klass'"):
    sources.make_source(_config(label_key="klass"), split="train")


def test_iter_captions(arrayrecord_dir):
  cfg = _config(source="arrayrecord")
  cfg.arrayrecord.path = arrayrecord_dir
  captions = list(sources.iter_captions(sources.make_source(cfg, split="train")))
  assert len(captions) == 24 and all(c.startswith("caption ") for c in captions)
  synthetic = sources.make_source(_config(), split="train")
  assert len(list(sources.iter_captions(synthetic, limit=5))) == 5


def test_unreadable_records_become_errors():
  class Flaky:
    def __len__(self):
      return 3

    def __getitem__(self, i):
      if i == 1:
        raise OSError("disk says no")
      return {"x": i}

  safe = sources.SafeSource(Flaky())
  assert safe[0] == {"x": 0, "index": 0}
  assert safe[1] == {ERROR_KEY: "OSError: disk says no", "index": 1}
