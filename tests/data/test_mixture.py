"""`data.mixture`: several sources by weight, each shuffled on its own, counted, resumed
exactly; bad entries fail in one line."""

import numpy as np
import pytest

from contrastive import data

BATCH = 16


def _config(**mixture):
  c = data.default_config()
  c.update(batch_size=BATCH, image_size=16, tokenizer="words", max_len=24, num_workers=0)
  c.synthetic.update(train_size=400)
  c.mixture = mixture
  return c


def _two(w_one=3.0, w_many=1.0):
  return _config(
    one=dict(weight=w_one, synthetic=dict(max_objects=1)),
    many=dict(weight=w_many, synthetic=dict(max_objects=3, object_weights=(0, 0, 1))),
  )


def test_sources_come_in_proportion_to_their_weights():
  it = data.make_pipeline(_two(), training=True, process_index=0, process_count=1)
  batches = [next(it) for _ in range(12)]
  ids = np.concatenate([b["source_id"] for b in batches])
  objects = np.concatenate([b["num_objects"] for b in batches])
  # Entries are sorted by name: "many" is 0, "one" is 1; the interleave is exact, 1 in 4.
  assert np.sum(ids == 0) == len(ids) // 4
  assert set(objects[ids == 0]) == {3} and set(objects[ids == 1]) == {1}  # each its own source
  assert it.source_counts == {"many": len(ids) // 4, "one": 3 * len(ids) // 4}


def test_a_restored_iterator_continues_with_the_same_examples():
  it = data.make_pipeline(_two(), training=True, process_index=0, process_count=1)
  for _ in range(3):
    next(it)
  state = it.get_state()
  want = [next(it) for _ in range(3)]
  again = data.make_pipeline(_two(), training=True, process_index=0, process_count=1)
  again.set_state(state)
  for a, b in zip(want, [next(again) for _ in range(3)]):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  assert again.source_counts == it.source_counts


def test_a_zero_weight_leaves_its_source_out():
  it = data.make_pipeline(_two(w_many=0.0), training=True, process_index=0, process_count=1)
  assert set(next(it)["source_id"].tolist()) == {0} and list(it.source_counts) == ["one"]


@pytest.mark.parametrize(
  "mixture,message",
  [
    (dict(a=dict(weight=0.0), b=dict(weight=0)), "gives every source weight zero"),
    (dict(a=dict(weight=-1.0)), r"data\.mixture\.a\.weight must be a finite number >= 0"),
    (dict(a=dict(weight=1.0, image_size=32)), r"data\.mixture\.a sets 'image_size'"),
    (dict(a=dict(weight=1.0, synthetic=dict(shape_variants=2))), "groups of 2"),
  ],
)
def test_bad_mixtures_say_what_is_wrong(mixture, message):
  with pytest.raises(ValueError, match=message):
    data.make_pipeline(_config(**mixture), training=True, process_index=0, process_count=1)


def test_evaluation_reads_the_runs_own_source():
  it = data.make_pipeline(_two(), training=False, process_index=0, process_count=1)
  assert "source_id" not in next(it) and it.source_counts == {}
