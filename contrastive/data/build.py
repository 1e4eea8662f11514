"""Builds an image-text ArrayRecord dataset (the `arrayrecord` source) from your own files.

From a folder of images and a caption file (CSV with a header, or JSONL); an image may have
several captions (several rows, or a list):

    python -m contrastive.data.build --images photos/ --captions captions.csv --output data/mine
    python -m contrastive.data.build --images photos/ --captions captions.jsonl \\
        --output data/mine --split test

CSV columns `image` (a path relative to `--images`) and `caption`; JSONL objects
`{"image": ..., "caption": "..."}` or `{"image": ..., "caption": ["...", "..."]}` (column names
via `--image_column`, `--caption_column`). From webdataset-style tar shards (`NNN.jpg` with
`NNN.txt`), the usual output of image-text crawls:

    python -m contrastive.data.build --webdataset 'crawl/{00000..00099}.tar' --output data/crawl
    python -m contrastive.data.build --webdataset crawl/00000.tar crawl/00001.tar --output ...

Image bytes are stored unchanged. A caption row naming a missing image fails at once (or is
skipped with `--skip_missing`); `--verify_images` decodes every image and skips corrupt ones;
empty captions and tar samples without an image or a caption are skipped. Skips are counted in
`dataset_info.json`. `--bpe_vocab_size N` also fits a byte-level BPE tokenizer on the captions
and saves it as `tokenizer.json` in the output (needs `pip install contrastive[tokenizers]`).
Point a config at the result with `data.source="arrayrecord"`, `data.arrayrecord.path=DIR`.
"""

from __future__ import annotations

import argparse
import collections
from collections.abc import Iterable, Iterator, Sequence
import csv
import dataclasses
import glob
import io
import json
import os
import re
import sys
import tarfile
from typing import Any

from absl import logging

from contrastive.data import records

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif")


@dataclasses.dataclass
class Example:
  """One image and its captions, as read from the inputs."""

  key: str
  image: bytes
  captions: list[str]


def read_caption_file(
  path: str, *, image_column: str = "image", caption_column: str = "caption"
) -> dict[str, list[str]]:
  """Image path to captions, in first-appearance order, from a `.csv` or `.jsonl` file.

  Raises:
    FileNotFoundError: no such file.
    ValueError: an unknown extension, or a missing column (naming it and the line).
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"Caption file {path!r} does not exist.")
  out: dict[str, list[str]] = collections.OrderedDict()
  ext = os.path.splitext(path)[1].lower()
  if ext == ".csv":
    with open(path, newline="", encoding="utf-8") as f:
      reader = csv.DictReader(f)
      fields = reader.fieldnames or []
      for column in (image_column, caption_column):
        if column not in fields:
          raise ValueError(
            f"Caption file {path!r} has no column {column!r}; its columns: {fields}."
          )
      for row in reader:
        out.setdefault(row[image_column], []).append(row[caption_column] or "")
  elif ext in (".jsonl", ".json"):
    with open(path, encoding="utf-8") as f:
      for line_no, line in enumerate(f, 1):
        if not line.strip():
          continue
        row = json.loads(line)
        for column in (image_column, caption_column):
          if column not in row:
            raise ValueError(
              f"Line {line_no} of {path!r} has no field {column!r}; its fields: {sorted(row)}."
            )
        captions = row[caption_column]
        captions = [captions] if isinstance(captions, str) else list(captions)
        out.setdefault(row[image_column], []).extend(captions)
  else:
    raise ValueError(f"Caption file {path!r} must end in .csv or .jsonl, not {ext!r}.")
  return out


def folder_examples(
  images: str,
  captions: dict[str, list[str]],
  *,
  skip_missing: bool = False,
  stats: collections.Counter | None = None,
) -> Iterator[Example]:
  """Examples of a folder of images and their captions (from `read_caption_file`).

  Every image is checked to exist before the first is read.

  Raises:
    FileNotFoundError: a missing folder, or (without `skip_missing`) a missing image.
  """
  stats = collections.Counter() if stats is None else stats
  if not os.path.isdir(images):
    raise FileNotFoundError(f"Image folder {images!r} does not exist.")
  present = []
  for name in captions:
    if os.path.isfile(os.path.join(images, name)):
      present.append(name)
    elif skip_missing:
      stats["missing_image"] += 1
      logging.warning("Skipping missing image %r.", name)
    else:
      raise FileNotFoundError(
        f"Image {name!r} named in the caption file is not in {images!r} (use --skip_missing "
        "to skip such rows)."
      )

  def read() -> Iterator[Example]:
    for name in present:
      with open(os.path.join(images, name), "rb") as f:
        yield Example(key=name, image=f.read(), captions=captions[name])

  return read()


def expand_shards(patterns: Sequence[str]) -> list[str]:
  """Tar paths from globs and brace ranges (`data/{00000..00009}.tar`), checked to exist."""
  paths = []
  for pattern in patterns:
    match = re.search(r"\{(\d+)\.\.(\d+)\}", pattern)
    if match:
      lo, hi = match.group(1), match.group(2)
      names = [
        pattern[: match.start()] + str(i).zfill(len(lo)) + pattern[match.end() :]
        for i in range(int(lo), int(hi) + 1)
      ]
    elif any(c in pattern for c in "*?["):
      names = sorted(glob.glob(pattern))
      if not names:
        raise FileNotFoundError(f"No file matches {pattern!r}.")
    else:
      names = [pattern]
    for name in names:
      if not os.path.isfile(name):
        raise FileNotFoundError(f"Webdataset shard {name!r} does not exist.")
    paths.extend(names)
  return paths


def webdataset_examples(
  paths: Sequence[str], *, stats: collections.Counter | None = None
) -> Iterator[Example]:
  """Examples of webdataset tars: members `KEY.jpg` (or png, ...) with `KEY.txt`.

  The key is the member path up to the first dot of its file name; samples without an image or
  without a caption are skipped and counted.
  """
  stats = collections.Counter() if stats is None else stats

  def flush(key, parts, tar_path):
    image = next((parts[e] for e in IMAGE_EXTENSIONS if e in parts), None)
    text = parts.get("txt")
    if image is None or text is None:
      stats["incomplete_sample"] += 1
      logging.warning(
        "Skipping sample %r of %r: no %s.", key, tar_path, "image" if image is None else "caption"
      )
      return None
    return Example(
      key=f"{os.path.basename(tar_path)}/{key}",
      image=image,
      captions=[text.decode("utf-8", errors="replace")],
    )

  for path in paths:
    with tarfile.open(path) as tar:
      key, parts = None, {}
      for member in tar:
        if not member.isfile():
          continue
        dirname, base = os.path.split(member.name)
        if "." not in base:
          continue
        stem, ext = base.split(".", 1)
        this = os.path.join(dirname, stem)
        if this != key and key is not None:
          example = flush(key, parts, path)
          if example is not None:
            yield example
          parts = {}
        key = this
        parts[ext.lower()] = tar.extractfile(member).read()
      if key is not None:
        example = flush(key, parts, path)
        if example is not None:
          yield example


def _image_ok(data: bytes) -> bool:
  from PIL import Image

  try:
    with Image.open(io.BytesIO(data)) as image:
      image.load()
    return True
  except Exception:
    return False


def write_dataset(
  examples: Iterable[Example],
  output: str,
  *,
  split: str = "train",
  num_shards: int = 4,
  verify_images: bool = False,
  bpe_vocab_size: int = 0,
  overwrite: bool = False,
  stats: collections.Counter | None = None,
) -> dict[str, Any]:
  """Writes `examples` as split `split` of the dataset directory `output`.

  Records go to the shards in turn (record `i` to shard `i % num_shards`). Other splits already
  in `output` are kept.

  Returns:
    The split's entry of `dataset_info.json`: examples, captions, shards and skip counts.

  Raises:
    FileExistsError: the split exists and not `overwrite`.
  """
  from array_record.python import array_record_module

  if num_shards < 1:
    raise ValueError(f"num_shards must be positive, got {num_shards}.")
  if not re.fullmatch(r"[A-Za-z0-9_.]+", split):
    raise ValueError(f"Split name {split!r} may only hold letters, digits, '_' and '.'.")
  stats = collections.Counter() if stats is None else stats
  os.makedirs(output, exist_ok=True)
  info_path = os.path.join(output, records.INFO_FILE)
  info = (
    records.read_info(output)
    if os.path.isfile(info_path)
    else {"format": records.FORMAT, "fields": list(records.FIELDS), "splits": {}}
  )
  if split in info["splits"] and not overwrite:
    raise FileExistsError(f"Split {split!r} already exists in {output!r} (use --overwrite).")
  for name in info["splits"].get(split, {}).get("shards", []):
    if os.path.exists(os.path.join(output, name)):
      os.remove(os.path.join(output, name))

  names = [records.shard_name(split, i, num_shards) for i in range(num_shards)]
  writers = [
    array_record_module.ArrayRecordWriter(os.path.join(output, n), "group_size:1") for n in names
  ]
  count = num_captions = 0
  all_captions = []
  try:
    for example in examples:
      captions = [c for c in example.captions if c.strip()]
      if len(captions) < len(example.captions):
        stats["empty_caption"] += len(example.captions) - len(captions)
      if not captions:
        stats["no_caption"] += 1
        logging.warning("Skipping %r: no non-empty caption.", example.key)
        continue
      if verify_images and not _image_ok(example.image):
        stats["corrupt_image"] += 1
        logging.warning("Skipping %r: the image does not decode.", example.key)
        continue
      writers[count % num_shards].write(
        records.encode_record(image=example.image, captions=captions, key=example.key)
      )
      count += 1
      num_captions += len(captions)
      if bpe_vocab_size:
        all_captions.extend(captions)
  finally:
    for w in writers:
      w.close()
  if count == 0:
    raise ValueError(f"No usable example for split {split!r} (skipped: {dict(stats)}).")

  entry = {
    "num_examples": count,
    "num_captions": num_captions,
    "shards": names,
    "skipped": dict(stats),
  }
  info["splits"][split] = entry
  if bpe_vocab_size:
    from contrastive.data import tokenizers

    tokenizers.train_bpe(
      all_captions, os.path.join(output, records.TOKENIZER_FILE), vocab_size=bpe_vocab_size
    )
    info["tokenizer"] = records.TOKENIZER_FILE
  records.write_info(output, info)
  logging.info(
    "Wrote %d examples (%d captions) of split %r to %s; skipped %s.",
    count,
    num_captions,
    split,
    output,
    dict(stats),
  )
  return entry


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
    prog="python -m contrastive.data.build",
    description="Build an image-text ArrayRecord dataset for data.source='arrayrecord'.",
  )
  parser.add_argument("--output", required=True, help="dataset directory to write")
  parser.add_argument("--images", help="folder of images (with --captions)")
  parser.add_argument("--captions", help="CSV or JSONL caption file (with --images)")
  parser.add_argument("--webdataset", nargs="+", help="tar shards: paths, globs or {000..009}")
  parser.add_argument("--split", default="train")
  parser.add_argument("--num_shards", type=int, default=4)
  parser.add_argument("--image_column", default="image")
  parser.add_argument("--caption_column", default="caption")
  parser.add_argument(
    "--skip_missing",
    action="store_true",
    help="skip caption rows whose image is missing instead of failing",
  )
  parser.add_argument(
    "--verify_images", action="store_true", help="decode every image and skip corrupt ones"
  )
  parser.add_argument(
    "--bpe_vocab_size",
    type=int,
    default=0,
    help="also fit a BPE tokenizer of this size (tokenizer.json)",
  )
  parser.add_argument("--overwrite", action="store_true", help="replace an existing split")
  args = parser.parse_args(argv)
  if bool(args.webdataset) == bool(args.images or args.captions):
    parser.error("give either --images with --captions, or --webdataset")
  if args.images and not args.captions or args.captions and not args.images:
    parser.error("--images and --captions go together")
  return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Runs the command line; returns the written split's info entry."""
  args = parse_args(argv)
  stats: collections.Counter = collections.Counter()
  if args.webdataset:
    examples = webdataset_examples(expand_shards(args.webdataset), stats=stats)
  else:
    captions = read_caption_file(
      args.captions, image_column=args.image_column, caption_column=args.caption_column
    )
    examples = folder_examples(args.images, captions, skip_missing=args.skip_missing, stats=stats)
  return write_dataset(
    examples,
    args.output,
    split=args.split,
    num_shards=args.num_shards,
    verify_images=args.verify_images,
    bpe_vocab_size=args.bpe_vocab_size,
    overwrite=args.overwrite,
    stats=stats,
  )


if __name__ == "__main__":
  logging.set_verbosity(logging.INFO)
  entry = main(sys.argv[1:])
  sys.stdout.write(json.dumps(entry, indent=2) + "\n")
