"""Regenerates the committed fixtures of tests/models/pretrained with the peer libraries.

Run with an interpreter that has torch, open_clip and transformers (not this project's test
environment, which needs none of them):

    /path/to/peers/bin/python tests/models/pretrained/make_fixtures.py            # every family
    /path/to/peers/bin/python tests/models/pretrained/make_fixtures.py open_clip  # some of them

Each `_fixtures_<family>.py` beside this script has `make(out_dir)`, which builds tiny random
models with the family's own library, saves them as that library saves them, and records the
library's outputs for fixed inputs under `out_dir` (`fixtures/`). The tests then compare this
library's loaders against those files.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "fixtures")


def families() -> dict[str, str]:
  """`{family: path of its _fixtures module}`."""
  paths = sorted(glob.glob(os.path.join(HERE, "_fixtures_*.py")))
  return {os.path.basename(p)[len("_fixtures_") : -len(".py")]: p for p in paths}


def main(argv: list[str]) -> None:
  known = families()
  chosen = argv or sorted(known)
  unknown = [f for f in chosen if f not in known]
  if unknown:
    raise SystemExit(f"Unknown family {unknown[0]!r}; known: {sorted(known)}.")
  os.makedirs(FIXTURES, exist_ok=True)
  for family in chosen:
    spec = importlib.util.spec_from_file_location(f"_fixtures_{family}", known[family])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # registries (timm's) look a function's module up by name
    spec.loader.exec_module(module)
    module.make(FIXTURES)
    print(f"{family}: fixtures written to {FIXTURES}")


if __name__ == "__main__":
  main(sys.argv[1:])
