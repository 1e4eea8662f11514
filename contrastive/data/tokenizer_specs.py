"""Tokenizers by spec string: the table `TOKENIZERS` and `make_tokenizer(spec)`.

Specs:

- `"bytes"`: UTF-8 bytes (`tokenizers.ByteTokenizer`), no files and no extra packages.
  Vocabulary 259.
- `"words"`: the built-in dataset's closed word vocabulary (`shapes.vocabulary()`, as a
  `tokenizers.WordTokenizer`); a caption is five times fewer tokens than in bytes.
  `"words_bos"`: the same with a start-of-text id before each caption (the last id), which a
  captioning decoder needs to predict the first word and to start generating.
- a path ending in `.model`: a SentencePiece model (`pip install contrastive[tokenizers]`).
- a path ending in `.json`: a Hugging Face `tokenizers` file, e.g. one written by
  `tokenizers.train_bpe` (`pip install contrastive[tokenizers]`).
- pretrained tokenizers, whose ids are their source's exactly (no shift, the source's own start,
  end and padding ids): `"clip"` (OpenAI CLIP's BPE, shipped in the package: the ids of
  `open_clip.tokenize`; `"clip:PATH"` for another merges file; see `clip_bpe`),
  `"siglip:PATH"` (a SigLIP `spiece.model` as transformers' `SiglipTokenizer` reads it, or a
  `tokenizer.json` as open_clip's SigLIP reads it), `"big_vision:PATH"` (big_vision's
  SigLIP text op) and `"hf:PATH"` (a `tokenizers` file with its own template); see
  `pretrained_tokenizers` for each one's cleaning, end and padding.

The tokenizer modules import in one line: `tokenizers` (the protocol, the framing, the file-free
kinds) <- `clip_bpe` <- `pretrained_tokenizers` <- this table.
"""

from __future__ import annotations

from collections.abc import Callable
import os

from contrastive.data import clip_bpe
from contrastive.data import pretrained_tokenizers
from contrastive.data import shapes
from contrastive.data import tokenizers


def _builtin_words(spec: str) -> tokenizers.WordTokenizer:
  return tokenizers.WordTokenizer(shapes.vocabulary(), bos=spec == "words_bos")


def _clip(spec: str) -> clip_bpe.ClipTokenizer:
  _, _, path = spec.partition(":")
  return clip_bpe.ClipTokenizer(path or clip_bpe.VOCAB_FILE)


def _pretrained(spec: str) -> tokenizers.Tokenizer:
  kind, _, path = spec.partition(":")
  return pretrained_tokenizers.from_spec(kind, path)


# Tokenizers by spec: a name, a `kind:` prefix (a pretrained tokenizer), or a file suffix.
TOKENIZERS: dict[str, Callable[[str], tokenizers.Tokenizer]] = {
  "bytes": lambda spec: tokenizers.ByteTokenizer(),
  "words": _builtin_words,
  "words_bos": _builtin_words,
  "clip": _clip,
  "clip:": _clip,
  "siglip:": _pretrained,
  "big_vision:": _pretrained,
  "hf:": _pretrained,
  ".model": tokenizers.SentencePieceTokenizer,
  ".json": tokenizers.HFTokenizer,
}


def make_tokenizer(spec: str) -> tokenizers.Tokenizer:
  """A tokenizer from its spec (see the module docstring).

  `"bytes"`, `"words"`, `"clip"`, `"clip:PATH"`, `"siglip:PATH"`, `"big_vision:PATH"`,
  `"hf:PATH"`, or a bare `.model` (SentencePiece) or `.json` (`tokenizers`) path.

  Raises:
    ValueError: an unknown spec, listing the known ones.
    FileNotFoundError: a path that does not exist.
  """
  spec = os.fspath(spec)
  if spec in TOKENIZERS:
    return TOKENIZERS[spec](spec)
  prefix = spec.split(":", 1)[0] + ":"
  if ":" in spec and prefix in TOKENIZERS:
    return TOKENIZERS[prefix](spec)
  suffix = os.path.splitext(spec)[1]
  if suffix in TOKENIZERS and suffix != spec:
    return TOKENIZERS[suffix](spec)
  raise ValueError(
    f"Unknown tokenizer {spec!r}; known: 'bytes', 'words', 'clip', a SentencePiece "
    "'*.model' path or a Hugging Face tokenizers '*.json' path, or a pretrained "
    "'siglip:PATH', 'big_vision:PATH', 'hf:PATH'."
  )
