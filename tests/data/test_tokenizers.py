"""Tokenizers and their specs: round trips, fixed length with 0 padding, the optional extra."""

import pickle
import sys

import numpy as np
import pytest

from contrastive.data import shapes
from contrastive.data import tokenizer_specs
from contrastive.data import tokenizers as T

TEXTS = [
  "a small red circle above a large blue square",
  "héllo wörld ✓",
  "there is a large white ring on the left",
]


def test_bytes_round_trip_and_layout():
  tok = tokenizer_specs.make_tokenizer("bytes")
  ids = T.tokenize(tok, TEXTS, 64)
  assert ids.shape == (3, 64) and ids.dtype == np.int32
  assert T.detokenize(tok, ids) == TEXTS
  n = len(TEXTS[0].encode())
  assert ids[0, n] == tok.eos_id and (ids[0, n + 1 :] == 0).all() and (ids[0, :n] > 2).all()
  assert ids.max() < tok.vocab_size
  cut = T.tokenize(tok, TEXTS[0], 8)
  assert cut.shape == (8,) and cut[-1] == tok.eos_id and T.detokenize(tok, cut) == TEXTS[0][:7]
  assert T.detokenize(tok, T.tokenize(tok, "", 4)) == ""


def test_sentencepiece_round_trip(tmp_path):
  spm = pytest.importorskip("sentencepiece")
  corpus = TEXTS * 30 + [f"a small shape number {i}" for i in range(60)]
  spm.SentencePieceTrainer.Train(
    sentence_iterator=iter(corpus), model_prefix=str(tmp_path / "sp"), vocab_size=50, minloglevel=2
  )
  tok = tokenizer_specs.make_tokenizer(str(tmp_path / "sp.model"))
  assert isinstance(tok, T.SentencePieceTokenizer) and tok.pad_id == 0 and tok.offset == 1
  ids = T.tokenize(tok, TEXTS[::2], 48)
  assert (ids[:, 0] > 0).all() and ids.max() < tok.vocab_size
  assert T.detokenize(tok, ids) == TEXTS[::2]
  again = pickle.loads(pickle.dumps(tok))
  np.testing.assert_array_equal(T.tokenize(again, TEXTS[::2], 48), ids)


def test_bpe_train_and_round_trip(tmp_path):
  pytest.importorskip("tokenizers")
  path = str(tmp_path / "tok" / "tokenizer.json")
  tok = T.train_bpe(TEXTS * 20, path, vocab_size=300, lowercase=False)
  assert isinstance(tok, T.HFTokenizer) and tok.offset == 0
  assert (tok.pad_id, tok.eos_id, tok.mask_id) == (0, 1, 2)
  loaded = pickle.loads(pickle.dumps(tokenizer_specs.make_tokenizer(path)))
  ids = T.tokenize(loaded, TEXTS, 32)
  assert T.detokenize(loaded, ids) == TEXTS
  # BPE compresses what it was fit on.
  assert (ids[0] > 0).sum() < len(TEXTS[0]) // 2


def test_specs_and_errors(tmp_path, monkeypatch):
  with pytest.raises(ValueError, match="'wordpiece'.*known: 'bytes'"):
    tokenizer_specs.make_tokenizer("wordpiece")
  with pytest.raises(FileNotFoundError, match="nope.model"):
    tokenizer_specs.make_tokenizer(str(tmp_path / "nope.model"))
  with pytest.raises(ValueError, match="max_len"):
    T.tokenize(T.ByteTokenizer(), "x", 1)
  (tmp_path / "t.json").write_text("{}")
  monkeypatch.setitem(sys.modules, "tokenizers", None)  # as if the extra were not installed
  with pytest.raises(ImportError, match=r"pip install contrastive\[tokenizers\]"):
    tokenizer_specs.make_tokenizer(str(tmp_path / "t.json"))


def test_words_round_trip_layout_and_unknown_words():
  tok = tokenizer_specs.make_tokenizer("words")
  assert tok.vocab_size == len(shapes.vocabulary()) + 4
  src = shapes.ShapesSource(split="train", num_examples=200, image_size=16)
  captions = [src[i]["caption"] for i in range(200)]
  ids = T.tokenize(tok, captions, 24)
  assert (ids != tok.unk_id).all()  # the vocabulary covers every built-in caption
  assert T.detokenize(tok, ids) == captions
  one = T.tokenize(tok, "A small red circle, on the left", 10)
  words = ["a", "small", "red", "circle", ",", "on", "the", "left"]
  np.testing.assert_array_equal(one, [tok.vocabulary.index(w) + 4 for w in words] + [tok.eos_id, 0])
  assert T.detokenize(tok, T.tokenize(tok, "a purple elephant", 8)) == "a purple <unk>"
  assert pickle.loads(pickle.dumps(tok)).encode("red ring") == tok.encode("red ring")
  with pytest.raises(ValueError, match="duplicates"):
    T.WordTokenizer(["a", "a"])
