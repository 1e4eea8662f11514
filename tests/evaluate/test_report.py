"""The report: metrics.json, the history and the PNG files."""

import json
import os

import numpy as np
import pytest

from contrastive.evaluate import report


def _pairs(n=300, d=16):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(n, d)).astype(np.float32)
  y = x + 0.3 * rng.normal(size=(n, d)).astype(np.float32) + 1.0
  return x, y


def _is_png(path):
  with open(path, "rb") as f:
    return f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_write_report(tmp_path):
  x, y = _pairs()
  for step in (10, 20):
    report.append_history(tmp_path, step, {"zs/top1": step / 100, "gap": 1.0})
  paths = report.write_report(
    tmp_path,
    {"zs/top1": 0.2, "bad": float("nan")},
    x=x,
    y=y,
    history=report.read_history(tmp_path),
    step=20,
    max_points=100,
  )
  assert set(paths) == {"metrics", "pca", "similarity_histogram", "spectrum", "curves"}
  for name, path in paths.items():
    assert os.path.exists(path)
    if name != "metrics":
      assert _is_png(path)
  with open(tmp_path / "metrics.json") as f:
    data = json.load(f)  # strict JSON: NaN became null
  assert data == {"zs/top1": 0.2, "bad": None, "step": 20}


def test_history_round_trip(tmp_path):
  assert report.read_history(tmp_path) == []
  report.append_history(tmp_path, 5, {"a": 1})
  report.append_history(tmp_path, 6, {"a": 2})
  assert report.read_history(tmp_path) == [{"step": 5, "a": 1.0}, {"step": 6, "a": 2.0}]


def test_metrics_only(tmp_path):
  paths = report.write_report(tmp_path / "sub", {"a": 1.0})
  assert set(paths) == {"metrics"}


def test_errors(tmp_path):
  x, _ = _pairs()
  with pytest.raises(ValueError, match=r"both x and y"):
    report.write_report(tmp_path, {}, x=x)
