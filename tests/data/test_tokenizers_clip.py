"""CLIP's BPE (`make_tokenizer("clip")`): open_clip's ids exactly, from fixtures and live.

The fixture (tests/data/fixtures/tokenizers.json, written by make_tokenizer_fixtures.py with the
peers' venv) holds `open_clip.tokenize` of a corpus with accents, CJK, emoji, punctuation, HTML
entities, empty, whitespace-only and over-long texts; the default run needs neither torch nor
open_clip nor ftfy.
"""

import gzip
import json
import os
import pickle

import numpy as np
import pytest

from contrastive import data
from contrastive.data import clip_bpe
from contrastive.data import transforms
from tests.data import tokenizer_testing

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "tokenizers.json")


@pytest.fixture(scope="module")
def fx():
  with open(FIXTURE, encoding="utf-8") as f:
    return json.load(f)


@pytest.fixture(scope="module")
def tok():
  return data.make_tokenizer("clip")


@pytest.fixture
def no_ftfy(monkeypatch):
  monkeypatch.setattr(clip_bpe, "_ftfy", None)  # as if ftfy were not installed


@pytest.mark.parametrize("context", [77, 8])
def test_ids_equal_open_clip(fx, tok, no_ftfy, context):
  got = data.tokenize(tok, fx["corpus"], context)
  want = np.asarray(fx["clip"][str(context)])
  assert got.dtype == np.int32 and got.shape == (len(fx["corpus"]), context)
  bad = [t for t, g, w in zip(fx["corpus"], got, want) if not (g == w).all()]
  assert not bad, f"{len(bad)} texts differ from open_clip, first {bad[0]!r}"


def test_fix_text_equals_ftfy_on_the_corpus(fx, no_ftfy):
  assert [clip_bpe.fix_text(t) for t in fx["corpus"]] == fx["ftfy"]


def test_mojibake_needs_ftfy(fx, tok, no_ftfy):
  # The one documented difference: without ftfy, mojibake stays as it is.
  moji = fx["mojibake"]
  assert [clip_bpe.fix_text(t) for t in moji["texts"]] == moji["texts"] != moji["ftfy"]
  assert not (data.tokenize(tok, moji["texts"], 77) == np.asarray(moji["clip"])).all(1).any()


def test_mojibake_with_ftfy(fx, tok, monkeypatch):
  monkeypatch.setattr(clip_bpe, "_ftfy", pytest.importorskip("ftfy"))
  moji = fx["mojibake"]
  np.testing.assert_array_equal(data.tokenize(tok, moji["texts"], 77), moji["clip"])


def test_layout_and_truncation_keep_the_end_token(tok):
  assert (tok.vocab_size, tok.bos_id, tok.eos_id, tok.pad_id, tok.mask_id) == (
    49408,
    49406,
    49407,
    0,
    None,
  )
  empty = data.tokenize(tok, "", 77)
  np.testing.assert_array_equal(empty[:3], [49406, 49407, 0])
  assert (empty[2:] == 0).all()
  a = tok.encode("a")
  assert len(a) == 1
  full = data.tokenize(tok, " ".join(["a"] * 75), 77)  # start + 75 + end fills 77
  cut = data.tokenize(tok, " ".join(["a"] * 200), 77)
  for row in (full, cut):
    assert row[0] == 49406 and row[-1] == 49407 and (row[1:-1] == a[0]).all()
  np.testing.assert_array_equal(data.tokenize(tok, "A Photo of a CAT!", 5)[[0, 4]], [49406, 49407])
  with pytest.raises(ValueError, match="max_len must be at least 3"):
    data.tokenize(tok, "x", 2)


def test_cleaning_rules():
  assert clip_bpe.clean("  Tom &amp;amp; JERRY\t\n ") == "tom & jerry"
  assert clip_bpe.clean("“Ｆｕｌｌ”\u3000ﬁne it’s") == '"full" fine it\'s'
  assert clip_bpe.clean("cafe\u0301") == "caf\u00e9"  # NFC


def test_decode_pickle_and_specs(tok, tmp_path):
  ids = data.tokenize(tok, ["A photo of a cat.", "naïve 猫"], 16)
  assert data.detokenize(tok, ids) == ["a photo of a cat .", "naïve 猫"]
  assert repr(tok) == "ClipTokenizer()"
  again = pickle.loads(pickle.dumps(tok))
  np.testing.assert_array_equal(
    data.tokenize(again, "a red ring", 77), data.tokenize(tok, "a red ring", 77)
  )
  copy = tmp_path / "vocab.txt.gz"
  copy.write_bytes(open(clip_bpe.VOCAB_FILE, "rb").read())
  other = data.make_tokenizer(f"clip:{copy}")
  assert other.encode("a photo") == tok.encode("a photo") and str(copy) in repr(other)


def test_bad_vocabulary_files(tmp_path):
  with pytest.raises(FileNotFoundError, match="nope.txt.gz"):
    data.make_tokenizer(f"clip:{tmp_path / 'nope.txt.gz'}")
  cut = tmp_path / "cut.txt.gz"
  cut.write_bytes(open(clip_bpe.VOCAB_FILE, "rb").read()[:5000])
  with pytest.raises(ValueError, match="cut.txt.gz"):
    data.make_tokenizer(f"clip:{cut}")
  short = tmp_path / "short.txt.gz"
  short.write_bytes(gzip.compress(b"#version\na b\n"))
  with pytest.raises(ValueError, match=r"short.txt.gz.*has 1 merge lines, expected 48894"):
    data.make_tokenizer(f"clip:{short}")


def test_pipeline_frames_like_tokenize(tok):
  # The example transform and `tokenize` share one framing: start and end ids included.
  texts = ["a photo of a cat", " ".join(["dog"] * 100)]
  pad = transforms._pad
  rows = [pad(tok.encode(t), tok, 77) for t in texts]
  np.testing.assert_array_equal(np.stack(rows), data.tokenize(tok, texts, 77))
  assert isinstance(data.make_tokenizer("clip"), clip_bpe.ClipTokenizer)  # a spec string


def test_live_open_clip(fx, tok):
  pytest.importorskip("torch")
  pytest.importorskip("ftfy")
  from tests import peers

  try:
    open_clip = peers.import_open_clip()
  except ImportError as e:
    pytest.skip(f"open_clip is not importable: {e}")
  texts = fx["corpus"] + fx["mojibake"]["texts"] + tokenizer_testing.random_texts(300)
  for context in (77, 12):
    np.testing.assert_array_equal(
      data.tokenize(tok, texts, context), open_clip.tokenize(texts, context_length=context).numpy()
    )


def test_fix_text_differs_from_ftfy_only_in_mojibake_repair(monkeypatch):
  ftfy = pytest.importorskip("ftfy")
  monkeypatch.setattr(clip_bpe, "_ftfy", None)
  repair = {"encode", "decode", "transcode", "decode_inconsistent_utf8"}
  checked = 0
  for text in tokenizer_testing.random_texts(2000, seed=5):
    steps = ftfy.fix_and_explain(text).explanation
    if any(kind in repair or name in repair for kind, name in steps):
      continue
    assert clip_bpe.fix_text(text) == ftfy.fix_text(text), repr(text)
    checked += 1
  assert checked > 1500
