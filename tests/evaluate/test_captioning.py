"""The caption task and its metrics: exact match and token accuracy against hand-counted cases,
subsets, several references, and a model without a decoder."""

import numpy as np
import pytest

from contrastive.evaluate import captioning
from contrastive.evaluate import runner
from contrastive.evaluate.context import Context
from tests.evaluate import conftest

BOS, EOS, L = 9, 1, 5


def test_metrics_by_hand():
  refs = np.array([[BOS, 4, 5, EOS, 0], [BOS, 6, EOS, 0, 0], [BOS, 7, 8, EOS, 0]])
  gen = np.array([[BOS, 4, 5, EOS, 0], [BOS, 6, 6, EOS, 0], [BOS, 8, 8, EOS, 0]])
  out = captioning.caption_metrics(gen, refs, subsets={"odd": np.array([False, True, False])})
  assert out["exact_match"] == pytest.approx(1 / 3)
  # Reference tokens after the start: 3 + 2 + 3 = 8; right: 3 + 1 (6) + 2 (8, EOS) = 6.
  assert out["token_accuracy"] == pytest.approx(6 / 8)
  assert out["odd/exact_match"] == 0.0 and out["odd/token_accuracy"] == pytest.approx(1 / 2)


def test_any_reference_matches_exactly():
  refs = np.array([[[BOS, 4, EOS, 0, 0], [BOS, 5, EOS, 0, 0]]])
  assert captioning.caption_metrics(np.array([[BOS, 5, EOS, 0, 0]]), refs)["exact_match"] == 1.0


def test_shapes_must_agree():
  with pytest.raises(ValueError, match=r"generated must be \[n, L\]"):
    captioning.caption_metrics(np.zeros((2, 5)), np.zeros((3, 5)))


def test_padded_batches_cover_every_index_once():
  batches = captioning.padded_batches(10, 4)
  assert [len(b) for b in batches] == [4, 4, 4]
  assert sorted(set(np.concatenate(batches).tolist())) == list(range(10))


def _prepare(raw):
  """Images to their class ids; a caption 'a picture of cK' to [BOS, 4 + K, EOS, 0, 0]."""
  out = {}
  if "image" in raw:
    out["image"] = conftest.prepare({"image": raw["image"]})["image"]
  if "text" in raw:
    ids = conftest.prepare({"text": raw["text"]})["text"]
    out["text"] = np.array([[BOS, 4 + i, EOS, 0, 0] for i in ids], np.int32)
  return out


def _caption_fn(images, *, method, beam_size):
  """Right for even classes; for odd ones the right word, then a wrong one."""
  del method, beam_size
  return np.array([[BOS, 4 + c, EOS if c % 2 == 0 else 3, 0, 0] for c in images], np.int32)


def test_the_caption_task_scores_the_generated_captions():
  ctx = Context(
    embed_fn=conftest.embed_fn,
    prepare=_prepare,
    batch_size=8,
    sources={"fake": conftest.fake_source},
    caption_fn=_caption_fn,
  )
  tasks = {"cap": dict(kind="caption", source=dict(name="fake", n=12), subset_key="heldout")}
  out = runner.run_tasks(None, tasks, prepare=_prepare, batch_size=8, context=ctx)
  assert out["cap/exact_match"] == pytest.approx(0.5)  # classes 0, 2, 4 of 0..5
  assert out["cap/token_accuracy"] == pytest.approx(0.75)  # 2 of 2 tokens, or 1 of 2
  # `heldout` is the odd records, whose classes (i % 6) are odd: all captions half right.
  assert out["cap/heldout/exact_match"] == 0.0 and out["cap/seen/exact_match"] == 1.0


def test_a_model_without_a_decoder_cannot_caption():
  ctx = Context(
    embed_fn=conftest.embed_fn,
    prepare=_prepare,
    batch_size=8,
    sources={"fake": conftest.fake_source},
  )
  tasks = {"cap": dict(kind="caption", source=dict(name="fake", n=12))}
  with pytest.raises(ValueError, match="needs a model with a captioning decoder"):
    runner.run_tasks(None, tasks, prepare=_prepare, batch_size=8, context=ctx)
