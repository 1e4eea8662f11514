"""A run: its config and its directory, shared by `contrastive.train` and `contrastive.evaluate`.

- `config`: the run config's groups, the trainer's keys with their defaults (`defaults`),
  `resolve` (the defaults filled in, unknown fields and bad values refused) and `parse_arg` (a
  config file's one-string argument);
- `overrides`: config files and `key=value` overrides from Python (`get_config`, `override`)
  and the command line (`parse_flags`, the two CLIs' flags parser);
- `workdir`: what a run leaves in its directory (`config.json`, `checkpoints/`), read back
  without a trainer (`saved_config`, `restore_params`).

A run config is data: this package imports nothing else of `contrastive`.
"""

from contrastive.run.config import defaults
from contrastive.run.config import parse_arg
from contrastive.run.config import resolve
from contrastive.run.overrides import get_config
from contrastive.run.overrides import override
from contrastive.run.workdir import restore_params
from contrastive.run.workdir import saved_config

__all__ = [
  "defaults",
  "get_config",
  "override",
  "parse_arg",
  "resolve",
  "restore_params",
  "saved_config",
]
