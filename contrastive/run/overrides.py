"""Config files and `key=value` overrides, from Python and from the command line.

`get_config("configs/demo.py:runlocal", {"optim.lr": 1e-3})` gives from Python what
`--config configs/demo.py:runlocal --config.optim.lr=1e-3` gives the CLI; `override` sets dotted
keys on a config; `parse_flags` is the CLIs' absl flags parser. A key the config lacks fails the
same way in all three, with one line that names it and the closest known one:

    Unknown config field 'optim.lrr'. Did you mean 'optim.lr'? Known fields of optim: [...]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import importlib.util
import os
import re
import sys
import types
from typing import Any

import ml_collections

from contrastive.run import config as config_lib


def field_error(config: ml_collections.ConfigDict, path: str) -> str | None:
  """Why dotted `path` names no field of `config` (one line, with the closest known name), or
  None when it does. A new key may go under `loss` (the loss's own options)."""
  node, parts = config, path.split(".")
  for i, key in enumerate(parts):
    where = ".".join(parts[:i])
    if not isinstance(node, ml_collections.ConfigDict | Mapping):
      return f"Config field {where!r} is {node!r}, not a group; it has no field {key!r}."
    if key not in node:
      if where == "loss" and i == len(parts) - 1:
        return None
      return config_lib.unknown_field(where, key, list(node.keys()))
    node = node[key]
  return None


def override(
  config: ml_collections.ConfigDict, overrides: Mapping[str, Any]
) -> ml_collections.ConfigDict:
  """`config` with `{"optim.lr": 1e-3, ...}` set, in place, like `--config.optim.lr=1e-3`.

  Raises:
    ValueError: a path that names no field (one line, with the closest known one), or a value
      of the wrong type.
  """
  for path, value in overrides.items():
    error = field_error(config, path)
    if error:
      raise ValueError(error)
    *groups, key = path.split(".")
    node = config
    for group in groups:
      node = node[group]
    try:
      if isinstance(node, ml_collections.ConfigDict):
        with node.unlocked():
          node[key] = value
      else:
        node[key] = value
    except TypeError as e:
      raise ValueError(f"Config field {path!r}: {str(e).splitlines()[0]}") from None
  return config


def _package_dir() -> str:
  return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _repo_root() -> str:
  return os.path.dirname(_package_dir())


def get_config(
  config: str | os.PathLike | types.ModuleType | ml_collections.ConfigDict,
  overrides: Mapping[str, Any] | None = None,
) -> ml_collections.ConfigDict:
  """A run config from Python, as `--config PATH[:ARG] --config.KEY=VALUE` gives it the CLI.

  Args:
    config: a config file's path with its optional argument (`"configs/demo.py:steps=300"`;
      a relative path is looked up in the working directory, then in the repository this
      package sits in), a module with `get_config(arg)`, or a `ConfigDict` (copied).
    overrides: dotted keys and their values, e.g. `{"optim.lr": 1e-3, "loss.name": "sigmoid"}`.

  Returns:
    An unlocked `ConfigDict` for `train_and_evaluate`.

  Raises:
    ValueError: an unknown key (one line: `Unknown config field 'optim.lrr'. Did you mean
      'optim.lr'? ...`), or a bad argument of the config file.
    FileNotFoundError: no such config file.

  Example:
    >>> config = get_config("configs/demo.py:runlocal", {"optim.lr": 1e-3})  # doctest: +SKIP
  """
  if isinstance(config, ml_collections.ConfigDict):
    out = ml_collections.ConfigDict(config.to_dict())
  elif isinstance(config, types.ModuleType):
    out = config.get_config(None)
  else:
    path, _, arg = os.fspath(config).partition(":")
    # A checkout (working directory, or the repository this package sits in), then an installed
    # copy, whose configs/ ships inside the package (`contrastive.configs`).
    places = [os.getcwd(), _repo_root(), _package_dir()]
    found = (
      next((p for p in [path] + [os.path.join(d, path) for d in places] if os.path.exists(p)), None)
      if not os.path.isabs(path)
      else path
    )
    if found is None or not os.path.exists(found):
      raise FileNotFoundError(f"No config file {path!r} (looked in {', '.join(places)}).")
    spec = importlib.util.spec_from_file_location(
      "contrastive_config_" + re.sub(r"\W", "_", os.path.basename(found)[:-3]), found
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = module.get_config(arg or None)
  out = ml_collections.ConfigDict(out.to_dict()) if out.is_locked else out
  return override(out, dict(overrides or {}))


def parse_flags(argv: list[str]) -> list[str]:
  """The CLIs' absl flags parser (`app.run(main, flags_parser=parse_flags)`).

  A config file that fails to load or raises, or a `--config.KEY=VALUE` whose key the config
  lacks, would end in a traceback from inside `ml_collections`; here each ends the program with
  `error: <one line naming the file or the key>` and exit status 1. absl's own flag errors keep
  absl's one-line `FATAL Flags parsing error`.
  """
  from absl import flags

  try:
    rest = flags.FLAGS(argv)
    if "config" in flags.FLAGS and flags.FLAGS["config"].value is not None:
      flags.FLAGS["config"].value.keys()  # a file that failed to load raises only when read
    return rest
  except flags.Error as e:
    if "Traceback" not in str(e):
      sys.stderr.write(
        f"FATAL Flags parsing error: {e}\nPass --helpshort or --helpfull to see help on flags.\n"
      )
      sys.exit(1)
    fail(argv, e)
  except Exception as e:
    fail(argv, e)


def fail(argv: Sequence[str], error: Exception, *, config: str | None = None) -> None:
  """Ends the program on a config flag that failed: `error: <one line>`, exit status 1.

  `config` is the config flag's default file, for a failure while the flag is being defined
  (without `--config` on the command line, ml_collections loads the default file and applies
  the overrides then).
  """
  sys.stderr.write(f"error: {_flag_error(argv, error, config)}\n")
  sys.stderr.flush()
  sys.exit(1)


def _flag_error(argv: Sequence[str], error: Exception, default: str | None = None) -> str:
  """One line for a failed `--config` flag: the first override the config lacks, else the
  error's own last line."""
  config_arg, paths = None, []
  for i, arg in enumerate(argv):
    if m := re.match(r"^--?config(?:=(.*))?$", arg):
      config_arg = (
        m.group(1) if m.group(1) is not None else (argv[i + 1] if i + 1 < len(argv) else None)
      )
    elif m := re.match(r"^--?(?:no)?config\.([\w.]+)", arg):
      paths.append(m.group(1))
  lines = [line for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
  message = lines[-1].strip()
  config_arg = config_arg or default
  if config_arg is None:
    return message
  try:
    config = get_config(config_arg)
  except Exception:
    return f"{config_arg}: {message}"
  for path in paths:
    problem = field_error(config, path)
    if problem:
      return f"{problem.rstrip('.')} (--config.{path} in the command line)."
  return f"{config_arg}: {message}"
