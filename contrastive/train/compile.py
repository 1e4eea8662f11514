"""Will a run fit? Compile its train step for a TPU topology (or CPU devices) without them.

`compile_for(config, "v5e:16x16")` builds what `train_and_evaluate(config, ...)` would run, from
abstract shapes only (no device, no data read, no checkpoint): the same `resolve` and
`check_run`, the model, the mesh of `config.mesh` over the topology's devices, the train state's
shardings, the batch the step reads (its keys, shapes and sharding), GradCache accumulation, and
`step.make_train_step`; it lowers and compiles that step, and the evaluation embedding step,
with the TPU compiler (`libtpu`, compile-only devices from
`jax.experimental.topologies.get_topology_desc`). The report gives, per chip, what the compiled
programs' `memory_analysis()` says, against the chip's HBM:

    peak = arguments + outputs - aliased (donated state) + temporaries

Topologies: a TPU generation and its chip grid as libtpu names it (`v4:2x2x1`, `v5e:16x16`,
`v5p:8x8x16`, `v6e:4x4`), or `cpu:N` (the first `N` CPU devices of this process, e.g.
simulated with `--xla_force_host_platform_device_count`). Eager work (the abstract state's
random key) stays on the default backend: on a machine without a TPU set `JAX_PLATFORMS=cpu`.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
import dataclasses
import math
import re
import time
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
import ml_collections

from contrastive import data
from contrastive import losses
from contrastive import models
from contrastive import parallel
from contrastive.run import config as run_config
from contrastive.train import assemble
from contrastive.train import config as config_lib
from contrastive.train import step as step_lib
from contrastive.train import topology as topology_lib

# Share of the HBM kept free for what the compiled step does not count: the runtime's own
# buffers, the next batch in flight, fragmentation.
DEFAULT_MARGIN = 0.05

COLLECTIVES = (
  "all-reduce",
  "all-gather",
  "reduce-scatter",
  "collective-permute",
  "all-to-all",
  "ragged-all-to-all",
  "collective-broadcast",
)
# An instruction's opcode: `kind(` (synchronous) or `kind-start(` (the start of an async pair).
_COLLECTIVE_RE = re.compile(r"\s(" + "|".join(COLLECTIVES) + r")(-start)?\(")


@dataclasses.dataclass(frozen=True)
class CompileReport:
  """What one chip holds while the run's train step (and its evaluation step) runs, in bytes.

  Attributes:
    topology, num_chips, device_kind: the target (`"v5e:16x16"`, 256, `"TPU v5 lite"`).
    hbm_per_chip: the HBM one program may use on one chip (`topology.TPU_HBM`; for `cpu:N`,
      the host's memory divided among the `N` devices).
    compile_seconds: lowering and compiling the train step on this machine.
    argument_bytes, output_bytes, alias_bytes, temp_bytes: the train step's `memory_analysis()`.
    peak_bytes: `argument_bytes + output_bytes - alias_bytes + temp_bytes`.
    fits: `peak_bytes <= hbm_per_chip * (1 - margin)`.
    hlo: the train step's optimized HLO text.
    margin: the share of `hbm_per_chip` kept free.
    mesh: the mesh's axis sizes; batch_size: the global batch; accum_steps: GradCache's.
    param_bytes, opt_state_bytes, batch_bytes: one chip's share of the parameters, the optimizer
      state (with the loss's own state, if any) and the batch, from their shardings.
    generated_code_bytes: the compiled program itself.
    collectives: `{kind: count}` of collective instructions in `hlo` (an async start/done pair
      counts once); async_collectives: those of them issued asynchronously.
    eval_batch_size, eval_compile_seconds, eval_argument_bytes, eval_output_bytes,
      eval_temp_bytes: the evaluation embedding step (every modality at `eval.batch_size`),
      None without `eval.tasks`.
    eval_peak_bytes: that step's arguments (the whole train state, alive during evaluation, and
      its batch), outputs and temporaries; eval_fits: it within the same limit (True without
      evaluation).
    refused: the TPU compiler's out-of-memory line when it refused the train step (then `hlo`
      is empty and the sizes are as `compile_for` says); None when it compiled.
  """

  topology: str
  num_chips: int
  device_kind: str
  hbm_per_chip: int
  compile_seconds: float
  argument_bytes: int
  output_bytes: int
  alias_bytes: int
  temp_bytes: int
  peak_bytes: int
  fits: bool
  hlo: str = dataclasses.field(repr=False)
  margin: float = DEFAULT_MARGIN
  mesh: Mapping[str, int] = dataclasses.field(default_factory=dict)
  batch_size: int = 0
  accum_steps: int = 1
  param_bytes: int = 0
  opt_state_bytes: int = 0
  batch_bytes: int = 0
  generated_code_bytes: int = 0
  collectives: Mapping[str, int] = dataclasses.field(default_factory=dict)
  async_collectives: Mapping[str, int] = dataclasses.field(default_factory=dict)
  eval_batch_size: int | None = None
  eval_compile_seconds: float | None = None
  eval_argument_bytes: int | None = None
  eval_output_bytes: int | None = None
  eval_temp_bytes: int | None = None
  eval_peak_bytes: int | None = None
  eval_fits: bool = True
  refused: str | None = None

  @property
  def limit_bytes(self) -> int:
    """What a step may use: `hbm_per_chip` less the margin."""
    return _limit(self.hbm_per_chip, self.margin)

  @property
  def run_fits(self) -> bool:
    """The train step and the evaluation step both fit (what the CLI's exit status says)."""
    return self.fits and self.eval_fits


def _per_chip_bytes(tree: Any) -> int:
  """One device's share of a pytree of sharded `jax.ShapeDtypeStruct`s (the largest shard)."""
  total = 0
  for leaf in jax.tree.leaves(tree):
    shape = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None else leaf.shape
    total += math.prod(shape) * jnp.dtype(leaf.dtype).itemsize
  return total


def count_collectives(hlo: str) -> tuple[dict[str, int], dict[str, int]]:
  """`({kind: count}, {kind: async count})` of the collective instructions in HLO text."""
  every, started = collections.Counter(), collections.Counter()
  for kind, start in _COLLECTIVE_RE.findall(hlo):
    every[kind] += 1
    if start:
      started[kind] += 1
  return dict(every), dict(started)


def batch_specs(
  config: ml_collections.ConfigDict,
  model: models.TowerModel,
  step_config: step_lib.StepConfig,
  *,
  batch_size: int,
) -> dict[str, jax.ShapeDtypeStruct]:
  """The shapes and dtypes of the batch arrays the train step reads (no sharding).

  A modality's input is its encoder's (`model.dummy_batch`), token ids `[batch, data.max_len]`
  as the pipeline pads them; an embedded side input (hard-negative captions) is `[batch, k, ...]`
  of its modality's input; a raw side key (`labels` from `meaning_id`) is `[batch]` int32.

  Raises:
    ValueError: a side key whose shape the data config does not give.
  """
  one = jax.eval_shape(lambda: model.dummy_batch(1))
  max_len = int(data.resolve_config(config.data).max_len)

  def modality(name: str, rows: tuple[int, ...]) -> jax.ShapeDtypeStruct:
    return _input_spec(one[name], rows, max_len)

  specs = {m: modality(m, (batch_size,)) for m in step_config.modalities}
  for spec in step_config.side_inputs:
    if spec.modality is None:
      specs[spec.batch_key] = jax.ShapeDtypeStruct((batch_size,), jnp.int32)
    elif spec.batch_key == "hard_negatives":
      per_row = len(data.HARD_NEGATIVE_KINDS)
      specs[spec.batch_key] = modality(spec.modality, (batch_size, per_row))
    else:
      raise ValueError(
        f"compile_for cannot tell the shape of batch key {spec.batch_key!r} "
        f"(loss.side_inputs.{spec.side_key}) from the data config."
      )
  if "index" in step_config.side_keys:  # every record's position in its source: an example id
    specs["index"] = jax.ShapeDtypeStruct((batch_size,), jnp.int32)
  for key in step_config.side_keys:
    if key not in specs:
      raise ValueError(
        f"compile_for cannot tell the shape of batch key {key!r} (read by loss "
        f"{config.loss.name!r}) from the data config."
      )
  return specs


def _input_spec(x: jax.ShapeDtypeStruct, rows: tuple[int, ...], max_len: int):
  """One example's model input `x` (`[1, ...]`) as `rows + [...]`, token ids (an integer
  `[1, len]`) at `data.max_len`, as the pipeline pads them."""
  tail = x.shape[1:]
  if jnp.issubdtype(x.dtype, jnp.integer) and len(tail) == 1:
    tail = (max_len,)
  return jax.ShapeDtypeStruct(rows + tail, x.dtype)


def _limit(hbm_per_chip: int, margin: float) -> int:
  """What a step may use: `hbm_per_chip` less the margin."""
  return int(hbm_per_chip * (1.0 - margin))


def _sharded(
  specs: Mapping[str, jax.ShapeDtypeStruct], sharding: NamedSharding
) -> dict[str, jax.ShapeDtypeStruct]:
  return {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=sharding) for k, v in specs.items()}


def _memory(compiled) -> tuple[int, int, int, int, int]:
  m = compiled.memory_analysis()
  return (
    int(m.argument_size_in_bytes),
    int(m.output_size_in_bytes),
    int(m.alias_size_in_bytes),
    int(m.temp_size_in_bytes),
    int(m.generated_code_size_in_bytes),
  )


_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
# The TPU compiler's refusal: "Ran out of memory on HBM, the total memory required for HLO
# temporaries (63.45G) exceeds available HBM (15.75G)." Its figure is the whole program's:
# arguments, outputs and temporaries (a 20 GiB argument summed to a scalar reads "(20.00G)").
_REQUIRED_RE = re.compile(r"required for HLO temporaries \(([0-9.]+)([KMGT]?)\)")


def _refusal(error: Exception) -> tuple[str, int | None] | None:
  """`(first line, bytes required)` of an out-of-memory refusal (None where the message does
  not say), or None for any other error."""
  text = str(error)
  if "RESOURCE_EXHAUSTED" not in text:
    return None
  line = next((s.strip() for s in text.splitlines() if s.strip()), "RESOURCE_EXHAUSTED")
  required = _REQUIRED_RE.search(text)
  return line, None if required is None else int(float(required[1]) * _UNITS[required[2]])


def _compile(jitted, mesh, options, *args):
  """`(compiled or None, seconds, refusal or None)`; an out-of-memory refusal is a result."""
  start = time.perf_counter()
  try:
    with parallel.use_rules(mesh):
      compiled = jitted.lower(*args).compile(compiler_options=options or None)
  except Exception as e:  # XLA raises JaxRuntimeError; all but OOM re-raise
    refusal = _refusal(e)
    if refusal is None:
      raise
    return None, time.perf_counter() - start, refusal
  return compiled, time.perf_counter() - start, None


def compile_for(
  config: ml_collections.ConfigDict,
  topology: str,
  *,
  margin: float = DEFAULT_MARGIN,
  objective: losses.Objective | None = None,
) -> CompileReport:
  """Compiles the run's train step (and evaluation step) for `topology`; reports its memory.

  Args:
    config: a run config (`train.get_config(...)`), as `train_and_evaluate` takes it.
    topology: `"v5e:16x16"`, `"v4:2x2x1"`, ... (TPU, needs `libtpu`), or `"cpu:8"`.
    margin: the share of each chip's HBM kept free; `fits` asks for
      `peak_bytes <= hbm_per_chip * (1 - margin)`.
    objective: a loss to compile in place of the config's `loss.name` (not registered ones too,
      e.g. a dense all-gather loss to compare with the ring); default the config's.

  Returns:
    The `CompileReport`. A step the TPU compiler refuses for lack of memory is a report too,
    with `fits=False`, `refused` set to the compiler's line, `hlo` empty, `peak_bytes` the
    memory its message says the program needs, the arguments' sizes from their shardings and
    `temp_bytes` the rest.

  Raises:
    ValueError, FileNotFoundError: a bad config or topology (one line), as the trainer raises
      them.
  """
  if not 0.0 <= margin < 1.0:
    raise ValueError(f"margin must be in [0, 1), got {margin!r}.")
  where = topology_lib.target(topology)
  config = run_config.resolve(config)
  objective = objective or losses.get(config.loss.name)
  model = models.make_model(config.model)
  mesh = parallel.make_mesh(**config.mesh, devices=where.devices)
  step_config = config_lib.check_run(config, model=model, objective=objective, mesh=mesh)
  batch_sharding = parallel.batch_sharding(mesh)
  # Built outside `use_rules(mesh)`: eager work (the init key) cannot run on compile-only devices.
  state, shardings, tx = assemble.create_train_state(
    config, model, mesh, materialize=False, terms=step_config.terms
  )
  batch_size = int(config.data.batch_size)
  batch = _sharded(batch_specs(config, model, step_config, batch_size=batch_size), batch_sharding)
  train_step = assemble.make_train_step(config, model, objective, tx, mesh, shardings, step_config)

  compiled, seconds, refusal = _compile(
    train_step.jitted, mesh, where.compiler_options, state, batch
  )
  state_bytes = _per_chip_bytes(state)
  param_bytes = _per_chip_bytes(state.params)
  batch_bytes = _per_chip_bytes(batch)
  if compiled is not None:
    arg, out, alias, temp, code = _memory(compiled)
    hlo = compiled.as_text()
    peak = arg + out - alias + temp
  else:  # the arguments' sizes from their shardings, the peak from the refusal
    arg, out, alias, code, hlo = state_bytes + batch_bytes, state_bytes, state_bytes, 0, ""
    peak = max(refusal[1] or 0, arg)
    temp = peak - arg
  every, started = count_collectives(hlo)
  limit = _limit(where.hbm_per_chip, margin)
  evaluation = {}
  if config.eval.tasks:
    evaluation = _compile_eval(model, state, mesh, config, batch_sharding, limit, where)
  return CompileReport(
    topology=where.topology,
    num_chips=len(where.devices),
    device_kind=str(where.devices[0].device_kind),
    hbm_per_chip=int(where.hbm_per_chip),
    compile_seconds=seconds,
    argument_bytes=arg,
    output_bytes=out,
    alias_bytes=alias,
    temp_bytes=temp,
    peak_bytes=peak,
    fits=refusal is None and peak <= limit,
    hlo=hlo,
    margin=float(margin),
    mesh=dict(mesh.shape),
    batch_size=batch_size,
    accum_steps=int(step_config.accum_steps),
    param_bytes=param_bytes,
    opt_state_bytes=state_bytes - param_bytes,
    batch_bytes=batch_bytes,
    generated_code_bytes=code,
    collectives=every,
    async_collectives=started,
    refused=None if refusal is None else refusal[0],
    **evaluation,
  )


def _compile_eval(model, state, mesh, config, batch_sharding, limit, where) -> dict[str, Any]:
  """The evaluation embedding step (`model.apply(..., train=False)` on every modality at
  `eval.batch_size`, as `contrastive.evaluate.configured.run` jits it), compiled with the whole
  train state as an (unused, kept) argument: the state stays in HBM while evaluation runs, so
  the program's arguments + outputs + temporaries are what a chip holds then."""
  eval_batch = int(config.eval.batch_size)
  one = jax.eval_shape(lambda: model.dummy_batch(1))
  max_len = int(data.resolve_config(config.data).max_len)
  batch = _sharded(
    {k: _input_spec(v, (eval_batch,), max_len) for k, v in one.items()}, batch_sharding
  )
  embed = jax.jit(
    lambda train_state, b: model.apply({"params": train_state.params}, b, train=False)[0],
    keep_unused=True,
  )
  compiled, seconds, refusal = _compile(embed, mesh, where.compiler_options, state, batch)
  if compiled is None:
    arg = _per_chip_bytes(state) + _per_chip_bytes(batch)
    out, temp = 0, max((refusal[1] or 0) - arg, 0)
  else:
    arg, out, _, temp, _ = _memory(compiled)
  peak = arg + out + temp
  return dict(
    eval_batch_size=eval_batch,
    eval_compile_seconds=seconds,
    eval_argument_bytes=arg,
    eval_output_bytes=out,
    eval_temp_bytes=temp,
    eval_peak_bytes=peak,
    eval_fits=compiled is not None and peak <= limit,
  )
