"""run_tasks / evaluate: config checks, metric keys, the report, the built-in dataset."""

import json
import zlib

import jax.numpy as jnp
import numpy as np
import pytest

from contrastive.evaluate import runner


def test_check_tasks_names_the_problem():
  with pytest.raises(
    ValueError,
    match=r"Task 'a' has unknown kind 'zero_shot'; known: \["
    r"'binding', 'caption', 'gap_removed', 'geometry', 'knn', 'linear_probe', "
    r"'retrieval', 'zeroshot'\]",
  ):
    runner.check_tasks({"a": {"kind": "zero_shot", "source": {}}})
  with pytest.raises(
    ValueError,
    match=r"Task 'b' \(retrieval\) has unknown option\(s\) "
    r"\['k'\]; known: \['source', 'caption_key'",
  ):
    runner.check_tasks({"b": {"kind": "retrieval", "source": {}, "k": 3}})
  with pytest.raises(ValueError, match=r"Task 'c' \(knn\) needs option\(s\) \['test_source'\]"):
    runner.check_tasks({"c": {"kind": "knn", "train_source": {}}})
  assert runner.check_tasks(runner.default_tasks(probe=True))["retrieval"]["kind"] == "retrieval"


def test_run_tasks_prefixes_metrics(fake):
  embed_fn, prepare, sources = fake
  tasks = {
    "zs": {"kind": "zeroshot", "source": {"name": "fake"}},
    "ret": {"kind": "retrieval", "source": {"name": "fake"}, "meaning_key": "meaning_id"},
  }
  m = runner.run_tasks(embed_fn, tasks, prepare=prepare, batch_size=8, sources=sources)
  assert m["zs/top1"] == 1.0 and m["ret/image_to_text/recall@1"] == 1.0
  assert all(k.startswith(("zs/", "ret/")) for k in m)


def test_evaluate_writes_the_report(fake, tmp_path):
  embed_fn, prepare, sources = fake
  tasks = {
    "geo": {"kind": "geometry", "source": {"name": "fake", "classes": 24}, "separability": False}
  }
  for step in (1, 2):
    m = runner.evaluate(
      embed_fn, tasks, prepare=prepare, batch_size=8, sources=sources, workdir=tmp_path, step=step
    )
  assert m["geo/gap"] == pytest.approx(0.0, abs=1e-6)
  names = {p.name for p in tmp_path.iterdir()}
  assert {
    "metrics.json",
    "history.jsonl",
    "pca.png",
    "similarity_histogram.png",
    "spectrum.png",
    "curves.png",
  } <= names
  assert json.loads((tmp_path / "metrics.json").read_text())["step"] == 2


# A crude model for the built-in dataset: a random projection of the pixels, and hashed bags of
# words. It is untrained: the test checks the wiring and the ranges, not the numbers.
SIZE, DIM, VOCAB = 16, 8, 64
W_IMAGE = np.random.default_rng(0).normal(size=(SIZE * SIZE * 3, DIM)).astype(np.float32)
W_TEXT = np.random.default_rng(1).normal(size=(VOCAB, DIM)).astype(np.float32)


def _prepare(raw):
  if "image" in raw:
    return {"image": np.asarray(raw["image"], np.float32).reshape(len(raw["image"]), -1) / 255}
  bags = np.zeros((len(raw["text"]), VOCAB), np.float32)
  for i, s in enumerate(raw["text"]):
    for w in s.split():
      bags[i, zlib.crc32(w.encode()) % VOCAB] += 1
  return {"text": bags}


def _embed(batch):
  out = {}
  for k, w in (("image", W_IMAGE), ("text", W_TEXT)):
    if k in batch:
      z = batch[k] @ w
      out[k] = z / jnp.linalg.norm(z, axis=1, keepdims=True)
  return out


def test_default_tasks_on_the_built_in_dataset(tmp_path):
  tasks = runner.default_tasks(num_examples=16, image_size=SIZE)
  with pytest.raises(ValueError, match="needs the model's logit scale"):
    runner.run_tasks(
      _embed, {"zeroshot_shape": tasks.zeroshot_shape}, prepare=_prepare, batch_size=8
    )
  m = runner.evaluate(
    _embed, tasks, prepare=_prepare, batch_size=8, workdir=tmp_path, step=0, logit_scale=10.0
  )
  for key in (
    "zeroshot_shape/top1",
    "zeroshot_colour/top5",
    "zeroshot_count/top1",
    "retrieval/image_to_text/recall@1",
    "retrieval/heldout/text_to_image/mrr",
    "retrieval/seen/rsum",
    "binding/attribute_swap",
    "binding/relation_swap",
    "binding/attribute_change",
    "binding/heldout/mean",
    "geometry/gap",
    "geometry/effective_rank/image",
  ):
    assert key in m, sorted(m)
  for key, value in m.items():
    if "recall@" in key or "top" in key or key.startswith("binding/") and "count" not in key:
      assert 0.0 <= value <= 1.0, key
  assert "zeroshot_count/top5" not in m  # three classes
  assert (tmp_path / "pca.png").exists()
