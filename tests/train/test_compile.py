"""`compile_for`: the run's train step compiled for a TPU topology (libtpu) or CPU devices, its
memory per chip as the compiled programs' `memory_analysis()` gives it; the CLI's verdict."""

import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from contrastive import losses
from contrastive import models
from contrastive import parallel
from contrastive import train
from contrastive.run import config as run_config
from contrastive.train import compile as compile_lib
from contrastive.train import compile_cli
from contrastive.train import config as config_lib
from contrastive.train import topology

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECIPE = "configs/clip_vit_b16.py:cpu"  # the CPU-sized CLIP recipe: batch 32, 32-pixel images


def _config(**overrides):
  return train.get_config(os.path.join(ROOT, RECIPE), overrides)


def _compile_spying(monkeypatch, config, where):
  """`compile_for`, and the compiled programs whose `memory_analysis()` it read."""
  seen = []
  memory = compile_lib._memory

  def spy(compiled):
    seen.append(compiled)
    return memory(compiled)

  monkeypatch.setattr(compile_lib, "_memory", spy)
  return compile_lib.compile_for(config, where), seen


@pytest.mark.parametrize(
  "where,kind,chips", [("v5e:2x2", "TPU v5 lite", 4), ("v4:2x2x1", "TPU v4", 4)]
)
def test_report_is_the_compiled_steps_memory(monkeypatch, where, kind, chips):
  pytest.importorskip("libtpu")
  config = _config()
  report, (step, embed) = _compile_spying(monkeypatch, config, where)
  m = step.memory_analysis()
  assert (report.topology, report.num_chips, report.device_kind) == (where, chips, kind)
  assert report.hbm_per_chip == topology.TPU_HBM[where.split(":")[0]]
  assert report.argument_bytes == m.argument_size_in_bytes
  assert report.output_bytes == m.output_size_in_bytes
  assert report.alias_bytes == m.alias_size_in_bytes
  assert report.temp_bytes == m.temp_size_in_bytes
  assert report.peak_bytes == (
    m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes
  )
  assert report.hlo == step.as_text()
  assert report.fits == (report.peak_bytes <= report.hbm_per_chip * (1 - report.margin))
  assert report.fits and report.refused is None and report.compile_seconds > 0
  # What the run holds: the state is donated (aliased), the batch is 32 pairs over 4 chips.
  model = models.make_model(config.model)
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), model.dummy_batch(1), train=False))
  assert report.param_bytes == 4 * models.count_params(params["params"])  # replicated, float32
  assert report.opt_state_bytes >= 2 * report.param_bytes  # AdamW's two moments
  assert report.batch_bytes == 32 // chips * (32 * 32 * 3 * 4 + 64 * 4)
  assert report.alias_bytes >= report.param_bytes + report.opt_state_bytes
  assert report.argument_bytes >= report.alias_bytes + report.batch_bytes
  # The ring's hops and the gradients' all-reduce are in the compiled step.
  assert report.collectives["collective-permute"] >= chips - 1
  assert report.collectives["all-reduce"] >= 1
  # The evaluation embedding step: the whole train state stays an argument.
  e = embed.memory_analysis()
  assert report.eval_batch_size == 32
  assert report.eval_argument_bytes == e.argument_size_in_bytes >= report.alias_bytes
  assert report.eval_peak_bytes == (
    e.argument_size_in_bytes + e.output_size_in_bytes + e.temp_size_in_bytes
  )
  assert report.eval_fits and report.run_fits


def test_cpu_devices(monkeypatch):
  report, (step, _) = _compile_spying(monkeypatch, _config(), "cpu:8")
  assert (report.num_chips, report.device_kind, report.mesh["data"]) == (8, "cpu", 8)
  assert report.hbm_per_chip == topology.host_memory_bytes() // 8
  assert report.temp_bytes == step.memory_analysis().temp_size_in_bytes
  assert report.fits and report.collectives["collective-permute"] >= 7


def test_hbm_table_is_what_the_compiler_allows():
  """A program of 64 GiB per chip is refused with the chip's available HBM in the message."""
  pytest.importorskip("libtpu")
  for where in ("v5e:2x2", "v4:2x2x1"):
    devices = topology.target(where).devices
    mesh = jax.sharding.Mesh(np.array(devices), ("x",))
    x = jax.ShapeDtypeStruct(
      (len(devices) * 2**34,), jnp.float32, sharding=NamedSharding(mesh, P("x"))
    )
    with pytest.raises(Exception, match="RESOURCE_EXHAUSTED") as error:
      jax.jit(lambda a: a * 2 + 1).lower(x).compile()
    available = float(re.search(r"available HBM \(([0-9.]+)G\)", str(error.value))[1])
    assert available * 2**30 == pytest.approx(topology.TPU_HBM[where.split(":")[0]], abs=2**23)


def test_unknown_topology_is_one_line():
  for where in ("v9z:2x2", "v5e", "v5e:2y2", "tpu:4"):
    with pytest.raises(ValueError, match=r"known.*\bv5e\b") as error:
      train.compile_for(_config(), where)
    assert "\n" not in str(error.value)
  with pytest.raises(ValueError, match="needs 64 CPU devices; this process has 8"):
    train.compile_for(_config(), "cpu:64")


def _cli(*args):
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  env.pop("XLA_FLAGS", None)
  env.pop("JAX_PLATFORMS", None)
  cmd = [sys.executable, "-m", "contrastive.train", f"--config={RECIPE}", *args]
  return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_cli_refuses_a_run_that_cannot_fit():
  """2^20 pairs on four v5e chips: the compiler refuses; one line says by how much and what
  would help; exit status 1."""
  pytest.importorskip("libtpu")
  result = _cli("--compile_for=v5e:2x2", "--config.data.batch_size=1048576")
  assert result.returncode == 1, result.stdout + result.stderr
  last = (result.stdout.strip().splitlines() or [result.stderr])[-1]
  needs = re.fullmatch(
    r"does not fit: the train step needs ([0-9.]+) GiB per chip, ([0-9.]+) GiB over the "
    r"14.96 GiB limit; try (.*)\.",
    last,
  )
  assert needs, last
  assert float(needs[1]) - float(needs[2]) == pytest.approx(14.96, abs=0.02)
  assert "--config.model.remat=full" in needs[3] and "--config.optim.accum_steps=" in needs[3]
  assert "refused by the compiler" in result.stdout


def test_cli_fits_and_errors():
  """`cpu:8` in a process of its own (the CLI makes the 8 CPU devices); a bad topology is one
  line on stderr."""
  result = _cli("--compile_for=cpu:8")
  assert result.returncode == 0, result.stdout + result.stderr
  lines = result.stdout.strip().splitlines()
  assert lines[0].startswith("Compiled for cpu:8: 8 x cpu, mesh data=8 fsdp=1 tensor=1")
  assert lines[-1].startswith("fits: ")
  result = _cli("--compile_for=v9z:4x4")
  assert result.returncode == 1
  assert result.stderr.strip().splitlines() == [
    "error: Unknown topology 'v9z:4x4': give FAMILY:GRID with FAMILY one of cpu, v4, v5e, v5p, "
    "v6e, h100 (e.g. v5e:2x2, v4:2x2x1, v5p:2x2x1, v6e:4x4, h100:8, cpu:8)."
  ]


def test_batch_specs_follow_the_data_config():
  """Token ids as long as data.max_len; hard negatives [b, 3, max_len]; labels [b]."""
  config = run_config.resolve(
    train.get_config(
      os.path.join(ROOT, "configs/loss_zoo.py:loss=hard_negative,runlocal"),
      {"data.max_len": 20},
    )
  )
  model = models.make_model(config.model)
  objective = losses.get(config.loss.name)
  mesh = parallel.make_mesh()
  step_config = config_lib.check_run(config, model=model, objective=objective, mesh=mesh)
  specs = compile_lib.batch_specs(config, model, step_config, batch_size=16)
  assert {k: (v.shape, v.dtype) for k, v in specs.items()} == {
    "image": ((16, 32, 32, 3), jnp.float32),
    "text": ((16, 20), jnp.int32),
    "hard_negatives": ((16, 3, 20), jnp.int32),
  }


def test_batch_specs_give_example_ids():
  """A per-example-state loss (iSogCLR) reads the records' `index`: one int32 id per row."""
  config = run_config.resolve(
    train.get_config(os.path.join(ROOT, "configs/loss_zoo.py:loss=isogclr,runlocal"), {})
  )
  model = models.make_model(config.model)
  objective = losses.get(config.loss.name)
  step_config = config_lib.check_run(
    config, model=model, objective=objective, mesh=parallel.make_mesh()
  )
  specs = compile_lib.batch_specs(config, model, step_config, batch_size=16)
  assert (specs["index"].shape, specs["index"].dtype) == ((16,), jnp.int32)


def test_count_collectives():
  hlo = """
  %all-reduce.1 = f32[4]{0} all-reduce(f32[4]{0} %p), replica_groups={}
  %cp-start = (f32[8]{0}, f32[8]{0}) collective-permute-start(f32[8]{0} %x), pairs={{0,1}}
  %cp-done = f32[8]{0} collective-permute-done((f32[8]{0}, f32[8]{0}) %cp-start)
  %cp.2 = f32[8]{0} collective-permute(f32[8]{0} %y), source_target_pairs={{0,1}}
  %ag = f32[8]{0} all-gather(f32[4]{0} %z), dimensions={0}
  """
  every, started = compile_lib.count_collectives(hlo)
  assert every == {"all-reduce": 1, "collective-permute": 2, "all-gather": 1}
  assert started == {"collective-permute": 1}


def test_advice_names_what_would_help():
  report = compile_lib.CompileReport(
    topology="v5e:2x2",
    num_chips=4,
    device_kind="TPU v5 lite",
    hbm_per_chip=16 * 2**30,
    compile_seconds=1.0,
    argument_bytes=2 * 2**30,
    output_bytes=2**30,
    alias_bytes=2**30,
    temp_bytes=18 * 2**30,
    peak_bytes=20 * 2**30,
    fits=False,
    hlo="",
    margin=0.0,
    mesh={"data": 4, "fsdp": 1, "tensor": 1},
    batch_size=4096,
  )
  line = compile_cli.advice(report, _config())
  assert line.startswith("does not fit: the train step needs 20.00 GiB per chip, 4.00 GiB over")
  # Activations 18 GiB must lose 4: two micro-batches; the batch that fits: 4096 * 15/19.
  assert "--config.optim.accum_steps=2 " in line and "--config.data.batch_size=3232" in line
  assert "--config.mesh.fsdp" not in line  # the state is 5% of the peak
