"""`python -m contrastive.evaluate` end to end: a tiny model on the built-in data, evaluated
untrained (no checkpoint yet), then trained two steps (`python -m contrastive.train`) and
evaluated again from its checkpoint; both evaluations write the report files."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

CONFIG = textwrap.dedent("""
    import ml_collections
    from contrastive import models


    def get_config():
      c = ml_collections.ConfigDict()
      c.seed = 0
      c.total_steps = 2
      c.data = dict(source="synthetic", image_size=16, max_len=32, batch_size=16)
      c.model = models.model_config(image="mu/8", text="mu", image_size=16, vocab_size=259,
                                    max_len=32, embed_dim=16)
      views = lambda split: dict(name="synthetic", split=split, num_examples=16, image_size=16)
      c.eval = dict(batch_size=16, at_end=False, tasks=dict(
          shape=dict(kind="zeroshot", source=views("shape"), ks=(1, 5)),
          test=dict(kind="retrieval", source=views("test"), meaning_key="meaning_id",
                    subset_key="heldout"),
          geometry=dict(kind="geometry", source=views("test"), separability=False)))
      return c
""")


def _run(args, env):
  result = subprocess.run(
    [sys.executable, "-m", *args], capture_output=True, text=True, env=env, timeout=400
  )
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
  return result.stdout


def test_cli_untrained_then_trained(tmp_path):
  """The CLI on a fresh workdir (the untrained baseline), then after two training steps."""
  config = tmp_path / "tiny.py"
  config.write_text(CONFIG)
  workdir, out = tmp_path / "run", tmp_path / "run" / "eval"
  xla = [
    f
    for f in os.environ.get("XLA_FLAGS", "").split()
    if not f.startswith("--xla_force_host_platform_device_count")
  ]
  env = {
    **os.environ,
    "PYTHONPATH": os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", ""),
    # One device: the cheapest compilation (the mesh code paths are tested in-process).
    "XLA_FLAGS": " ".join(xla + ["--xla_force_host_platform_device_count=1"]),
    # The second evaluation reuses the first one's compiled programs.
    "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "cache"),
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1",
  }
  evaluate = [
    "contrastive.evaluate",
    f"--config={config}",
    f"--workdir={workdir}",
    "--config.eval.tasks.shape.ks=(1,)",
  ]
  stdout = _run(evaluate, env)
  assert "shape/top1" in stdout
  assert {
    "metrics.json",
    "history.jsonl",
    "pca.png",
    "similarity_histogram.png",
    "spectrum.png",
  } <= {p.name for p in out.iterdir()}
  metrics = json.loads((out / "metrics.json").read_text())
  assert metrics["step"] == 0
  assert 0 <= metrics["shape/top1"] <= 1 and "shape/top5" not in metrics  # the override
  assert "test/heldout/image_to_text/recall@1" in metrics

  _run(["contrastive.train", f"--config={config}", f"--workdir={workdir}"], env)
  _run(evaluate, env)
  metrics = json.loads((out / "metrics.json").read_text())
  assert metrics["step"] == 2
  history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
  assert [h["step"] for h in history] == [0, 2]
  assert (out / "curves.png").exists()


def test_a_missing_checkpoint_step_is_an_error(tmp_path):
  import runpy

  from contrastive.evaluate import workdir  # what the CLI calls

  config = tmp_path / "tiny.py"
  config.write_text(CONFIG)
  get_config = runpy.run_path(str(config))["get_config"]
  with pytest.raises(FileNotFoundError):
    workdir.evaluate_workdir(get_config(), tmp_path / "run", step=5)
