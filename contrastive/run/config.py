"""A run config's groups, the trainer's keys with their defaults, and the checks of their values.

A run config (`configs/*.py`, `get_config(arg)`) has these groups; `defaults()` holds the
trainer's own keys with their defaults, and each other group is checked by the part that owns
it (`data`: `contrastive.data.resolve_config`; `model`: `contrastive.models.make_model`;
`eval.tasks`: `contrastive.evaluate.check_tasks`):

    seed          int; parameter init and per-step randomness (`fold_in(key(seed), step)`)
    total_steps   int; the length of the run
    compilation_cache_dir
                  JAX's persistent compilation cache, so that a rerun skips the compiler;
                  default a user cache directory (`contrastive.train.compile_cache`); "" off
    mesh          data, fsdp, tensor: mesh axis sizes (-1: the rest of the devices)
    data          the data pipeline; `data.batch_size` is the GLOBAL batch size
    model         the tower model
    loss          name (a key of `contrastive.losses.LOSSES`), weight, block_size,
                  side_inputs, queue_size and momentum (moco), the loss's own options, and
                  terms: more weighted terms of the objective (`contrastive.train.terms`)
    optim         optimizer, schedule, clipping, accumulation, non-finite handling
    checkpoint    every_steps, keep, async_save, init_from (+ init_from_step, init_from_keys,
                  init_from_name)
    eval          every_steps, at_end, batch_size, report, tasks
    log           every_steps, progress, profile_start_step, profile_num_steps

`resolve(config)` fills the trainer defaults in, rejects unknown fields (naming the closest
known one), and checks values, before anything heavy, so a bad config fails in a second with one
line that names the field; the trainer then checks it against the model, the loss and the mesh
(`contrastive.train.config.check_run`). `parse_arg` reads a config file's one-string argument.

Config files and `key=value` overrides, from Python (`get_config`) and the command line
(`parse_flags`), are loaded by `contrastive.run.overrides`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
import difflib
import math
from typing import Any

import ml_collections
from ml_collections import config_dict

GROUPS = ("mesh", "data", "model", "loss", "optim", "checkpoint", "eval", "log")
TOP_LEVEL = ("seed", "total_steps", "compilation_cache_dir") + GROUPS
NONFINITE = ("stop", "skip")
PROGRESS = ("auto", "bar", "lines")
# Groups whose keys are names the user chooses (evaluation tasks, objective terms).
OPEN_GROUPS = ("tasks", "terms")


def defaults() -> ml_collections.ConfigDict:
  """The trainer's keys with their defaults (`data`, `model` and `eval.tasks` are not here)."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.total_steps = config_dict.placeholder(int)  # required
  # None: $JAX_COMPILATION_CACHE_DIR if set, else ~/.cache/contrastive/jax; "": no cache.
  c.compilation_cache_dir = config_dict.placeholder(str)

  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))

  c.loss = ml_collections.ConfigDict()
  c.loss.name = "softmax"  # a key of contrastive.losses.LOSSES
  c.loss.block_size = config_dict.placeholder(int)  # ring tile size; None: the loss picks
  # Side data of the loss, {side_key: spec}; side_key is an argument the loss reads (its
  # `side_keys`). Two kinds of spec:
  #   {"batch_key": K}: batch[K] as it is, e.g. labels=dict(batch_key="meaning_id") for "supcon"
  #     (examples of the same meaning are positives of each other);
  #   {"modality": M, "batch_key": K}: batch[K] embedded by the tower of modality M first, e.g.
  #     neg_y=dict(modality="text", batch_key="hard_negatives") for "hard_negative".
  # A side key with no spec is read from the batch key of the same name.
  c.loss.side_inputs = ml_collections.ConfigDict()
  # Losses with a momentum encoder and a queue of its past keys (moco) only; see
  # contrastive/train/momentum.py. queue_size: keys per modality, a multiple of the devices of
  # the batch axes (MoCo: 65536); momentum: m of the key encoder's EMA (MoCo: 0.999).
  c.loss.queue_size = config_dict.placeholder(int)
  c.loss.momentum = config_dict.placeholder(float)
  # The objective is a weighted sum of terms: this loss, with `weight`, and `terms`,
  # {term_name: {name, weight, ...}}: a registered loss with its options and side_inputs (and
  # teacher="ema" with momentum, or teacher="frozen" with teacher_from, for `distill`), or
  # name="caption" (a decoder's token cross-entropy; pad_id, label_smoothing). See
  # contrastive/train/terms.py.
  c.loss.weight = 1.0
  c.loss.terms = ml_collections.ConfigDict()
  # Any other key of `loss` is passed to the loss as a keyword option (e.g. label_smoothing).

  c.optim = ml_collections.ConfigDict()
  c.optim.name = "adamw"  # adamw | lamb | sgd | adafactor | lion | muon
  c.optim.lr = 1e-3  # peak learning rate
  c.optim.schedule = "cosine"  # after warmup: cosine | linear | constant | rsqrt
  # The last cooldown_steps decay from where the schedule is to 0, `linear` or `sqrt`
  # (1 - sqrt(progress)); with schedule="constant": warmup-stable-decay.
  c.optim.cooldown_steps = 0
  c.optim.cooldown = "linear"
  c.optim.warmup_steps = 0
  c.optim.end_lr = 0.0  # where cosine and linear end
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.eps = 1e-8
  c.optim.weight_decay = 0.0  # decoupled; kernels and embedding tables only
  c.optim.grad_clip_norm = config_dict.placeholder(float)  # None: no clipping
  c.optim.accum_steps = 1  # GradCache micro-batches per step (the result equals one big batch)
  c.optim.on_nonfinite = "stop"  # stop | skip: what a non-finite loss or gradient does
  # An EMA of the weights, ema <- d ema + (1 - d) params after each step, checkpointed and
  # evaluated beside them (eval/ema/...); None: none. E.g. 0.9999.
  c.optim.ema_decay = config_dict.placeholder(float)
  # Parameter groups (contrastive/train/param_groups.py). layer_decay: a float or
  # {modality: float} in (0, 1], lr * decay^(depth from the top); lr_mults / wd_mults:
  # ((regex, multiplier), ...) on parameter paths, first match wins, an lr multiplier of 0 or
  # None freezes; unlocked_groups: {modality: n}, the tower frozen but for its last n groups.
  c.optim.layer_decay = config_dict.placeholder(object)
  c.optim.lr_mults = ()
  c.optim.wd_mults = ()
  c.optim.unlocked_groups = config_dict.placeholder(object)

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every_steps = 1000  # also saved at the end and on preemption
  c.checkpoint.keep = 3  # the newest checkpoints kept
  c.checkpoint.async_save = True  # write in the background while training goes on
  c.checkpoint.init_from = config_dict.placeholder(str)  # a workdir to take parameters from
  c.checkpoint.init_from_step = config_dict.placeholder(int)  # None: its latest checkpoint
  c.checkpoint.init_from_keys = ()  # top-level parameter names to take (empty: all)
  # init_from may also be a checkpoint as downloaded (contrastive.train.pretrained); its
  # architecture name where the files do not give it (models.load_pretrained's name=).
  c.checkpoint.init_from_name = config_dict.placeholder(str)

  c.eval = ml_collections.ConfigDict()
  c.eval.every_steps = config_dict.placeholder(int)  # None: only at the end
  c.eval.at_end = True
  c.eval.batch_size = 256  # divisible by the devices of the batch axes
  c.eval.report = True  # PNG plots next to metrics.json
  c.eval.tasks = ml_collections.ConfigDict()  # {name: {kind, **options}}; empty: no evaluation

  c.log = ml_collections.ConfigDict()
  c.log.every_steps = 50  # TensorBoard scalars and the console line
  # auto: a tqdm bar in a terminal or a notebook (IPython), the progress line otherwise;
  # bar | lines: always that.
  c.log.progress = "auto"
  c.log.profile_start_step = config_dict.placeholder(int)  # jax.profiler trace from this step
  c.log.profile_num_steps = 5
  return c


def did_you_mean(name: str, known: Iterable[str], *, prefix: str = "") -> str:
  """`" Did you mean 'X'?"` with `X` the known name closest to `name` (after `prefix`, e.g. the
  group of a field), or `""` when none is close: the hint of every "unknown name" message."""
  close = difflib.get_close_matches(name, list(known), n=1)
  return f" Did you mean {prefix + close[0]!r}?" if close else ""


def unknown_field(path: str, key: str, known: Sequence[str]) -> str:
  """The one-line message for field `key` that group `path` (`""`: the top) lacks: the closest
  known name, and the known ones."""
  where = f"{path}.{key}" if path else key
  hint = did_you_mean(key, known, prefix=path + "." if path else "")
  return (
    f"Unknown config field {where!r}.{hint} Known fields"
    f"{' of ' + path if path else ''}: {sorted(known)}."
  )


def _known_error(path: str, key: str, known: Sequence[str]) -> ValueError:
  return ValueError(unknown_field(path, key, known))


def _merge(
  out: ml_collections.ConfigDict, given: Mapping[str, Any], path: str, *, open_keys: bool = False
) -> None:
  for key, value in given.items():
    if key not in out:
      if not open_keys:
        raise _known_error(path, key, list(out.keys()))
      out[key] = value
      continue
    if isinstance(out[key], ml_collections.ConfigDict) and key not in OPEN_GROUPS:
      if not isinstance(value, Mapping | ml_collections.ConfigDict):
        raise ValueError(
          f"Config field {path + '.' if path else ''}{key} must be a group, got {value!r}."
        )
      _merge(out[key], value, f"{path}.{key}" if path else key)
    else:
      with out.ignore_type():
        out[key] = value


def resolve(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The config over the trainer defaults, checked.

  Returns:
    A new, unlocked `ConfigDict` with every trainer key (`data` and `model` as given).

  Raises:
    ValueError: an unknown field (with the closest known name), a missing `total_steps`, or a
      bad value (each message names the field and the allowed values).
  """
  given = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
  unknown = sorted(set(given) - set(TOP_LEVEL))
  if unknown:
    raise _known_error("", unknown[0], TOP_LEVEL)
  out = defaults()
  for key in ("data", "model"):
    if key not in given:
      raise ValueError(f"The config needs a {key!r} group.")
  out.data = ml_collections.ConfigDict(given.pop("data"))
  out.model = ml_collections.ConfigDict(given.pop("model"))
  loss = dict(given.pop("loss", {}))
  side_inputs = loss.pop("side_inputs", None) or {}
  _merge(out.loss, loss, "loss", open_keys=True)
  for side_key, spec in dict(side_inputs).items():
    out.loss.side_inputs[side_key] = ml_collections.ConfigDict(_side_input(side_key, spec))
  eval_tasks = dict(given.get("eval", {})).pop("tasks", None)
  if "eval" in given:
    given["eval"] = {k: v for k, v in given["eval"].items() if k != "tasks"}
  _merge(out, given, "")
  if eval_tasks is not None:
    out.eval.tasks = ml_collections.ConfigDict(eval_tasks)
  check_values(out)
  return out


def _side_input(side_key: str, spec: Any) -> dict[str, str]:
  """A checked `loss.side_inputs` entry: `{"batch_key"}` or `{"modality", "batch_key"}`."""
  where = f"loss.side_inputs.{side_key}"
  if not isinstance(spec, Mapping | ml_collections.ConfigDict):
    raise ValueError(f"{where} must be a group like dict(batch_key='meaning_id'), got {spec!r}.")
  spec = dict(spec)
  unknown = sorted(set(spec) - {"modality", "batch_key"})
  if unknown or "batch_key" not in spec:
    raise ValueError(
      f"{where} takes 'batch_key' (the batch array passed as it is) and optionally 'modality' "
      f"(embed it with that tower first), got {sorted(spec)}."
    )
  for key, value in spec.items():
    if not isinstance(value, str) or not value:
      raise ValueError(f"{where}.{key} must be a name, got {value!r}.")
  return spec


def _positive_int(value: Any, name: str, *, allow_none: bool = False) -> None:
  if value is None and allow_none:
    return
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(f"{name} must be a positive int, got {value!r}.")


def _finite(value: Any, name: str) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
    raise ValueError(f"{name} must be a finite number, got {value!r}.")


def check_values(c: ml_collections.ConfigDict) -> None:
  """Checks the trainer's own values (not `data`, `model` or the tasks)."""
  if c.total_steps is None:
    raise ValueError("total_steps is required (e.g. --config.total_steps=1000).")
  _positive_int(c.total_steps, "total_steps")
  if isinstance(c.seed, bool) or not isinstance(c.seed, int) or c.seed < 0:
    raise ValueError(f"seed must be a non-negative int, got {c.seed!r}.")
  for axis in ("data", "fsdp", "tensor"):
    size = c.mesh[axis]
    if isinstance(size, bool) or not isinstance(size, int) or (size < 1 and size != -1):
      raise ValueError(f"mesh.{axis} must be a positive int or -1, got {size!r}.")
  if not isinstance(c.loss.name, str):
    raise ValueError(f"loss.name must be a loss name, got {c.loss.name!r}.")
  _positive_int(c.loss.block_size, "loss.block_size", allow_none=True)
  _finite(c.loss.weight, "loss.weight")
  for term_name, term in c.loss.terms.items():
    where = f"loss.terms.{term_name}"
    if not isinstance(term, Mapping | ml_collections.ConfigDict):
      raise ValueError(f"{where} must be a group like dict(name='caption', weight=2.0).")
    if not isinstance(term.get("name"), str):
      raise ValueError(f"{where}.name must be a loss name or 'caption', got {term.get('name')!r}.")
    _finite(term.get("weight", 1.0), f"{where}.weight")
  _positive_int(c.loss.queue_size, "loss.queue_size", allow_none=True)
  m = c.loss.momentum
  if m is not None and (
    isinstance(m, bool) or not isinstance(m, (int, float)) or not 0.0 <= m <= 1.0
  ):
    raise ValueError(f"loss.momentum must be a number in [0, 1], got {m!r}.")
  o = c.optim
  if not (isinstance(o.lr, (int, float)) and math.isfinite(o.lr) and o.lr >= 0):
    raise ValueError(f"optim.lr must be a finite number >= 0, got {o.lr!r}.")
  if (
    isinstance(o.warmup_steps, bool) or not isinstance(o.warmup_steps, int) or (o.warmup_steps < 0)
  ):
    raise ValueError(f"optim.warmup_steps must be an int >= 0, got {o.warmup_steps!r}.")
  _positive_int(o.accum_steps, "optim.accum_steps")
  if o.ema_decay is not None:
    _finite(o.ema_decay, "optim.ema_decay")
    if not 0.0 <= o.ema_decay < 1.0:
      raise ValueError(f"optim.ema_decay must be in [0, 1) (e.g. 0.9999), got {o.ema_decay!r}.")
  if o.on_nonfinite not in NONFINITE:
    raise ValueError(
      f"optim.on_nonfinite must be one of {list(NONFINITE)}, got {o.on_nonfinite!r}."
    )
  if (
    isinstance(o.cooldown_steps, bool)
    or not isinstance(o.cooldown_steps, int)
    or not 0 <= o.cooldown_steps <= c.total_steps
  ):
    raise ValueError(
      f"optim.cooldown_steps must be an int in [0, total_steps={c.total_steps}], "
      f"got {o.cooldown_steps!r}."
    )
  if o.cooldown not in ("linear", "sqrt"):
    raise ValueError(f"optim.cooldown must be one of ['linear', 'sqrt'], got {o.cooldown!r}.")
  if o.weight_decay < 0:
    raise ValueError(f"optim.weight_decay must be >= 0, got {o.weight_decay!r}.")
  _positive_int(c.checkpoint.every_steps, "checkpoint.every_steps")
  _positive_int(c.checkpoint.keep, "checkpoint.keep")
  _positive_int(c.checkpoint.init_from_step, "checkpoint.init_from_step", allow_none=True)
  _positive_int(c.eval.every_steps, "eval.every_steps", allow_none=True)
  _positive_int(c.eval.batch_size, "eval.batch_size")
  _positive_int(c.log.every_steps, "log.every_steps")
  if c.log.progress not in PROGRESS:
    raise ValueError(f"log.progress must be one of {list(PROGRESS)}, got {c.log.progress!r}.")
  if c.log.profile_start_step is not None:
    if isinstance(c.log.profile_start_step, bool) or c.log.profile_start_step < 0:
      raise ValueError(f"log.profile_start_step must be >= 0, got {c.log.profile_start_step!r}.")
  _positive_int(c.log.profile_num_steps, "log.profile_num_steps")


def parse_arg(arg: str | None, **spec: Any) -> ml_collections.ConfigDict:
  """Parses a config file's one-string argument, `"key=value,key2=value2"` (big_vision style).

  The keyword defaults fix both each key's default and its type (`bool` accepts `True`/`False`,
  `1`/`0`); a key not among them fails with the known ones. A bare word `name` sets the bool key
  `name` to True (`configs/demo.py:runlocal`).

  Example:
    >>> arg = parse_arg("batch_size=64,runlocal", batch_size=256, runlocal=False)
    >>> arg.batch_size, arg.runlocal
    (64, True)
  """
  out = ml_collections.ConfigDict(dict(spec))
  if not arg:
    return out
  for item in str(arg).split(","):
    item = item.strip()
    if not item:
      continue
    key, eq, value = item.partition("=")
    key = key.strip()
    if key not in spec:
      hint = did_you_mean(key, spec)
      raise ValueError(f"Unknown config argument {key!r}.{hint} Known: {sorted(spec)}.")
    default = spec[key]
    if not eq:
      if not isinstance(default, bool):
        raise ValueError(f"Config argument {key!r} needs a value ({key}=...).")
      out[key] = True
      continue
    value = value.strip()
    if isinstance(default, bool):
      if value.lower() not in ("true", "false", "1", "0"):
        raise ValueError(f"Config argument {key!r} is a bool (True/False), got {value!r}.")
      out[key] = value.lower() in ("true", "1")
    elif isinstance(default, int):
      out[key] = int(value)
    elif isinstance(default, float):
      out[key] = float(value)
    else:
      out[key] = value
  return out
