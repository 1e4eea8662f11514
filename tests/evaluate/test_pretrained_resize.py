"""`python -m contrastive.evaluate --pretrained PATH --image_size N` and `evaluate_path(...,
image_size=)`: an imported checkpoint evaluated at another image size (its position table
resized, `models.load_pretrained(image_size=)`)."""

import os
import subprocess
import sys

import ml_collections

from contrastive.evaluate import pretrained
from tests import pretrained_testing as pt

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_evaluate_path_at_another_image_size(tmp_path):
  path = str(tmp_path / "tiny_open_clip")
  cfg, _ = pt.save_tiny(path, family="open_clip", seed=2)
  size = 2 * int(cfg.encoders.image.image_size)
  tasks = pretrained.default_tasks(num_examples=16)
  config = ml_collections.ConfigDict(
    {"eval": {"tasks": {"retrieval": tasks.retrieval}, "batch_size": 8, "report": False}}
  )
  metrics = pretrained.evaluate_path(path, config, image_size=size)
  assert 0.0 <= metrics["retrieval/image_to_text/recall@1"] <= 1.0


def test_cli_refuses_image_size_without_pretrained(tmp_path):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  proc = subprocess.run(
    [sys.executable, "-m", "contrastive.evaluate", f"--workdir={tmp_path}", "--image_size=336"],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  assert proc.returncode != 0
  assert "--image_size and --max_len go with --pretrained" in proc.stderr
