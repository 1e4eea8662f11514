"""Small on-disk datasets the data tests share (made in tmp dirs; nothing is downloaded)."""

import csv
import io
import pathlib
import types

import numpy as np
from PIL import Image
import pytest


def jpeg_bytes(seed: int, size: tuple[int, int] = (24, 20)) -> bytes:
  rng = np.random.default_rng(seed)
  image = rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, "JPEG", quality=90)
  return buf.getvalue()


def png_bytes(seed: int) -> bytes:
  image = np.full((16, 16, 3), seed % 255, np.uint8)
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, "PNG")
  return buf.getvalue()


CORRUPT = b"\xff\xd8\xff\xe0 definitely not a jpeg"


@pytest.fixture
def repo_root() -> str:
  """The repository root: where the subprocess tests run and what they put on PYTHONPATH."""
  return str(pathlib.Path(__file__).resolve().parents[2])


@pytest.fixture
def encoded():
  """Makers of encoded test images: `.jpeg(seed, size)`, `.png(seed)`, `.corrupt`."""
  return types.SimpleNamespace(jpeg=jpeg_bytes, png=png_bytes, corrupt=CORRUPT)


@pytest.fixture
def image_folder(tmp_path):
  """A folder of 12 images (JPEG and PNG, one corrupt) and a CSV with 1-3 captions each.

  Returns (folder, csv path, {name: bytes}, {name: captions}).
  """
  folder = tmp_path / "images"
  (folder / "sub").mkdir(parents=True)
  files, captions = {}, {}
  for i in range(12):
    name = f"img{i:02d}.jpg" if i % 3 else f"sub/pic{i:02d}.png"
    data = jpeg_bytes(i) if i % 3 else png_bytes(i)
    if i == 7:
      data = CORRUPT
    (folder / name).write_bytes(data)
    files[name] = data
    captions[name] = [f"caption {j} of image {i}, ünïcode" for j in range(1 + i % 3)]
  path = tmp_path / "captions.csv"
  with open(path, "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow(["image", "caption"])
    for name, caps in captions.items():
      for c in caps:
        writer.writerow([name, c])
  return str(folder), str(path), files, captions


@pytest.fixture
def arrayrecord_dir(tmp_path, image_folder):
  """`image_folder` built (without verification) into an ArrayRecord dataset; its path."""
  from contrastive.data import build

  folder, csv_path, _, _ = image_folder
  out = str(tmp_path / "dataset")
  build.main(["--images", folder, "--captions", csv_path, "--output", out, "--num_shards", "3"])
  return out
