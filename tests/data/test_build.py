"""`python -m contrastive.data.build`: folders and webdataset tars round-trip through
ArrayRecord."""

import io
import json
import os
import subprocess
import sys
import tarfile

import pytest

from contrastive.data import build
from contrastive.data import records


def _read_all(path, split="train"):
  src = records.ImageTextSource(path, split)
  return {r["key"]: r for r in (src[i] for i in range(len(src)))}


def test_folder_round_trip(tmp_path, image_folder):
  folder, csv_path, files, captions = image_folder
  out = str(tmp_path / "out")
  entry = build.main(
    ["--images", folder, "--captions", csv_path, "--output", out, "--num_shards", "3"]
  )
  assert entry["num_examples"] == 12 and entry["num_captions"] == sum(map(len, captions.values()))
  assert len(entry["shards"]) == 3
  back = _read_all(out)
  assert set(back) == set(files)
  for name, data in files.items():
    assert back[name]["image"] == data  # bytes unchanged, the corrupt one too (no --verify)
    assert back[name]["caption"] == captions[name]
  info = records.read_info(out)
  assert info["splits"]["train"]["num_examples"] == 12


def test_jsonl_verify_skip_missing_and_splits(tmp_path, image_folder, encoded):
  folder, _, files, _ = image_folder
  jsonl = tmp_path / "caps.jsonl"
  rows = [{"file": name, "text": [f"{name} one", f"{name} two"]} for name in files]
  rows.append({"file": "absent.jpg", "text": "gone"})
  rows.append({"file": "img01.jpg", "text": ""})  # an extra, empty caption
  jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
  out = str(tmp_path / "out")
  args = [
    "--images",
    folder,
    "--captions",
    str(jsonl),
    "--output",
    out,
    "--image_column",
    "file",
    "--caption_column",
    "text",
  ]
  with pytest.raises(FileNotFoundError, match="absent.jpg"):
    build.main(args)
  assert not os.path.exists(os.path.join(out, records.INFO_FILE))
  entry = build.main(
    args + ["--skip_missing", "--verify_images", "--split", "test", "--num_shards", "1"]
  )
  assert entry["num_examples"] == 11  # the corrupt image is dropped
  assert entry["skipped"] == {"missing_image": 1, "corrupt_image": 1, "empty_caption": 1}
  back = _read_all(out, "test")
  assert back["img01.jpg"]["caption"] == ["img01.jpg one", "img01.jpg two"]
  with pytest.raises(FileExistsError, match="--overwrite"):
    build.main(args + ["--skip_missing", "--split", "test"])


def test_webdataset_round_trip_and_bpe(tmp_path, encoded):
  pytest.importorskip("tokenizers")
  expected = {}
  for shard in range(2):
    path = tmp_path / f"{shard:05d}.tar"
    with tarfile.open(path, "w") as tar:
      for i in range(5):
        key = f"{shard}{i:03d}"
        members = {
          f"{key}.jpg": encoded.jpeg(10 * shard + i),
          f"{key}.txt": f"a photo number {key}".encode(),
          f"{key}.json": b"{}",
        }
        if (shard, i) == (1, 2):
          del members[f"{key}.txt"]  # incomplete sample
        for name, data in members.items():
          info = tarfile.TarInfo(name)
          info.size = len(data)
          tar.addfile(info, io.BytesIO(data))
        if f"{key}.txt" in members:
          expected[f"{shard:05d}.tar/{key}"] = (members[f"{key}.jpg"], [f"a photo number {key}"])
  out = str(tmp_path / "wds")
  entry = build.main(
    [
      "--webdataset",
      str(tmp_path / "{00000..00001}.tar"),
      "--output",
      out,
      "--bpe_vocab_size",
      "300",
    ]
  )
  assert entry["num_examples"] == 9 and entry["skipped"] == {"incomplete_sample": 1}
  back = _read_all(out)
  assert {k: (r["image"], r["caption"]) for k, r in back.items()} == expected
  assert os.path.isfile(os.path.join(out, "tokenizer.json"))
  assert records.read_info(out)["tokenizer"] == "tokenizer.json"
  with pytest.raises(FileNotFoundError, match="00009.tar"):
    build.main(["--webdataset", str(tmp_path / "00009.tar"), "--output", out])


def test_command_line(tmp_path, image_folder, repo_root):
  folder, csv_path, _, _ = image_folder
  out = str(tmp_path / "cli")
  run = subprocess.run(
    [
      sys.executable,
      "-m",
      "contrastive.data.build",
      "--images",
      folder,
      "--captions",
      csv_path,
      "--output",
      out,
      "--num_shards",
      "2",
    ],
    capture_output=True,
    text=True,
    cwd=repo_root,
    timeout=120,
  )
  assert run.returncode == 0, run.stderr
  assert json.loads(run.stdout)["num_examples"] == 12
  bad = subprocess.run(
    [sys.executable, "-m", "contrastive.data.build", "--output", out],
    capture_output=True,
    text=True,
    cwd=repo_root,
    timeout=120,
  )
  assert bad.returncode == 2 and "--webdataset" in bad.stderr


def test_caption_file_errors(tmp_path):
  path = tmp_path / "c.csv"
  path.write_text("file,caption\na.jpg,x\n")
  with pytest.raises(ValueError, match="no column 'image'.*'file'"):
    build.read_caption_file(str(path))
  (tmp_path / "c.txt").write_text("")
  with pytest.raises(ValueError, match="'.txt'"):
    build.read_caption_file(str(tmp_path / "c.txt"))
  with pytest.raises(FileNotFoundError, match="nope.csv"):
    build.read_caption_file(str(tmp_path / "nope.csv"))
