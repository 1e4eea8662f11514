"""The suite on a tiny imported checkpoint (tfds's mock data), and `--suite` on the command line."""

import os
import subprocess
import sys

import pytest

from contrastive.evaluate import suite
from contrastive.evaluate import suite_datasets
from tests import pretrained_testing as pt
from tests.evaluate import test_suite_mock as mock

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("ckpt") / "tiny_hf")
  pt.save_tiny(path, family="hf", seed=2)
  return path


def test_the_quick_suite_on_an_imported_model(ckpt, tmp_path):
  with mock.mock_tfds(16):
    rows = suite.run_pretrained(
      ckpt, "quick", output_dir=tmp_path, batch_size=16, require_prepared=False
    )
  names = suite_datasets.SUITES["quick"]
  ran = [r for r in rows if r["status"] == "ran"]
  assert [r["dataset"] for r in ran] == list(names)
  assert all(0.0 <= r["value"] <= 1.0 and r["examples"] == 16 for r in ran)
  means = {r["dataset"]: r for r in rows if r["group"] == "mean"}
  assert means["mean zero-shot classification"]["status"] == f"{len(names)} ran"
  assert os.path.exists(tmp_path / "metrics.json")
  assert read_csv_datasets(tmp_path / suite.TABLE_CSV)[: len(names)] == list(names)


def read_csv_datasets(path):
  return [r["dataset"] for r in suite.read_table(path)]


def _cli(*args, env=None):
  return subprocess.run(
    [sys.executable, "-m", "contrastive.evaluate", *args],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=600,
    env={**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})},
  )


def test_the_cli_skips_what_is_not_prepared_and_writes_the_table(ckpt, tmp_path):
  out = tmp_path / "out"
  proc = _cli(
    "--pretrained", ckpt, "--suite", "quick", "--suite_data_dir", str(tmp_path / "tfds"),
    "--output", str(out),
  )  # fmt: skip
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "0 dataset metrics ran, 5 skipped." in proc.stdout
  assert "tfds build cifar10 --data_dir" in proc.stdout
  assert os.path.exists(out / suite.TABLE_MD) and os.path.exists(out / suite.TABLE_CSV)


def test_the_cli_bad_suite_and_uncached_hub_id_are_one_line(ckpt, tmp_path):
  proc = _cli("--pretrained", ckpt, "--suite", "quik")
  assert proc.returncode == 1
  lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert len(lines) == 1 and "Unknown suite or dataset 'quik'" in lines[0]
  proc = _cli(
    "--pretrained", "hf-hub:org/absent", "--output", str(tmp_path / "o"),
    env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")},
  )  # fmt: skip
  assert proc.returncode == 1
  lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert len(lines) == 1 and "hf-hub:org/absent is not in the Hugging Face cache" in lines[0]


def test_the_suite_on_a_run_workdir_untrained(tmp_path):
  from tests.evaluate import test_workdir

  namespace = {}
  exec(test_workdir.CONFIG, namespace)  # the tiny run config of the workdir CLI's test
  config = namespace["get_config"]()
  with mock.mock_tfds(8):
    rows = suite.run_workdir(config, tmp_path / "run", "cifar10,pets", require_prepared=False)
  assert [(r["dataset"], r["metric"], r["status"]) for r in rows[:2]] == [
    ("cifar10", "top1", "ran"),
    ("pets", "mean_per_class", "ran"),
  ]
  assert os.path.exists(tmp_path / "run" / "eval" / suite.TABLE_CSV)


def _prepare_tiny_tfds(data_dir):
  """A tfds dataset prepared here as ArrayRecord (no TensorFlow): 6 PNG images, 2 classes."""
  import io

  import numpy as np
  from PIL import Image
  import tensorflow_datasets as tfds

  class SuiteTinySet(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict(
          {
            "image": tfds.features.Image(shape=(None, None, 3)),
            "label": tfds.features.ClassLabel(names=["red_thing", "blue_thing"]),
          }
        ),
      )

    def _split_generators(self, dl_manager):
      return {"test": self._generate_examples()}

    def _generate_examples(self):
      for i in range(6):
        buf = io.BytesIO()
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(buf, "PNG")
        yield i, {"image": buf.getvalue(), "label": i % 2}

  builder = SuiteTinySet(data_dir=data_dir, file_format="array_record")
  config = tfds.download.DownloadConfig(try_download_gcs=False)
  builder.download_and_prepare(download_config=config)
  return builder


def test_a_prepared_tfds_dataset_is_found_and_read_without_mock(tmp_path):
  from contrastive.evaluate import runner

  builder = _prepare_tiny_tfds(str(tmp_path))
  d = suite_datasets.Dataset("tiny", "suite_tiny_set", "test", templates="stl10")
  assert suite.unavailable(d, data_dir=str(tmp_path), paths={}) is None
  names = builder.info.features["label"].names
  task = d.task(data_dir=str(tmp_path), tfds_names=names)
  assert task["class_names"] == ["red thing", "blue thing"]
  metrics = runner.run_tasks(
    mock.embed_fn, {"tiny": task}, prepare=mock.prepare, batch_size=4
  )  # images arrive PNG-encoded from ArrayRecord, as tfds stores them
  assert 0.0 <= metrics["tiny/top1"] <= 1.0
  missing = suite_datasets.Dataset("gone", "suite_tiny_set", "validation", templates="stl10")
  assert "is not prepared in" in suite.unavailable(missing, data_dir=str(tmp_path), paths={})
