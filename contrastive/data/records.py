"""The project's image-text ArrayRecord format, written by `contrastive.data.build`.

A dataset is a directory:

    dataset_info.json                       format, fields, splits (examples, captions, shards)
    {split}-{i:05d}-of-{n:05d}.array_record one record per image
    tokenizer.json                          optional, a BPE vocabulary fitted on the captions

A record is `b"CIT1"`, a little-endian uint32 header length, a UTF-8 JSON header
`{"caption": [str, ...], "key": str}` and the image file's bytes, unchanged (JPEG, PNG, ...).
Read back, a record is the dict `{"image": bytes, "caption": list[str], "key": str}`.
"""

from __future__ import annotations

from collections.abc import Sequence
import json
import os
import struct
from typing import Any

FORMAT = "contrastive.image_text/1"
INFO_FILE = "dataset_info.json"
TOKENIZER_FILE = "tokenizer.json"
FIELDS = ("image", "caption", "key")
_MAGIC = b"CIT1"
_HEADER = struct.Struct("<4sI")


def encode_record(*, image: bytes, captions: Sequence[str], key: str) -> bytes:
  """One record: the image file's bytes, its captions and its key (e.g. the file name)."""
  header = json.dumps({"caption": list(captions), "key": key}, ensure_ascii=False).encode()
  return _HEADER.pack(_MAGIC, len(header)) + header + bytes(image)


def decode_record(data: bytes) -> dict[str, Any]:
  """The inverse of `encode_record`.

  Raises:
    ValueError: bytes that are not a record of this format.
  """
  if len(data) < _HEADER.size:
    raise ValueError(f"record of {len(data)} bytes is shorter than its header")
  magic, size = _HEADER.unpack_from(data)
  if magic != _MAGIC or _HEADER.size + size > len(data):
    raise ValueError(f"not a {FORMAT} record (magic {magic!r}, header {size} bytes)")
  header = json.loads(data[_HEADER.size : _HEADER.size + size].decode())
  return {"image": data[_HEADER.size + size :], "caption": header["caption"], "key": header["key"]}


def shard_name(split: str, index: int, count: int) -> str:
  return f"{split}-{index:05d}-of-{count:05d}.array_record"


def read_info(path: str) -> dict[str, Any]:
  """The `dataset_info.json` of a dataset directory.

  Raises:
    FileNotFoundError: no directory or no info file, naming the path.
    ValueError: a file of another format.
  """
  file = os.path.join(path, INFO_FILE)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"ArrayRecord dataset directory {path!r} does not exist.")
  if not os.path.isfile(file):
    raise FileNotFoundError(
      f"{file!r} does not exist; is {path!r} a dataset written by contrastive.data.build?"
    )
  with open(file) as f:
    info = json.load(f)
  if info.get("format") != FORMAT:
    raise ValueError(f"{file!r} has format {info.get('format')!r}, expected {FORMAT!r}.")
  return info


def write_info(path: str, info: dict[str, Any]) -> None:
  with open(os.path.join(path, INFO_FILE), "w") as f:
    json.dump(info, f, indent=2, sort_keys=True)


def split_paths(path: str, split: str) -> list[str]:
  """The shard files of `split`, checked to exist.

  Raises:
    ValueError: an unknown split, listing the known ones.
    FileNotFoundError: a missing shard, naming it.
  """
  info = read_info(path)
  splits = info.get("splits", {})
  if split not in splits:
    raise ValueError(f"Split {split!r} is not in {path!r}; known: {sorted(splits)}.")
  paths = [os.path.join(path, name) for name in splits[split]["shards"]]
  for p in paths:
    if not os.path.isfile(p):
      raise FileNotFoundError(f"Shard {p!r} of split {split!r} is missing.")
  return paths


class ImageTextSource:
  """Random access to one split of a dataset directory; records as `decode_record` gives them.

  Args:
    path: the dataset directory.
    split: a split written into it.
  """

  fields = FIELDS

  def __init__(self, path: str, split: str):
    import grain

    self.path, self.split = os.fspath(path), split
    self._data = grain.sources.ArrayRecordDataSource(split_paths(self.path, split))

  def __len__(self) -> int:
    return len(self._data)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return decode_record(self._data[index])

  def __repr__(self) -> str:
    return f"ImageTextSource(path={self.path!r}, split={self.split!r})"
