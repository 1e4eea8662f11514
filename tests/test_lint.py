"""The tree passes the linter and the formatter configured in pyproject.toml (`[tool.ruff]`).

Fix a failure with `ruff check --fix . && ruff format .` from the repository root.
"""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _ruff(*args):
  pytest.importorskip("ruff")  # in the test extra; a checkout without it cannot run the check
  return subprocess.run(
    [sys.executable, "-m", "ruff", *args, "--no-cache", REPO],
    cwd=REPO,
    capture_output=True,
    text=True,
  )


def test_lint():
  result = _ruff("check")
  assert result.returncode == 0, result.stdout + result.stderr


def test_format():
  result = _ruff("format", "--check")
  assert result.returncode == 0, result.stdout + result.stderr
