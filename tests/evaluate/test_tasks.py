"""The tasks on a fake model whose answers are known (see conftest.py)."""

import numpy as np
import pytest

from contrastive import parallel
from contrastive.evaluate import tasks
from contrastive.evaluate.context import Context

UNIQUE = {"name": "fake", "n": 12, "classes": 12}  # every record its own id
SHARED = {"name": "fake", "n": 24, "classes": 6}  # four records per id


def _ctx(fake, mesh=None):
  embed_fn, prepare, sources = fake
  return Context(
    embed_fn=embed_fn, prepare=prepare, batch_size=8, mesh=mesh, sources=sources, block_size=5
  )


def test_zeroshot_is_perfect(fake):
  m = tasks.zeroshot(_ctx(fake), source=SHARED)
  assert m["top1"] == 1.0 and m["top5"] == 1.0 and m["mean_per_class"] == 1.0
  assert m["per_class/c3"] == 1.0


def test_zeroshot_marginal_uses_the_context_scale(fake):
  ctx = _ctx(fake)
  with pytest.raises(ValueError, match="needs the model's logit scale"):
    tasks.zeroshot(ctx, source=SHARED, ensemble="marginal")
  with pytest.raises(ValueError, match="ensemble must be 'mean' or 'marginal'"):
    tasks.zeroshot(ctx, source=SHARED, ensemble="max")
  assert tasks.zeroshot(ctx, source=SHARED, ensemble="marginal", scale=5.0)["top1"] == 1.0
  ctx.logit_scale = 30.0
  assert tasks.zeroshot(ctx, source=SHARED, ensemble="marginal")["top1"] == 1.0


def test_retrieval_is_perfect_with_unique_ids(fake):
  m = tasks.retrieval(_ctx(fake, parallel.make_mesh()), source=UNIQUE, subset_key="heldout")
  assert m["image_to_text/recall@1"] == 1.0 and m["text_to_image/recall@1"] == 1.0
  assert m["heldout/image_to_text/recall@1"] == 1.0 and m["seen/text_to_image/mrr"] == 1.0


def test_retrieval_counts_same_meaning_hits(fake):
  ctx = _ctx(fake)
  strict = tasks.retrieval(ctx, source=SHARED)
  # Four identical images per caption: ties count against the query, so rank 4.
  assert strict["text_to_image/median_rank"] == 4.0
  assert strict["image_to_text/recall@1"] == 0.0
  meaning = tasks.retrieval(ctx, source=SHARED, meaning_key="meaning_id")
  assert meaning["image_to_text/recall@1"] == 1.0 and meaning["text_to_image/recall@1"] == 1.0


def test_retrieval_with_several_captions(fake):
  m = tasks.retrieval(_ctx(fake), source={**UNIQUE, "captions_per_image": 3})
  assert m["image_to_text/recall@1"] == 1.0 and m["text_to_image/recall@1"] == 1.0


def test_binding(fake):
  m = tasks.binding(_ctx(fake), source=SHARED, subset_key="heldout")
  assert m["swap"] == 1.0 and "change" not in m  # every "change" negative is invalid
  assert m["count/swap"] == 24.0
  assert m["seen/swap"] == 1.0 and m["heldout/count/swap"] == 12.0


def test_geometry_keeps_pairs(fake):
  ctx = _ctx(fake)
  ctx.task_name = "geo"
  m = tasks.geometry(ctx, source=UNIQUE, separability=False)
  assert m["alignment"] == pytest.approx(0.0, abs=1e-6)
  assert m["cosine/positive"] == pytest.approx(1.0, abs=1e-6)
  x, y = ctx.pairs["geo"]
  np.testing.assert_allclose(x, y)


def test_probes(fake):
  ctx = _ctx(fake)
  train = {**SHARED, "n": 48}
  assert tasks.knn(ctx, train_source=train, test_source=SHARED, k=3)["accuracy"] == 1.0
  m = tasks.linear_probe(ctx, train_source=train, test_source=SHARED, l2_grid=(1e-3,), steps=30)
  assert m["accuracy"] == 1.0


def test_errors(fake):
  ctx = _ctx(fake)
  with pytest.raises(ValueError, match=r"no field 'score'.*'caption'"):
    tasks.zeroshot(ctx, source=SHARED, label_key="score")
  with pytest.raises(ValueError, match=r"one entry per negative type \('a',\)"):
    tasks.binding(ctx, source=SHARED, negative_types=["a"])
  with pytest.raises(ValueError, match=r"Unknown evaluation source 'nope'.*'fake'"):
    tasks.retrieval(ctx, source={"name": "nope"})


@pytest.mark.parametrize("kind", sorted(tasks.TASKS))
def test_task_table_contract(kind):
  """Every task takes the context, then keyword-only options, and is documented."""
  import inspect

  fn = tasks.TASKS[kind]
  params = list(inspect.signature(fn).parameters.values())
  assert params[0].name == "ctx"
  assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[1:])
  assert fn.__doc__
