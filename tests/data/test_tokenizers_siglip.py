"""SigLIP's and Hugging Face's tokenizers (`siglip:`, `big_vision:`, `hf:` specs).

The SentencePiece model is the fixture's `spiece.model` (trained by make_tokenizer_fixtures.py
on the fixture's `spm_corpus`, with its `spm_args`); its ids are compared with transformers'
`SiglipTokenizer` ids from the fixture, live when transformers is installed, and with the rules
written out by hand. The `tokenizer.json` files come from the fixture.
"""

import json
import os
import pickle
import string
import sys

import numpy as np
import pytest

from contrastive import data
from contrastive.data import pretrained_tokenizers as P
from tests.data import make_tokenizer_fixtures as mk
from tests.data import tokenizer_testing

spm = pytest.importorskip("sentencepiece")

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "tokenizers.json")
SPECIAL = ("</s>", "<unk>")


@pytest.fixture(scope="module")
def fx():
  with open(FIXTURE, encoding="utf-8") as f:
    return json.load(f)


@pytest.fixture(scope="module")
def model():
  return mk.SPIECE


@pytest.fixture(scope="module")
def sp(model):
  return spm.SentencePieceProcessor(model_file=model)


@pytest.fixture(scope="module")
def json_dir(fx, tmp_path_factory):
  out = tmp_path_factory.mktemp("fast")
  for name, text in fx["siglip_json"]["files"].items():
    (out / name).write_text(text, encoding="utf-8")
  return out


def by_hand(sp, text: str, max_len: int, *, pad: int = 1) -> list[int]:
  """transformers' SiglipTokenizer rules for a text without special strings."""
  canon = " ".join(text.lower().translate(str.maketrans("", "", string.punctuation)).split())
  ids = sp.EncodeAsIds(canon)[: max_len - 1] + [1]
  return ids + [pad] * (max_len - len(ids))


def test_model_has_t5_special_ids(sp):
  assert (sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id()) == (0, 1, 2, -1)


@pytest.mark.parametrize("max_len", [64, 8])
def test_sentencepiece_equals_transformers_fixture(fx, model, max_len):
  # The model file and the ids were written together; a regenerated one alone would not match.
  assert mk.pieces_sha256(model) == fx["siglip"]["pieces_sha256"]
  got = data.tokenize(data.make_tokenizer(f"siglip:{model}"), fx["corpus"], max_len)
  want = np.asarray(fx["siglip"][str(max_len)])
  bad = [t for t, g, w in zip(fx["corpus"], got, want) if not (g == w).all()]
  assert not bad, f"{len(bad)} texts differ from transformers, first {bad[0]!r}"


@pytest.mark.parametrize("max_len", [64, 8])
def test_sentencepiece_rules_by_hand(fx, model, sp, max_len):
  tok = data.make_tokenizer(f"siglip:{model}")
  assert (tok.eos_id, tok.pad_id, tok.vocab_size) == (1, 1, sp.GetPieceSize())
  assert getattr(tok, "bos_id", None) is None
  plain = [t for t in fx["corpus"] if not any(s in t for s in SPECIAL) and "\u2581" not in t]
  assert len(plain) > 25
  for text in plain:
    assert data.tokenize(tok, text, max_len).tolist() == by_hand(sp, text, max_len), text
  # A written-out special string is that token; "<pad>" is not special (the padding is "</s>").
  cat = sp.EncodeAsIds("a cat")
  assert tok.encode("a cat </s>") == cat + [1]
  assert tok.encode("a cat <unk> x") == cat + [2] + sp.EncodeAsIds("x")[1:]
  assert tok.encode("<pad>") == sp.EncodeAsIds("pad")
  long = data.tokenize(tok, "a photo of a cat " * 40, max_len)
  assert long[-1] == 1 and (long[:-1] != 1).all()  # cut, the end token kept last


def test_sentencepiece_errors_and_pickle(model, tmp_path):
  tok = data.make_tokenizer(f"siglip:{model}")
  again = pickle.loads(pickle.dumps(tok))
  assert again.encode("two dogs") == tok.encode("two dogs") and model in repr(again)
  assert data.detokenize(tok, data.tokenize(tok, "Two dogs!", 16)) == "two dogs"
  with pytest.raises(FileNotFoundError, match="nope.model"):
    data.make_tokenizer(f"siglip:{tmp_path / 'nope.model'}")
  bad = tmp_path / "bad.model"
  bad.write_bytes(b"not a sentencepiece model")
  with pytest.raises(ValueError, match="bad.model.*does not load"):
    data.make_tokenizer(f"siglip:{bad}")
  with pytest.raises(ValueError, match=r"Unknown tokenizer spec 'siglip:x.txt'.*'siglip:\*.model'"):
    data.make_tokenizer("siglip:x.txt")
  side = tmp_path / "side"
  side.mkdir()
  (side / "spiece.model").write_bytes(open(model, "rb").read())
  (side / "tokenizer_config.json").write_text(json.dumps({"pad_token": "<PAD>"}))
  with pytest.raises(ValueError, match=r"spiece.model.*no padding piece '<PAD>'"):
    data.make_tokenizer(f"siglip:{side / 'spiece.model'}")
  (side / "tokenizer_config.json").write_text(
    json.dumps({"pad_token": {"content": "<pad>"}, "do_lower_case": False})
  )
  cased = data.make_tokenizer(f"siglip:{side / 'spiece.model'}")
  assert cased.pad_id == 0 and cased.encode("A Cat") != cased.encode("a cat")


def test_big_vision_rules(model, sp):
  tok = data.make_tokenizer(f"big_vision:{model}")
  assert (tok.eos_id, tok.pad_id) == (1, 1)
  # lower=True is tf.strings.lower: ASCII only; punctuation stays.
  text = "A Cat, CAFÉ!"
  ids = sp.EncodeAsIds("a cat, cafÉ!")
  np.testing.assert_array_equal(data.tokenize(tok, text, 32), ids + [1] * (32 - len(ids)))
  np.testing.assert_array_equal(data.tokenize(tok, text, 3), ids[:2] + [1])  # eos="sticky"


@pytest.mark.parametrize("max_len", [64, 8])
def test_tokenizer_json_equals_open_clip_fixture(fx, json_dir, max_len):
  tok = data.make_tokenizer(f"siglip:{json_dir / 'tokenizer.json'}")
  assert (tok.eos_id, tok.pad_id) == (1, 0)  # the config beside says pad_token "<pad>"
  got = data.tokenize(tok, fx["corpus"], max_len)
  want = np.asarray(fx["siglip_json"][str(max_len)])
  bad = [t for t, g, w in zip(fx["corpus"], got, want) if not (g == w).all()]
  assert not bad, f"{len(bad)} texts differ from open_clip, first {bad[0]!r}"
  assert P.open_clip_canonicalize("Snake_case &amp; Co.") == "snake case co"


def test_hf_spec_uses_the_file_template(json_dir, tmp_path, monkeypatch):
  tk = pytest.importorskip("tokenizers")
  tok = data.make_tokenizer(f"hf:{json_dir / 'tokenizer.json'}")
  assert (tok.bos_id, tok.eos_id, tok.pad_id) == (None, 1, 0)
  file = tk.Tokenizer.from_file(str(json_dir / "tokenizer.json"))
  raw = file.encode("A cat!", add_special_tokens=False).ids  # no cleaning
  assert tok.encode("A cat!") == raw
  np.testing.assert_array_equal(data.tokenize(tok, "A cat!", 12), raw + [1] + [0] * (11 - len(raw)))
  # A template with a start token, and no config beside: padding 0.
  model = tk.Tokenizer(
    tk.models.WordLevel({"<s>": 0, "</s>": 1, "[UNK]": 2, "a": 3, "cat": 4}, unk_token="[UNK]")
  )
  model.pre_tokenizer = tk.pre_tokenizers.Whitespace()
  model.post_processor = tk.processors.TemplateProcessing(
    single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 1)]
  )
  path = tmp_path / "wl" / "tokenizer.json"
  path.parent.mkdir()
  model.save(str(path))
  wl = data.make_tokenizer(f"hf:{path}")
  assert (wl.bos_id, wl.eos_id, wl.pad_id) == (0, 1, 0)
  np.testing.assert_array_equal(data.tokenize(wl, "a cat dog", 6), [0, 3, 4, 2, 1, 0])
  np.testing.assert_array_equal(data.tokenize(wl, "a cat dog", 4), [0, 3, 4, 1])
  monkeypatch.setitem(sys.modules, "tokenizers", None)
  with pytest.raises(ImportError, match=r"pip install contrastive\[tokenizers\]"):
    data.make_tokenizer(f"hf:{path}")


def test_live_transformers(fx, model):
  pytest.importorskip("torch")
  pytest.importorskip("google.protobuf")
  from tests import peers

  peers.install_torchvision_stand_in()
  transformers = pytest.importorskip("transformers")
  hf = transformers.SiglipTokenizer(vocab_file=model)
  tok = data.make_tokenizer(f"siglip:{model}")
  texts = (
    fx["corpus"]
    + tokenizer_testing.random_texts(300, seed=1)
    + ["a </s> b <unk>", " </s>", "<unk>"]
  )
  for max_len in (64, 10):
    want = [
      hf(t, padding="max_length", max_length=max_len, truncation=True).input_ids for t in texts
    ]
    np.testing.assert_array_equal(data.tokenize(tok, texts, max_len), want)
