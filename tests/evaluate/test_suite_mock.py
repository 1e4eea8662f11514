"""tfds's mock data for the suite's tests (imported by them), and a fake model that embeds
anything.

`mock_tfds(n)` is `tfds.testing.mock_data` with each dataset's own feature spec (random records
drawn by tfds's `RandomFakeGenerator` from `builder.info.features`), read through
`builder.as_data_source`. tfds's default mock encodes every record when decoders are given (the
`tfds` source skips image decoding), which needs TensorFlow for images and fails on random
bounding boxes and nested sequences; here images are PNG-encoded with PIL, as a prepared
ArrayRecord dataset stores them, and the other features are left decoded, as tfds reads them.
"""

import contextlib
import io
import zlib

import numpy as np
from PIL import Image

DIM = 16


def _png(array) -> bytes:
  a = np.asarray(array, np.uint8)
  buf = io.BytesIO()
  Image.fromarray(a[..., 0] if a.ndim == 3 and a.shape[-1] == 1 else a).save(buf, "PNG")
  return buf.getvalue()


class _MockSource:
  def __init__(self, features, n: int, seed: int, skip_images: bool):
    from tensorflow_datasets.testing import mocking

    self._gen = mocking.RandomFakeGenerator(features, n, seed=seed, constant_dynamic_shape=True)
    self._features, self._n, self._skip = features, n, skip_images

  def __len__(self):
    return self._n

  def __getitem__(self, i):
    if not 0 <= i < self._n:
      raise IndexError(i)
    import tensorflow_datasets as tfds

    record = dict(self._gen[int(i)])
    if self._skip:
      for k, f in self._features.items():
        if isinstance(f, tfds.features.Image):
          record[k] = _png(record[k])
    return record


@contextlib.contextmanager
def mock_tfds(num_examples: int = 8):
  """Every tfds dataset reads `num_examples` random records of its own feature spec."""
  import tensorflow_datasets as tfds

  def as_data_source(builder, split, decoders=None, **kwargs):
    seed = zlib.crc32(f"{builder.name}/{split}".encode())
    return _MockSource(builder.info.features, num_examples, seed, decoders is not None)

  with tfds.testing.mock_data(num_examples=num_examples, as_data_source_fn=as_data_source):
    yield


def prepare(raw):
  """Images (encoded or arrays) to their mean colour tiled to `DIM`; texts to a random vector
  seeded by the text."""
  from contrastive.data import transforms

  out = {}
  if "image" in raw:
    out["image"] = np.stack(
      [
        np.resize(transforms.decode_image(x).astype(np.float32).mean(axis=(0, 1)), DIM)
        for x in raw["image"]
      ]
    )
  if "text" in raw:
    out["text"] = np.stack(
      [
        np.random.default_rng(zlib.crc32(t.encode())).normal(size=DIM).astype(np.float32)
        for t in raw["text"]
      ]
    )
  return out


def embed_fn(batch):
  return {k: v / (np.linalg.norm(v, axis=1, keepdims=True) + 1e-6) for k, v in batch.items()}


def test_mock_records_follow_the_dataset_feature_spec():
  import tensorflow_datasets as tfds

  with mock_tfds(3):
    source = tfds.builder("oxford_iiit_pet").as_data_source(
      "test", decoders={"image": tfds.decode.SkipDecoding()}
    )
    record = source[2]
  assert len(source) == 3
  assert isinstance(record["image"], bytes) and record["image"][:4] == b"\x89PNG"
  assert 0 <= int(record["label"]) < 37 and 0 <= int(record["species"]) < 2
