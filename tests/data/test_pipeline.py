"""The pipeline: determinism, process shards, save/restore, bad records, evaluation streams."""

import io
import os
import subprocess
import sys

from array_record.python import array_record_module
import grain
import numpy as np
from PIL import Image
import pytest

from contrastive.data import config as config_lib
from contrastive.data import pipeline
from contrastive.data import records
from contrastive.data import sources


def _config(**kwargs):
  cfg = config_lib.default_config()
  cfg.image_size = 16
  cfg.batch_size = 8
  cfg.max_len = 16
  cfg.synthetic.train_size = 48
  cfg.update(kwargs)
  return cfg


def _take(it, n):
  return [next(it) for _ in range(n)]


def _equal(a, b):
  return len(a) == len(b) and all(
    set(x) == set(y) and all(np.array_equal(x[k], y[k]) for k in x) for x, y in zip(a, b)
  )


def test_batch_layout():
  cfg = _config(hard_negatives=True)
  it = pipeline.make_pipeline(cfg, split="train")
  b = next(it)
  assert b["image"].shape == (8, 16, 16, 3) and b["image"].dtype == np.float32
  assert b["text"].shape == (8, 16) and b["text"].dtype == np.int32
  assert b["hard_negatives"].shape == (8, 3, 16) and b["hard_negatives"].dtype == np.int32
  assert b["hard_negatives_mask"].shape == (8, 3) and b["hard_negatives_mask"].dtype == bool
  assert b["mask"].all() and not b["heldout"].any()
  for key in ("index", "meaning_id", "num_objects", "label"):
    assert b[key].shape == (8,) and b[key].dtype == np.int32
  assert (b["text"][:, 0] > 0).all() and (b["text"][:, -1] == it.tokenizer.eos_id).all()
  assert it.batch_size == 8 and it.global_batch_size == 8 and it.num_batches is None
  # The unaugmented image is the normalized source image.
  src = sources.make_source(cfg, split="train")
  raw = src[int(b["index"][0])]["image"]
  np.testing.assert_allclose(
    b["image"][0],
    (raw / 255.0 - np.array([0.48145466, 0.4578275, 0.40821073]))
    / np.array([0.26862954, 0.26130258, 0.27577711]),
    atol=1e-4,
  )


def test_same_seed_same_batches_and_epochs_reshuffle():
  a = _take(pipeline.make_pipeline(_config(), split="train"), 12)
  b = _take(pipeline.make_pipeline(_config(), split="train"), 12)
  c = _take(pipeline.make_pipeline(_config(), split="train", seed=1), 12)
  assert _equal(a, b) and not _equal(a, c)
  epochs = [np.concatenate([x["index"] for x in a[i : i + 6]]) for i in (0, 6)]
  for e in epochs:
    assert sorted(e) == list(range(48))  # each epoch covers the split once
  assert not np.array_equal(epochs[0], epochs[1])  # and is shuffled anew


@pytest.mark.parametrize("count", [2, 4])
def test_processes_see_disjoint_shards_covering_the_epoch(count):
  seen = []
  for p in range(count):
    it = pipeline.make_pipeline(_config(), split="train", process_index=p, process_count=count)
    assert it.batch_size == 8 // count
    seen.append(np.concatenate([b["index"] for b in _take(it, 48 // 8)]))
  for i in range(count):
    for j in range(i):
      assert not set(seen[i]) & set(seen[j])
  assert sorted(np.concatenate(seen)) == list(range(48))
  # Evaluation: the same, with padding rows, and the same number of batches everywhere.
  cfg = _config(batch_size=4 * count)
  cfg.synthetic.test_size = 10
  rows = []
  for p in range(count):
    it = pipeline.make_pipeline(
      cfg, split="test", training=False, process_index=p, process_count=count
    )
    batches = list(it)
    assert len(batches) == it.num_batches == (1 if count == 4 else 2)
    rows += [i for b in batches for i, m in zip(b["index"], b["mask"]) if m]
    assert all(b["image"].shape[0] == 4 for b in batches)
  assert sorted(rows) == list(range(10))


def test_restored_iterator_continues_exactly():
  it = pipeline.make_pipeline(_config(), split="train")
  _take(it, 3)
  state = it.get_state()
  expected = _take(it, 4)
  fresh = pipeline.make_pipeline(_config(), split="train")
  fresh.set_state(state)
  assert _equal(_take(fresh, 4), expected)
  # Evaluation iterators restore too, through the padded end.
  cfg = _config()
  cfg.synthetic.test_size = 13
  ev = pipeline.make_pipeline(cfg, split="test", training=False)
  first = next(ev)
  state = ev.get_state()
  rest = list(ev)
  again = pipeline.make_pipeline(cfg, split="test", training=False)
  again.set_state(state)
  assert _equal(list(again), rest) and len(rest) == 1 and rest[0]["mask"].sum() == 5
  assert first["mask"].all()


def test_orbax_checkpoint_with_worker_processes(tmp_path, arrayrecord_dir):
  """Saved with orbax next to a model state, with a worker process and a corrupt record."""
  ocp = pytest.importorskip("orbax.checkpoint")
  cfg = _config(
    source="arrayrecord",
    batch_size=4,
    num_workers=1,
    random_resized_crop=True,
    crop_scale=(0.5, 1.0),
    text_delete_prob=0.2,
    text_mask_prob=0.2,
  )
  cfg.arrayrecord.path = arrayrecord_dir
  it = pipeline.make_pipeline(cfg, split="train")
  try:
    _take(it, 2)
    mngr = ocp.CheckpointManager(str(tmp_path / "ckpt"))
    state = {"w": np.arange(3.0)}
    mngr.save(
      2,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data_iter=grain.checkpoint.CheckpointSave(it)
      ),
    )
    mngr.wait_until_finished()
    expected = _take(it, 6)  # 24 examples: two epochs of 12, one corrupt image in each
    skipped = it.num_skipped
  finally:
    it.close()
  assert skipped >= 1
  fresh = pipeline.make_pipeline(cfg, split="train")
  try:
    mngr.restore(
      2,
      args=ocp.args.Composite(
        state=ocp.args.StandardRestore(state), data_iter=grain.checkpoint.CheckpointRestore(fresh)
      ),
    )
    assert _equal(_take(fresh, 6), expected)
    assert fresh.num_skipped == skipped
  finally:
    fresh.close()
  # A finite evaluation stream through a worker equals the in-process one.
  cfg.num_workers = 0
  plain = list(pipeline.make_pipeline(cfg, split="train", training=False))
  cfg.num_workers = 1
  ev = pipeline.make_pipeline(cfg, split="train", training=False)
  try:
    assert _equal(list(ev), plain) and ev.num_skipped == 1
  finally:
    ev.close()


_WORKER_EXIT = r"""
from contrastive.data import config as config_lib, pipeline
if __name__ == "__main__":
  cfg = config_lib.default_config()
  cfg.update(image_size=16, batch_size=8, max_len=16, num_workers=1)
  it = pipeline.make_pipeline(cfg, split="train")
  batches = [next(it) for _ in range(3)]  # still alive at exit, as a trainer's last batch is
  it.close()
  print(batches[-1]["image"].shape)
"""


def test_a_process_with_a_worker_exits_without_leaking_shared_memory(tmp_path, repo_root):
  script = tmp_path / "worker_exit.py"  # spawned workers import the main module: a file
  script.write_text(_WORKER_EXIT)
  env = dict(os.environ, PYTHONPATH=repo_root, JAX_PLATFORMS="cpu")
  proc = subprocess.run(
    [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120, check=True
  )
  assert "(8, 16, 16, 3)" in proc.stdout
  assert "leaked shared_memory" not in proc.stderr, proc.stderr[-2000:]


def test_corrupt_and_captionless_records_are_skipped_and_counted(tmp_path, arrayrecord_dir):
  # Append a shard with an unreadable record, an empty caption and a good record.
  info = records.read_info(arrayrecord_dir)
  name = "train-extra.array_record"
  writer = array_record_module.ArrayRecordWriter(
    os.path.join(arrayrecord_dir, name), "group_size:1"
  )
  buf = io.BytesIO()
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, "PNG")
  writer.write(b"garbage, not a record")
  writer.write(records.encode_record(image=buf.getvalue(), captions=[""], key="empty"))
  writer.write(records.encode_record(image=buf.getvalue(), captions=["fine"], key="good"))
  writer.close()
  info["splits"]["train"]["shards"].append(name)
  records.write_info(arrayrecord_dir, info)

  cfg = _config(source="arrayrecord", batch_size=4)
  cfg.arrayrecord.path = arrayrecord_dir
  ev = pipeline.make_pipeline(cfg, split="train", training=False)
  batches = list(ev)
  keys = sum(int(b["mask"].sum()) for b in batches)
  assert keys == 15 - 3 and ev.num_skipped == 3  # corrupt image, garbage record, empty caption
  assert len(batches) == ev.num_batches == 4
  train = pipeline.make_pipeline(cfg, split="train")
  _take(train, 6)  # two epochs of 15 records, 12 usable in each
  assert train.num_skipped == 6


def test_views_and_evaluation_extras():
  cfg = _config(batch_size=5)
  cfg.synthetic.view_size = 10
  for view in ("shape", "colour", "count"):
    it = pipeline.make_pipeline(cfg, split=view, training=False)
    labels = np.concatenate([b["label"] for b in it])
    assert len(labels) == 10 and labels.min() >= 0
  cfg.synthetic.test_size = 5
  b = next(pipeline.make_pipeline(cfg, split="test", training=False, hard_negatives=True))
  src = sources.make_source(cfg, split="test")
  record = src[int(b["index"][0])]
  tok = pipeline.make_tokenizer(cfg)
  for k in range(3):
    assert tok.decode(b["hard_negatives"][0, k]) == record["hard_negative_captions"][k][:15]
  assert b["meaning_id"][0] == record["meaning_id"] and b["heldout"][0] == record["heldout"]


def test_shape_variant_groups_share_a_batch_and_are_shuffled():
  cfg = _config(synthetic=dict(train_size=48, shape_variants=4))
  batches = _take(pipeline.make_pipeline(cfg, split="train"), 12)
  for b in batches:
    groups = b["index"] // 4
    assert all((groups == g).sum() == 4 for g in groups)  # whole groups only
  epochs = [np.concatenate([x["index"] for x in batches[i : i + 6]]) for i in (0, 6)]
  assert sorted(epochs[0]) == list(range(48))
  assert not np.array_equal(epochs[0], np.arange(48))  # shuffled...
  assert not np.array_equal(epochs[0], epochs[1])  # ...anew each epoch
  with pytest.raises(ValueError, match="multiple of 4"):
    pipeline.make_pipeline(_config(batch_size=6, synthetic=dict(shape_variants=4)), split="train")
