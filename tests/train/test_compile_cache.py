"""The persistent compilation cache: where it goes, off with "", and a second process reads what
the first wrote."""

import os
import subprocess
import sys

import jax

from contrastive.train import compile_cache
from tests.train import trainer_testing as tt


def test_the_default_follows_the_environment(monkeypatch, tmp_path):
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax"))
  assert compile_cache.default_dir() == str(tmp_path / "jax")
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert compile_cache.default_dir() == str(tmp_path / "xdg" / "contrastive" / "jax")


def test_a_cache_set_for_the_process_is_kept():
  # tests/conftest.py gives the test processes a cache of their own.
  assert compile_cache.enable("/elsewhere") == jax.config.jax_compilation_cache_dir


PROGRAM = """
import sys, time
import jax, jax.numpy as jnp
from contrastive.train import compile_cache
print(compile_cache.enable(sys.argv[1] if len(sys.argv) > 1 else ""))
f = jax.jit(lambda x: jnp.tanh(x @ x.T).sum())
start = time.perf_counter()
f.lower(jnp.ones((64, 64))).compile()
"""


def _run(*args, cache_env=None):
  env = tt.env(devices=1)
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"
  out = subprocess.run(
    [sys.executable, "-c", PROGRAM, *args], env=env, capture_output=True, text=True, timeout=120
  )
  assert out.returncode == 0, out.stderr[-2000:]
  return out.stdout.strip().splitlines()[-1]


def test_a_second_process_finds_the_first_ones_programs(tmp_path):
  cache = str(tmp_path / "cache")
  assert _run(cache) == cache
  written = os.listdir(cache)
  assert written  # the compiled program
  assert _run(cache) == cache
  assert set(os.listdir(cache)) >= set(written)


def test_an_empty_directory_turns_it_off():
  assert _run("") == "None"
