"""Evaluating an imported checkpoint: its own image preparation and tokenizer, the evaluation on
its model, and `python -m contrastive.evaluate --pretrained` on a saved tiny checkpoint."""

import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from contrastive import data
from contrastive import models
from contrastive.evaluate import pretrained
from tests import pretrained_testing as pt

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MEAN, STD = (0.25, 0.5, 0.75), (0.5, 0.25, 0.125)


def _settings(**kwargs):
  base = dict(
    tokenizer="clip",
    max_len=8,
    image_size=4,
    resize=4,
    crop="center",
    mean=MEAN,
    std=STD,
    interpolation="bicubic",
  )
  return ml_collections.ConfigDict({**base, **kwargs})


def _normalized(pixels):
  return (np.asarray(pixels, np.float32) / 255.0 - np.asarray(MEAN, np.float32)) / np.asarray(
    STD, np.float32
  )


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("ckpt") / "tiny_hf")
  pt.save_tiny(path, family="hf", seed=1)
  return path


def test_an_image_of_the_model_size_is_only_normalized():
  image = np.random.default_rng(0).integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
  for crop in pretrained.CROPS:
    np.testing.assert_allclose(
      pretrained.prepare_image(image, _settings(crop=crop)),
      _normalized(image),
      rtol=1e-6,
      atol=1e-6,
    )


def test_center_crop_keeps_the_middle_of_the_shorter_side():
  # A 4x12 image (height 4): the shorter side is already 4, so the centred 4x4 is columns 4-7.
  image = np.zeros((4, 12, 3), np.uint8)
  image[:, 4:8] = (10, 20, 30)
  out = pretrained.prepare_image(image, _settings())
  np.testing.assert_allclose(out, np.broadcast_to(_normalized((10, 20, 30)), (4, 4, 3)), atol=1e-6)
  # With resize=8 the 4x12 image becomes 8x24 and the centred 4x4 comes from its middle
  # (columns 10-13), far enough inside a band of columns 2-9 (4-19 resized) that bicubic
  # filtering brings in none of the black around it.
  image[:, 2:10] = (10, 20, 30)
  out = pretrained.prepare_image(image, _settings(resize=8))
  np.testing.assert_allclose(out, np.broadcast_to(_normalized((10, 20, 30)), (4, 4, 3)), atol=1e-6)


def test_squash_and_pad_keep_the_whole_image():
  image = np.zeros((4, 16, 3), np.uint8)
  image[:, :8] = 200  # left half bright
  squash = pretrained.prepare_image(image, _settings(crop="squash"))
  assert squash[:, 0].min() > squash[:, -1].max()  # both halves survive, side by side
  pad = pretrained.prepare_image(np.full((4, 16, 3), 255, np.uint8), _settings(crop="pad"))
  # The 4x16 image becomes 1x4, centred on black: row 1 white, the others the black fill.
  np.testing.assert_allclose(pad[1], np.broadcast_to(_normalized((255,) * 3), (4, 3)), atol=1e-5)
  np.testing.assert_allclose(
    pad[[0, 2, 3]], np.broadcast_to(_normalized((0,) * 3), (3, 4, 3)), atol=1e-6
  )


def test_prepare_uses_the_checkpoint_tokenizer_and_length():
  prepare = pretrained.make_prepare(_settings())
  texts = ["a photo of a cat.", "a much longer caption than eight tokens can ever hold"]
  batch = prepare({"text": texts, "image": [np.zeros((6, 5), np.uint8)]})
  np.testing.assert_array_equal(batch["text"], data.tokenize(data.make_tokenizer("clip"), texts, 8))
  assert batch["image"].shape == (1, 4, 4, 3)
  with pytest.raises(ValueError, match=r"Unknown crop 'none' in the checkpoint's data settings"):
    pretrained.make_prepare(_settings(crop="none"))
  with pytest.raises(ValueError, match=r"have no 'mean'"):
    pretrained.make_prepare(
      ml_collections.ConfigDict({k: v for k, v in _settings().items() if k != "mean"})
    )


def test_evaluate_pretrained_runs_its_model(clip_dir):
  pre = models.load_pretrained(clip_dir)
  tasks = pretrained.default_tasks(num_examples=16)
  assert sorted(tasks) == ["retrieval", "zeroshot_colour", "zeroshot_count", "zeroshot_shape"]
  metrics = pretrained.evaluate_pretrained(pre, {"retrieval": tasks.retrieval}, batch_size=8)
  assert 0.0 <= metrics["retrieval/image_to_text/recall@1"] <= 1.0
  bad = models.Pretrained(pre.model_config, {**pre.params, "text": {}}, pre.data, "hf", "x")
  with pytest.raises(
    ValueError,
    match=r"parameters do not fit its model config: missing "
    r"\['text/encoder/embedding/embedding', ",
  ):
    pretrained.evaluate_pretrained(bad, {"retrieval": tasks.retrieval}, batch_size=8)


def _cli(*args):
  env = dict(
    os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), JAX_PLATFORMS="cpu"
  )
  proc = subprocess.run(
    [sys.executable, "-m", "contrastive.evaluate", *args],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
    check=False,
  )
  return proc.returncode, proc.stdout, proc.stderr


def test_cli_evaluates_a_saved_checkpoint(clip_dir, tmp_path):
  out = str(tmp_path / "eval")
  code, stdout, stderr = _cli(
    f"--pretrained={clip_dir}",
    "--config=configs/finetune.py:cpu,imagenet=False",
    "--config.eval.report=False",
    f"--output={out}",
    "--config.eval.tasks.retrieval.source.num_examples=16",
  )
  assert code == 0, stderr[-3000:]
  saved = json.load(open(os.path.join(out, "metrics.json")))
  assert "retrieval/rsum" in saved and "zeroshot_shape/top1" in saved
  assert "retrieval/rsum" in stdout and "Report:" in stdout
  # The same as in this process, with the checkpoint's own settings.
  pre = models.load_pretrained(clip_dir)
  tasks = ml_collections.ConfigDict(
    {
      "retrieval": dict(
        kind="retrieval",
        source=dict(
          name="synthetic", split="test", num_examples=16, image_size=32, seed=0, num_heldout=8
        ),
        meaning_key="meaning_id",
        subset_key="heldout",
      )
    }
  )
  here = pretrained.evaluate_pretrained(pre, tasks, batch_size=16)
  assert saved["retrieval/rsum"] == pytest.approx(here["retrieval/rsum"], abs=1e-6)


def test_cli_errors_are_one_line(clip_dir, tmp_path):
  code, _, stderr = _cli(f"--pretrained={tmp_path}/missing")
  assert code == 1 and stderr.strip().splitlines()[-1].startswith("error: ")
  assert "no such file or directory" in stderr
  code, _, stderr = _cli(f"--pretrained={clip_dir}", f"--workdir={tmp_path}")
  assert code == 1 and "FATAL Flags parsing error" in stderr and "workdir" in stderr
