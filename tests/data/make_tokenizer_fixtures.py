"""Writes tests/data/fixtures/tokenizers.json (the peers' ids on one test corpus) and spiece.model.

Run with the peers' venv (torch, open_clip_torch, ftfy, transformers, sentencepiece, protobuf):

  /work/peers/bin/python tests/data/make_tokenizer_fixtures.py

It records, for the corpus below:
- `clip`: `open_clip.tokenize(corpus)` at context 77 and 8 (open_clip cleans with ftfy);
- `ftfy`: `ftfy.fix_text(text)` of each text, and `mojibake`: texts that only ftfy's encoding
  repair changes, with their open_clip ids;
- `siglip`: the sha256 of the pieces and scores of a SentencePiece model trained here on
  `spm_corpus` with `spm_args` and written beside as `spiece.model` (the tests read that file, so
  they do not depend on what another sentencepiece version would train), and transformers'
  `SiglipTokenizer` ids with it (padding="max_length", truncation=True) at 64 and 8;
- `siglip_json`: the files transformers' `T5TokenizerFast` writes for such a model trained with
  identity normalization (`tokenizer.json`, `tokenizer_config.json`: what open_clip's SigLIP hub
  repos ship), and open_clip's `HFTokenizer(clean="canonicalize")` ids with them at 64 and 8.
"""

import hashlib
import io
import json
import os
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from tests import peers  # noqa: E402  (after the repository root is on the path)

OUT = os.path.join(ROOT, "tests", "data", "fixtures", "tokenizers.json")
SPIECE = os.path.join(ROOT, "tests", "data", "fixtures", "spiece.model")

CORPUS = [
  "a photo of a cat",
  "A Photo Of A CAT!",
  "Hello, world... what's up?! (yes) [no] {maybe} #tag @user $5.99 50% a-b c/d e+f=g",
  "it's, we're, they've, I'm, you'll, he'd, don't, IT'S",
  "snake_case_words and under_scores",
  "CAFÉ crème brûlée, naïve résumé, Straße, Ærøskøbing",
  "cafe\u0301 (a decomposed accent)",
  "Привет мир, Γειά σου κόσμε",
  "一只猫坐在垫子上",
  "猫が好きです。 고양이를 좋아해요",
  "🐱🐶 👍🏽 👨‍👩‍👧 🇫🇷 ✓ ★",
  "Tom &amp; Jerry &lt;3 &quot;quoted&quot; &#39;single&#39; &#x263A; &amp;amp; &EACUTE;",
  "<b>bold</b> &amp; tags",
  "ＣＬＩＰ　ｍｏｄｅｌ，ｆｕｌｌｗｉｄｔｈ！",
  "ﬁne ﬂowers",
  "“curly” ‘quotes’ it’s",
  "numbers 1234567890 3.14 1e-5 ½ ² ①",
  "  leading and trailing  ",
  "tabs\tand\nnewlines\r\nand\u00a0nbsp\u2028sep",
  "bell\x07 and zero\u200bwidth",
  "",
  "   ",
  "\n\t",
  "</s> and <unk> and <pad> written out",
  "<start_of_text> and <END_OF_TEXT> written out",
  "a cat </s>",
  "\u2581odd underline",
  " ".join(["a"] * 75),  # 75 tokens: exactly fills CLIP's 77 with start and end
  " ".join(["a"] * 76),  # one too many
  "a very long caption " * 30,
  "supercalifragilisticexpialidocious" * 12,
  "A man in a red jacket rides a bicycle past a row of colourful houses while two dogs chase "
  "a ball across the wet street; behind them, a bakery's neon sign flickers above people "
  "queueing for bread, coffee and pastries on a rainy Sunday morning in late November, and a "
  "child in yellow boots jumps in every puddle she can find along the way.",
]

MOJIBAKE = ["cafÃ©", "The Mona Lisa doesnâ€™t have eyebrows.", "Ã  la mode"]

SPM_CORPUS = [
  "a photo of a cat",
  "a photo of a dog sitting on a mat",
  "two dogs and three cats",
  "the quick brown fox jumps over the lazy dog",
  "a red circle above a blue square",
  "cafe creme brulee naive resume",
  "people walking in the rain",
  "a bakery on a sunday",
  "a very long caption",
  "numbers and words",
] * 10
SPM_ARGS = dict(
  vocab_size=96,
  model_type="unigram",
  pad_id=0,
  eos_id=1,
  unk_id=2,
  bos_id=-1,
  num_threads=1,
  hard_vocab_limit=False,
  minloglevel=2,
)


def train_spm(directory: str, **overrides) -> str:
  """Trains the test's SentencePiece model (T5's special ids: pad 0, `</s>` 1, `<unk>` 2).

  Written as `directory/spiece.model`, through a writer: the file holds no temporary path, so
  training twice with one sentencepiece version writes the same bytes.
  """
  import sentencepiece as spm

  writer = io.BytesIO()
  spm.SentencePieceTrainer.Train(
    sentence_iterator=iter(SPM_CORPUS), model_writer=writer, **{**SPM_ARGS, **overrides}
  )
  path = os.path.join(directory, "spiece.model")
  with open(path, "wb") as f:
    f.write(writer.getvalue())
  return path


def pieces_sha256(model: str) -> str:
  """The vocabulary's fingerprint: pieces and scores (the file also holds its own path)."""
  import sentencepiece as spm

  sp = spm.SentencePieceProcessor(model_file=model)
  pieces = [[sp.IdToPiece(i), round(sp.GetScore(i), 4)] for i in range(sp.GetPieceSize())]
  return hashlib.sha256(json.dumps(pieces).encode()).hexdigest()


def t5_fast(model: str, directory: str) -> None:
  """`tokenizer.json` of a SentencePiece model, as transformers converts T5's."""
  from sentencepiece import sentencepiece_model_pb2
  import transformers

  proto = sentencepiece_model_pb2.ModelProto()
  with open(model, "rb") as f:
    proto.ParseFromString(f.read())
  fast = transformers.T5TokenizerFast(
    vocab=[(p.piece, p.score) for p in proto.pieces],
    extra_ids=0,
    legacy=False,
    _spm_precompiled_charsmap=proto.normalizer_spec.precompiled_charsmap or None,
  )
  fast.save_pretrained(directory)


def main():
  open_clip = peers.import_open_clip()
  import ftfy

  peers.install_torchvision_stand_in()
  import transformers

  def ids(tokens):
    return np.asarray(tokens).astype(int).tolist()

  out = {"corpus": CORPUS, "spm_corpus": SPM_CORPUS, "spm_args": SPM_ARGS}
  out["clip"] = {str(n): ids(open_clip.tokenize(CORPUS, context_length=n)) for n in (77, 8)}
  out["ftfy"] = [ftfy.fix_text(t) for t in CORPUS]
  out["mojibake"] = {
    "texts": MOJIBAKE,
    "ftfy": [ftfy.fix_text(t) for t in MOJIBAKE],
    "clip": ids(open_clip.tokenize(MOJIBAKE)),
  }
  model = train_spm(os.path.dirname(SPIECE))
  hf = transformers.SiglipTokenizer(vocab_file=model)
  out["siglip"] = {
    "pieces_sha256": pieces_sha256(model),
    **{
      str(n): [hf(t, padding="max_length", max_length=n, truncation=True).input_ids for t in CORPUS]
      for n in (64, 8)
    },
  }
  with tempfile.TemporaryDirectory() as tmp:
    # Identity normalization keeps the file small (no 300 kB precompiled NFKC table).
    model = train_spm(tmp, normalization_rule_name="identity")
    fast_dir = os.path.join(tmp, "fast")
    t5_fast(model, fast_dir)
    oc = open_clip.tokenizer.HFTokenizer(fast_dir, clean="canonicalize")
    files = {}
    for name in sorted(os.listdir(fast_dir)):
      with open(os.path.join(fast_dir, name), encoding="utf-8") as f:
        files[name] = f.read()
    out["siglip_json"] = {
      "files": files,
      **{str(n): ids(oc(CORPUS, context_length=n)) for n in (64, 8)},
    }
  os.makedirs(os.path.dirname(OUT), exist_ok=True)
  with open(OUT, "w", encoding="utf-8") as f:
    json.dump(out, f, ensure_ascii=True)
  print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes) and {SPIECE}")


if __name__ == "__main__":
  main()
