"""Per-example transforms: decoding, crops, normalization, text augmentation, bad records."""

import numpy as np
import pytest

from contrastive.data import tokenizers as T
from contrastive.data import transforms as tr


def test_decode_image_kinds(encoded):
  jpeg_bytes, png_bytes, CORRUPT = encoded.jpeg, encoded.png, encoded.corrupt
  assert tr.decode_image(jpeg_bytes(0, (24, 20))).shape == (20, 24, 3)
  assert tr.decode_image(np.frombuffer(png_bytes(3), np.uint8).tobytes()).shape == (16, 16, 3)
  assert tr.decode_image(np.zeros((5, 6), np.uint8)).shape == (5, 6, 3)
  assert tr.decode_image(np.zeros((5, 6, 4), np.uint8)).shape == (5, 6, 3)
  assert tr.decode_image(np.array(png_bytes(1), dtype=object)).shape == (16, 16, 3)
  for bad in (CORRUPT, b"", np.zeros((2, 2, 2), np.uint8)):
    with pytest.raises(ValueError):
      tr.decode_image(bad)


def test_crops_and_normalize():
  image = np.random.default_rng(0).integers(0, 255, (30, 50, 3), dtype=np.uint8)
  assert tr.center_crop_resize(image, 16).shape == (16, 16, 3)
  same = np.ascontiguousarray(image[:, :30])
  assert tr.center_crop_resize(same, 30) is same
  rng = np.random.default_rng(1)
  crops = [tr.random_resized_crop(image, rng, 12, scale=(0.2, 0.5)) for _ in range(4)]
  assert all(c.shape == (12, 12, 3) and c.dtype == np.uint8 for c in crops)
  assert not np.array_equal(crops[0], crops[1])
  for kind, (mean, std) in tr.NORMALIZATIONS.items():
    want = (image / 255.0 - np.array(mean)) / np.array(std)
    got = tr.normalize(image, kind)
    assert got.dtype == np.float32 and got.shape == image.shape
    np.testing.assert_allclose(got, want, atol=1e-5)
  with pytest.raises(ValueError, match="'imagenet'.*known"):
    tr.normalize(image, "imagenet")


def test_text_helpers():
  assert tr.caption_list(b"  hi ") == ["hi"]
  assert tr.caption_list(np.array([b"a", b"", b"c"], dtype=object)) == ["a", "c"]
  assert tr.caption_list(["", "  "]) == []
  rng = np.random.default_rng(0)
  ids = list(range(10, 40))
  deleted = tr.augment_tokens(ids, rng, delete_prob=0.5)
  assert 0 < len(deleted) < len(ids) and set(deleted) <= set(ids)
  assert len(tr.augment_tokens(ids, rng, delete_prob=0.999)) >= 1
  masked = tr.augment_tokens(ids, rng, mask_prob=0.5, mask_id=2)
  assert len(masked) == len(ids) and 0 < masked.count(2) < len(ids)


def _transform(**kwargs):
  defaults = dict(
    image_key="image", text_key="caption", image_size=8, tokenizer=T.ByteTokenizer(), max_len=16
  )
  return tr.ExampleTransform(**{**defaults, **kwargs})


def test_example_transform_outputs_and_bad_records(encoded):
  jpeg_bytes, CORRUPT = encoded.jpeg, encoded.corrupt
  t = _transform(training=True, passthrough=("index",))
  record = {"image": jpeg_bytes(0), "caption": ["first", "second", ""], "index": 4}
  seen = set()
  for seed in range(20):
    out = t(record, np.random.default_rng(seed))
    assert out["image"].shape == (8, 8, 3) and out["image"].dtype == np.float32
    assert out["text"].shape == (16,) and out["text"].dtype == np.int32
    assert out["index"] == 4 and out["index"].dtype == np.int32 and out["mask"]
    seen.add(T.detokenize(t.tokenizer, out["text"]))
  assert seen == {"first", "second"}  # caption sampling, never the empty one
  ev = _transform(training=False)
  assert T.detokenize(ev.tokenizer, ev(record, np.random.default_rng(0))["text"]) == "first"
  rng = np.random.default_rng(0)
  assert tr.is_bad(t({"image": CORRUPT, "caption": "x"}, rng))
  assert tr.is_bad(t({"image": jpeg_bytes(1), "caption": ["", " "]}, rng))
  assert tr.is_bad(t({tr.ERROR_KEY: "boom", "index": 3}, rng))
  nested = _transform(image_key="a/img", text_key="a/txt")
  assert not tr.is_bad(nested({"a": {"img": jpeg_bytes(2), "txt": b"bytes caption"}}, rng))


def test_example_transform_checks():
  class NoMask(T.ByteTokenizer):
    mask_id = None

  with pytest.raises(ValueError, match="mask token"):
    _transform(tokenizer=NoMask(), text_mask_prob=0.1)
  with pytest.raises(ValueError, match="'lab'"):
    _transform(normalization="lab")
  with pytest.raises(ValueError, match="crop_scale"):
    _transform(crop_scale=(0.5, 1.5))
