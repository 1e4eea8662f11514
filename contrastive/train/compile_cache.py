"""JAX's persistent compilation cache, on by default, so that a rerun of a recipe (a resume, the
next seed, an evaluation) loads its compiled steps instead of waiting for the compiler.

`config.compilation_cache_dir`: None picks `$JAX_COMPILATION_CACHE_DIR` when set, else
`$XDG_CACHE_HOME/contrastive/jax` (`~/.cache/contrastive/jax`); `""` turns the cache off. A
cache configured elsewhere in the process (`jax.config`) is left as it is. JAX keys each entry
by the program, the devices and the compiler version, so a stale entry is never used; entries of
programs that compiled in under a second are not written (JAX's default threshold).
"""

from __future__ import annotations

import os

from absl import logging
import jax


def default_dir() -> str:
  """`$JAX_COMPILATION_CACHE_DIR`, else `$XDG_CACHE_HOME/contrastive/jax`."""
  if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return os.environ["JAX_COMPILATION_CACHE_DIR"]
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "contrastive", "jax")


def enable(directory: str | None) -> str | None:
  """Points JAX's persistent cache at `directory` (None: `default_dir()`; "": off) unless the
  process already set one; returns the directory in use, or None."""
  current = jax.config.jax_compilation_cache_dir
  if current:
    return current
  if directory == "":
    return None
  directory = os.path.expanduser(directory or default_dir())
  try:
    os.makedirs(directory, exist_ok=True)
  except OSError as e:  # a read-only home: run without the cache rather than fail
    logging.warning("No compilation cache (%s: %s).", directory, e)
    return None
  jax.config.update("jax_compilation_cache_dir", directory)
  logging.info("Compilation cache: %s", directory)
  return directory
