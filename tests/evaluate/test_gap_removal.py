"""GR-CLIP's gap removal at evaluation, against a numpy transcription, on a fake model with a
known gap: images at `normalize(v + g)`, captions at `normalize(v - g)` (see conftest.py)."""

import doctest

import jax.numpy as jnp
import numpy as np
import pytest

from contrastive.evaluate import gap_removal
from contrastive.evaluate import runner
from contrastive.evaluate import tasks
from contrastive.evaluate.context import Context
from tests.evaluate import conftest

UNIQUE = {"name": "fake", "n": 12, "classes": 12}
REFERENCE = {"name": "fake", "n": 40, "classes": 1000, "offset": 100}  # ids 100 to 139
GAP = np.random.default_rng(7).normal(size=conftest.DIM).astype(np.float32)
GAP *= 1.5 / np.linalg.norm(GAP)


def _unit(x):
  return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def gapped_embed_fn(batch):
  out = conftest.embed_fn(batch)
  sign = {"image": 1.0, "text": -1.0}
  return {k: _unit(v + sign[k] * jnp.asarray(GAP)) for k, v in out.items()}


def _ctx():
  return Context(
    embed_fn=gapped_embed_fn,
    prepare=conftest.prepare,
    batch_size=8,
    sources={"fake": conftest.fake_source},
    block_size=5,
  )


def _numpy_embeddings(source):
  ids = np.array([(i + source.get("offset", 0)) % source["classes"] for i in range(source["n"])])
  v = conftest.TABLE[ids].astype(np.float64)
  norm = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)
  return norm(v + GAP), norm(v - GAP)


def test_remove_gap_is_the_centered_unit_rows():
  x = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
  mean = np.array([0.5, -1.0, 0.0, 2.0], np.float32)
  expected = (x - mean) / np.linalg.norm(x - mean, axis=1, keepdims=True)
  np.testing.assert_allclose(gap_removal.remove_gap(x, mean), expected, rtol=1e-6)
  with pytest.raises(ValueError, match=r"\[num, dim\] embeddings and a \[dim\] mean"):
    gap_removal.remove_gap(x, mean[:3])


def test_gap_removed_retrieval_equals_numpy():
  task = {"kind": "retrieval", "source": UNIQUE}
  removed = tasks.TASKS["gap_removed"](_ctx(), task=task, reference=REFERENCE)
  plain = tasks.retrieval(_ctx(), source=UNIQUE)
  x, y = _numpy_embeddings(UNIQUE)
  xr, yr = _numpy_embeddings(REFERENCE)
  np.testing.assert_allclose(removed["gap_before"], np.linalg.norm(xr.mean(0) - yr.mean(0)), 1e-5)
  center = lambda a, m: (a - m) / np.linalg.norm(a - m, axis=1, keepdims=True)
  for a, b, what in [(x, y, None), (center(x, xr.mean(0)), center(y, yr.mean(0)), "removed")]:
    sims = a @ b.T
    i2t = np.mean(np.argmax(sims, axis=1) == np.arange(len(a)))
    t2i = np.mean(np.argmax(sims, axis=0) == np.arange(len(a)))
    got = removed if what else plain
    assert got["image_to_text/recall@1"] == pytest.approx(i2t)
    assert got["text_to_image/recall@1"] == pytest.approx(t2i)
  # The gap hurts retrieval here and its removal restores it: the comparison can fail.
  assert plain["image_to_text/recall@1"] < 1.0 == removed["image_to_text/recall@1"]


def test_gap_removed_runs_from_a_config_and_checks_its_task():
  config = {
    "ret_gr": {
      "kind": "gap_removed",
      "task": {"kind": "retrieval", "source": UNIQUE},
      "reference": REFERENCE,
    }
  }
  runner.check_tasks(config)
  out = runner.run_tasks(
    gapped_embed_fn,
    config,
    prepare=conftest.prepare,
    batch_size=8,
    sources={"fake": conftest.fake_source},
  )
  assert out["ret_gr/image_to_text/recall@1"] == 1.0
  with pytest.raises(ValueError, match="gap_removed's task needs a kind"):
    tasks.TASKS["gap_removed"](_ctx(), task={"kind": "nope"}, reference=REFERENCE)


def test_docstring_example():
  result = doctest.testmod(gap_removal, optionflags=doctest.NORMALIZE_WHITESPACE)
  assert result.attempted > 0 and result.failed == 0
