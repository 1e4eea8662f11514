"""The ArrayRecord image-text record format."""

import pytest

from contrastive.data import records


def test_record_round_trip():
  image = bytes(range(256)) * 3
  data = records.encode_record(image=image, captions=["a", "ünï ✓", ""], key="dir/x.jpg")
  out = records.decode_record(data)
  assert out == {"image": image, "caption": ["a", "ünï ✓", ""], "key": "dir/x.jpg"}


@pytest.mark.parametrize(
  "data", [b"", b"CIT1", b"XXXX\x05\x00\x00\x00hello", b"CIT1\xff\x00\x00\x00{}"]
)
def test_garbage_is_rejected(data):
  with pytest.raises(ValueError):
    records.decode_record(data)


def test_info_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    records.read_info(str(tmp_path / "missing"))
  with pytest.raises(FileNotFoundError, match="dataset_info.json"):
    records.read_info(str(tmp_path))
  records.write_info(str(tmp_path), {"format": "other"})
  with pytest.raises(ValueError, match="format 'other'"):
    records.read_info(str(tmp_path))
  records.write_info(
    str(tmp_path),
    {
      "format": records.FORMAT,
      "splits": {"train": {"shards": ["train-00000-of-00001.array_record"]}},
    },
  )
  with pytest.raises(ValueError, match="'test'.*known: \\['train'\\]"):
    records.split_paths(str(tmp_path), "test")
  with pytest.raises(FileNotFoundError, match="train-00000-of-00001"):
    records.split_paths(str(tmp_path), "train")
