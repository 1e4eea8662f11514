"""The trainer end to end, through its CLI in subprocesses (8 simulated devices unless said).

Every run shares one JAX compilation cache, so the runs of a comparison compile once.
"""

import glob
import hashlib
import json
import os
import random
import re
import signal
import sys

import numpy as np
import portpicker
import pytest

from tests.train import trainer_testing as tt

STEPS = 8


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  return str(tmp_path_factory.mktemp("jax_cache"))


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, cache):
  """The demo config, a few steps at batch 64, evaluated at the end on 64 examples per task."""
  workdir = str(tmp_path_factory.mktemp("demo"))
  code, out = tt.run(
    tt.train_command(
      f"configs/demo.py:steps={STEPS},batch_size=64,eval_examples=64",
      workdir,
      "--config.optim.warmup_steps=2",
      "--config.optim.lr=1e-3",
      "--config.log.every_steps=1",
      "--config.checkpoint.every_steps=4",
      "--config.eval.report=False",
      "--config.eval.every_steps=4",
      "--config.log.profile_start_step=2",
      "--config.log.profile_num_steps=2",
    ),
    tt.env(devices=8, cache_dir=cache),
    os.path.join(workdir, "stdout.txt"),
  )
  assert code == 0, out[-3000:]
  return workdir, out


def test_demo_trains_logs_checkpoints_and_evaluates(demo_run, cache):
  workdir, out = demo_run
  scalars = tt.read_scalars(os.path.join(workdir, "tensorboard"))
  loss = [scalars["train/loss"][s] for s in range(1, STEPS + 1)]
  assert np.mean(loss[-3:]) < np.mean(loss[:2]), loss  # the loss falls
  for key in (
    "train/lr",
    "train/scale",
    "train/grad_norm",
    "train/examples_per_sec",
    "train/step_time",
    "train/data_wait_share",
  ):
    assert set(scalars[key]) >= set(range(2, STEPS + 1)), key
  assert 0 <= scalars["train/data_wait_share"][STEPS] <= 1
  assert 0 <= scalars["eval/zeroshot_shape/top1"][STEPS] <= 1
  assert "eval/retrieval/image_to_text/recall_1" in scalars  # TensorBoard spells @ as _
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["4", "8"]
  config = json.load(open(os.path.join(workdir, "config.json")))
  assert config["total_steps"] == STEPS and config["optim"]["lr"] == 1e-3
  assert config["optim"]["on_nonfinite"] == "stop"  # defaults are filled in
  metrics = json.load(open(os.path.join(workdir, "eval", "metrics.json")))
  assert metrics["step"] == STEPS
  assert set(scalars["eval/zeroshot_shape/top1"]) == {4, STEPS}  # every 4 steps and at the end
  assert glob.glob(os.path.join(workdir, "profile", "**", "*.xplane.pb"), recursive=True)
  assert re.search(rf"step +{STEPS}/{STEPS}", out) and "Done:" in out and "Checkpoint:" in out
  # The evaluation CLI restores the trainer's checkpoint (with the run's own config.json) and
  # measures what the trainer measured at that step.
  code, cli = tt.run(
    [
      sys.executable,
      "-m",
      "contrastive.evaluate",
      f"--workdir={workdir}",
      f"--output={workdir}/eval_cli",
    ],
    tt.env(devices=8, cache_dir=cache),
    os.path.join(workdir, "evaluate.txt"),
  )
  assert code == 0, cli[-3000:]
  again = json.load(open(os.path.join(workdir, "eval_cli", "metrics.json")))
  assert again["step"] == STEPS
  for key in ("zeroshot_shape/top1", "retrieval/image_to_text/recall@1"):
    assert again[key] == pytest.approx(metrics[key], abs=1e-6), key
  # Rerunning the finished command resumes, finds nothing to do, and says so.
  code, again = tt.run(
    tt.train_command(f"configs/demo.py:steps={STEPS},batch_size=64,eval_examples=64", workdir),
    tt.env(devices=8),
    os.path.join(workdir, "stdout2.txt"),
  )
  assert code == 0 and "Nothing to do" in again, again[-2000:]


def test_lit_keeps_the_loaded_image_tower_fixed(demo_run, tmp_path, cache):
  demo_dir, _ = demo_run
  workdir = str(tmp_path / "lit")
  code, out = tt.run(
    tt.train_command(
      "configs/lit.py:cpu",
      workdir,
      "--config.total_steps=3",
      f"--config.checkpoint.init_from={demo_dir}",
    ),
    tt.env(devices=8, cache_dir=cache),
    str(tmp_path / "lit.txt"),
  )
  assert code == 0, out[-3000:]
  lit = tt.load_state(workdir, 3)
  demo = tt.load_state(demo_dir, STEPS)
  tt.assert_trees_equal(lit["params"]["image"], demo["params"]["image"])
  assert not any("image" in path for path in _paths(lit["opt_state"]))  # no optimizer state
  assert any("text" in path for path in _paths(lit["opt_state"]))


def _paths(tree):
  import jax

  return [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


CLIP_CPU = "configs/clip_vit_b16.py:cpu"


def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path, cache):
  steps = 14
  args = [
    f"--config.total_steps={steps}",
    "--config.checkpoint.every_steps=2",
    "--config.checkpoint.keep=20",
    "--config.log.every_steps=1",
  ]
  environ = tt.env(devices=8, cache_dir=cache)
  ref = str(tmp_path / "reference")
  code, out = tt.run(tt.train_command(CLIP_CPU, ref, *args), environ, str(tmp_path / "ref.txt"))
  assert code == 0, out[-3000:]

  work = str(tmp_path / "killed")
  proc = tt.start(tt.train_command(CLIP_CPU, work, *args), environ, str(tmp_path / "k1.txt"))
  kill_after = random.Random(0).choice([5, 6, 7])
  tt.wait_for_step(proc, kill_after, steps)
  assert proc.poll() is None, "the run ended before it could be killed"
  tt.kill_group(proc, signal.SIGKILL)
  proc.log_file.close()
  saved = sorted(int(s) for s in os.listdir(os.path.join(work, "checkpoints")) if s.isdigit())
  assert saved and saved[-1] < steps, saved

  # Rerunning with a changed model is refused before anything runs, in one line that names the
  # key with both values; the checkpoints and config.json stay byte for byte as they were.
  files = _digest(work)
  width = json.load(open(os.path.join(work, "config.json")))["model"]["embed_dim"]
  code, out = tt.run(
    tt.train_command(CLIP_CPU, work, *args, "--config.model.embed_dim=64"),
    environ,
    str(tmp_path / "changed.txt"),
    timeout=120,
  )
  assert code == 1 and len(out.strip().splitlines()) == 1, out[-3000:]
  assert out.startswith(f"error: Cannot resume {work}: its checkpoints (up to step {saved[-1]})")
  assert f"model.embed_dim: {width} -> 64" in out and "another workdir" in out, out
  assert _digest(work) == files

  # The unchanged command resumes, and ends bitwise where the uninterrupted run ended.
  code, out = tt.run(tt.train_command(CLIP_CPU, work, *args), environ, str(tmp_path / "k2.txt"))
  assert code == 0, out[-3000:]
  tt.assert_trees_equal(tt.load_state(work, steps), tt.load_state(ref, steps))
  # The resumed steps saw the same batches: the same losses, bit for bit.
  ref_loss = tt.read_scalars(os.path.join(ref, "tensorboard"))["train/loss"]
  new_loss = tt.read_scalars(os.path.join(work, "tensorboard"))["train/loss"]
  for step in range(saved[-1] + 1, steps + 1):
    assert new_loss[step] == ref_loss[step], step


def _digest(workdir):
  """sha256 of every file of the checkpoints and config.json."""
  out = {}
  for folder, _, names in os.walk(os.path.join(workdir, "checkpoints")):
    for name in names:
      out[os.path.join(folder, name)] = None
  out[os.path.join(workdir, "config.json")] = None
  return {path: hashlib.sha256(open(path, "rb").read()).hexdigest() for path in out}


def test_sigterm_saves_then_a_nan_loss_stops_and_leaves_the_last_checkpoint(tmp_path, cache):
  work = str(tmp_path / "run")
  environ = tt.env(devices=8, cache_dir=cache)
  args = ["--config.checkpoint.every_steps=2", "--config.log.every_steps=1"]
  # Preemption: SIGTERM mid-run saves the current step and exits cleanly.
  proc = tt.start(
    tt.train_command(CLIP_CPU, work, "--config.total_steps=30", *args),
    environ,
    str(tmp_path / "a.txt"),
  )
  tt.wait_for_step(proc, 3, 30)
  os.kill(proc.pid, signal.SIGTERM)
  out = tt.finish(proc, timeout=120)
  assert proc.returncode == 0, out[-3000:]
  saved = int(re.search(r"Preempted: saved step (\d+)", out).group(1))
  assert 3 <= saved < 30 and str(saved) in os.listdir(os.path.join(work, "checkpoints"))
  before = tt.load_state(work, saved)
  assert int(before["step"]) == saved

  # A NaN loss: the run stops with a clear message and writes nothing more.
  script = os.path.join(os.path.dirname(__file__), "nan_loss_train.py")
  nan_cmd = [sys.executable, script] + tt.train_command(CLIP_CPU, work)[3:]
  checkpoints = sorted(os.listdir(os.path.join(work, "checkpoints")))
  code, out = tt.run(
    nan_cmd + [f"--config.total_steps={saved + 4}", "--config.loss.name=nan_test", *args],
    environ,
    str(tmp_path / "b.txt"),
  )
  assert code == 1, out[-3000:]
  assert f"Step {saved + 1}: the loss is nan" in out, out[-3000:]
  assert f"last good checkpoint is step {saved}" in out, out[-3000:]
  assert sorted(os.listdir(os.path.join(work, "checkpoints"))) == checkpoints
  tt.assert_trees_equal(tt.load_state(work, saved), before)

  # With on_nonfinite=skip, the bad steps change nothing but the counters.
  code, out = tt.run(
    nan_cmd
    + [
      f"--config.total_steps={saved + 2}",
      "--config.loss.name=nan_test",
      "--config.optim.on_nonfinite=skip",
      *args,
    ],
    environ,
    str(tmp_path / "c.txt"),
  )
  assert code == 0, out[-3000:]
  after = tt.load_state(work, saved + 2)
  tt.assert_trees_equal(after["params"], before["params"])
  tt.assert_trees_equal(after["opt_state"], before["opt_state"])
  assert int(after["skipped"]) == 2 and int(after["step"]) == saved + 2


def test_two_processes_match_one_process(tmp_path, cache):
  config = "configs/siglip_vit_b16.py:cpu"
  args = [
    "--config.total_steps=4",
    "--config.log.every_steps=1",
    "--config.checkpoint.every_steps=2",
  ]
  port = portpicker.pick_unused_port()
  multi = str(tmp_path / "multi")
  procs = [
    tt.start(
      tt.train_command(
        config,
        multi,
        *args,
        f"--coordinator_address=127.0.0.1:{port}",
        "--num_processes=2",
        f"--process_id={i}",
      ),
      tt.env(devices=4, cache_dir=cache),
      str(tmp_path / f"p{i}.txt"),
    )
    for i in range(2)
  ]
  single = str(tmp_path / "single")
  one = tt.start(
    tt.train_command(config, single, *args),
    tt.env(devices=8, cache_dir=cache),
    str(tmp_path / "one.txt"),
  )
  try:
    outs = [tt.finish(p, timeout=300) for p in procs + [one]]
  finally:
    for p in procs + [one]:
      if p.poll() is None:
        tt.kill_group(p)
  for p, out in zip(procs + [one], outs):
    assert p.returncode == 0, out[-3000:]
  a = tt.read_scalars(os.path.join(multi, "tensorboard"))
  b = tt.read_scalars(os.path.join(single, "tensorboard"))
  for key in ("train/loss", "train/grad_norm", "train/scale", "train/bias"):
    got = [a[key][s] for s in range(1, 5)]
    want = [b[key][s] for s in range(1, 5)]
    np.testing.assert_allclose(got, want, rtol=2e-5, err_msg=key)
  # Both processes wrote the checkpoint together; only process 0 wrote TensorBoard files.
  assert sorted(os.listdir(os.path.join(multi, "checkpoints"))) == ["2", "4"]
  assert len(os.listdir(os.path.join(multi, "tensorboard"))) == 1
