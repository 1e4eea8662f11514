"""Context: every record read once, every distinct text embedded once, clear errors."""

import numpy as np
import pytest

from contrastive.evaluate.context import Context


def _counting(fake):
  embed_fn, prepare, sources = fake
  calls = {"image": 0, "text": 0}

  def counting_prepare(raw):
    for k, v in raw.items():
      calls[k] += len(v)
    return prepare(raw)

  return Context(embed_fn=embed_fn, prepare=counting_prepare, batch_size=8, sources=sources), calls


def test_sources_are_read_once(fake):
  ctx, calls = _counting(fake)
  config = {"name": "fake", "n": 20, "classes": 20}
  x, fields = ctx.load(config)
  x2, _ = ctx.load(dict(config))
  assert x is x2 and calls["image"] == 20
  assert x.shape == (20, 16) and len(fields["caption"]) == 20 and "image" not in fields


def test_texts_are_embedded_once(fake):
  ctx, calls = _counting(fake)
  e = ctx.embed_texts(["c1", "c2", "c1", "c3"])
  np.testing.assert_allclose(e[0], e[2])
  assert calls["text"] == 3
  ctx.embed_texts(["c2", "c4"])
  assert calls["text"] == 4


def test_errors(fake):
  embed_fn, prepare, sources = fake
  ctx = Context(
    embed_fn=embed_fn, prepare=prepare, batch_size=8, sources=sources, image_modality="vision"
  )
  with pytest.raises(ValueError, match=r"no model inputs for a raw batch of \['vision'\]"):
    ctx.load({"name": "fake"})
  ctx = Context(embed_fn=embed_fn, prepare=prepare, batch_size=8, sources=sources)
  with pytest.raises(ValueError, match=r"no 'pixels' field"):
    ctx.load({"name": "fake"}, image_key="pixels")
