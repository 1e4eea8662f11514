"""Tokenizers to fixed-length int32 ids: the protocol, the framing, and the file-free kinds.

- `ByteTokenizer`: UTF-8 bytes, no files and no extra packages. Ids: 0 padding, 1 end of text,
  2 mask, 3 + byte. Vocabulary 259.
- `WordTokenizer`: a closed word vocabulary (the built-in dataset's, for the `"words"` spec); a
  built-in caption is five times fewer tokens than in bytes. Ids: 0 padding, 1 end of text,
  2 mask, 3 unknown word, 4 + word.
- `SentencePieceTokenizer`: a SentencePiece `.model` file (`pip install contrastive[tokenizers]`).
- `HFTokenizer`: a Hugging Face `tokenizers` JSON file, e.g. one written by `train_bpe`
  (`pip install contrastive[tokenizers]`).
- `FileTokenizer`: the base of every tokenizer read from a file, here and in `clip_bpe` and
  `pretrained_tokenizers` (whose ids are their sources' exactly).

`tokenizer_specs.make_tokenizer(spec)` picks one of these, or a pretrained one, by its spec.

Every tokenizer frames the same way: the optional start id (`bos_id`), the text's ids, the
end-of-text id (`eos_id`, if any), cut to `max_len` with the start and end kept, then `pad_id`:
`[max_len]` int32. The tokenizers trained here pad with 0; a SentencePiece or `tokenizers`
vocabulary given as a bare path whose padding id is not 0 is shifted up by one (`offset`) so that
0 stays padding; pretrained ones are never shifted (SigLIP pads with 1). Tokenizers pickle as
their file path, so grain worker processes can carry them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
import os
import re
from typing import Protocol

import numpy as np

_EXTRA = "pip install contrastive[tokenizers]"


class Tokenizer(Protocol):
  """What the pipeline needs of a tokenizer (`bos_id` is optional: None when absent)."""

  pad_id: int  # 0, except for pretrained tokenizers whose source pads otherwise
  eos_id: int | None
  mask_id: int | None
  vocab_size: int

  def encode(self, text: str) -> list[int]:
    """The ids of `text`, without padding, start or end of text."""

  def decode(self, ids: Sequence[int]) -> str:
    """The text of `ids`; padding, start, end-of-text and mask ids are dropped."""


def _specials(tokenizer: Tokenizer) -> tuple[list[int], list[int]]:
  bos = getattr(tokenizer, "bos_id", None)
  return ([] if bos is None else [bos]), ([] if tokenizer.eos_id is None else [tokenizer.eos_id])


def frame(tokenizer: Tokenizer, ids: Sequence[int], max_len: int) -> np.ndarray:
  """`[bos] + ids + [eos]`, cut to `max_len` with both kept, then `pad_id`: int32 `[max_len]`.

  This is open_clip's truncation (`tokens[:L]`, then the last set to the end token) and
  big_vision's `eos="sticky"`.
  """
  head, tail = _specials(tokenizer)
  keep = max_len - len(head) - len(tail)
  if keep < 1:
    raise ValueError(
      f"max_len must be at least {len(head) + len(tail) + 1} for {tokenizer!r}, got {max_len}."
    )
  out = np.full(max_len, tokenizer.pad_id, np.int32)
  ids = head + list(ids[:keep]) + tail
  out[: len(ids)] = ids
  return out


def tokenize(tokenizer: Tokenizer, texts: str | Sequence[str], max_len: int) -> np.ndarray:
  """Encodes to fixed length (see `frame`).

  Args:
    tokenizer: any `Tokenizer`.
    texts: one text or a sequence of `n`.
    max_len: the length, at least 2 (3 with a start token).

  Returns:
    int32 `[max_len]` for one text, `[n, max_len]` for a sequence: the start id if any, the ids,
    the end-of-text id, padding. For `data.make_tokenizer("clip")` and `max_len=77` this equals
    `open_clip.tokenize(texts)`.
  """
  if max_len < 2:
    raise ValueError(f"max_len must be at least 2, got {max_len}.")
  single = isinstance(texts, str)
  texts = [texts] if single else list(texts)
  out = np.zeros((len(texts), max_len), np.int32)
  for row, text in zip(out, texts):
    row[:] = frame(tokenizer, tokenizer.encode(text), max_len)
  return out[0] if single else out


def detokenize(tokenizer: Tokenizer, ids: np.ndarray) -> str | list[str]:
  """The inverse of `tokenize` (up to the cut): `[max_len]` gives a str, `[n, max_len]` a list."""
  ids = np.asarray(ids)
  if ids.ndim == 1:
    return tokenizer.decode(ids.tolist())
  return [tokenizer.decode(row.tolist()) for row in ids]


class ByteTokenizer:
  """UTF-8 bytes: 0 padding, 1 end of text, 2 mask, byte `b` is `b + 3`. Needs nothing."""

  pad_id = 0
  eos_id = 1
  mask_id = 2
  offset = 3
  vocab_size = 256 + 3

  def encode(self, text: str) -> list[int]:
    return (np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32) + self.offset).tolist()

  def decode(self, ids: Sequence[int]) -> str:
    data = bytes(i - self.offset for i in ids if i >= self.offset)
    return data.decode("utf-8", errors="replace")

  def __repr__(self) -> str:
    return "ByteTokenizer()"


class WordTokenizer:
  """A closed vocabulary of lower-cased words and punctuation marks; other words are unknown.

  Ids: 0 padding, 1 end of text, 2 mask, 3 unknown, `4 + i` for `vocabulary[i]`; with
  `bos=True`, a start-of-text id after those, `4 + len(vocabulary)` (for captioning decoders).
  """

  pad_id = 0
  eos_id = 1
  mask_id = 2
  unk_id = 3
  offset = 4
  _SPLIT = re.compile(r"\w+|[^\w\s]")

  def __init__(self, vocabulary: Sequence[str], *, bos: bool = False):
    self.vocabulary = tuple(vocabulary)
    if len(set(self.vocabulary)) != len(self.vocabulary):
      raise ValueError("The word vocabulary has duplicates.")
    self._ids = {w: i + self.offset for i, w in enumerate(self.vocabulary)}
    self.vocab_size = len(self.vocabulary) + self.offset
    self.bos_id = None
    if bos:
      self.bos_id = self.vocab_size
      self.vocab_size += 1

  def encode(self, text: str) -> list[int]:
    return [self._ids.get(w, self.unk_id) for w in self._SPLIT.findall(text.lower())]

  def decode(self, ids: Sequence[int]) -> str:
    text = ""
    for i in ids:
      if i == self.bos_id:
        continue
      if i >= self.offset or i == self.unk_id:
        word = self.vocabulary[i - self.offset] if i >= self.offset else "<unk>"
        glue = "" if not text or not (word[0].isalnum() or word == "<unk>") else " "
        text += glue + word
    return text

  def __repr__(self) -> str:
    start = ", with a start id" if self.bos_id is not None else ""
    return f"WordTokenizer({len(self.vocabulary)} words{start})"


def _require(module: str):
  try:
    return __import__(module)
  except ImportError as e:
    raise ImportError(f"The {module!r} package is needed for this tokenizer: {_EXTRA}") from e


class FileTokenizer:
  """Loads its file at once (errors at start-up) and pickles as its path."""

  def __init__(self, path: str):
    path = os.fspath(path)
    if not os.path.isfile(path):
      raise FileNotFoundError(f"Tokenizer file {path!r} does not exist.")
    self.path = path
    self._model = None
    self._load()  # fail at start-up, not in a worker

  def __getstate__(self):
    return {"path": self.path}

  def __setstate__(self, state):
    self.path = state["path"]
    self._model = None
    self._load()

  def __repr__(self) -> str:
    return f"{type(self).__name__}({self.path!r})"

  @property
  def model(self):
    return self._model

  def _load(self) -> None:
    raise NotImplementedError


class SentencePieceTokenizer(FileTokenizer):
  """A SentencePiece `.model` file; ids shift by one unless its padding id is already 0."""

  def _load(self) -> None:
    spm = _require("sentencepiece")
    model = spm.SentencePieceProcessor()
    model.Load(self.path)
    self._model = model
    self.offset = 0 if model.pad_id() == 0 else 1
    self.pad_id = 0
    self.eos_id = model.eos_id() + self.offset if model.eos_id() >= 0 else None
    self.mask_id = model.unk_id() + self.offset if model.unk_id() >= 0 else None
    self.vocab_size = model.GetPieceSize() + self.offset

  def encode(self, text: str) -> list[int]:
    ids = self.model.EncodeAsIds(text)
    return [i + self.offset for i in ids] if self.offset else list(ids)

  def decode(self, ids: Sequence[int]) -> str:
    drop = {0, self.eos_id, self.mask_id}
    return self.model.DecodeIds([int(i) - self.offset for i in ids if i not in drop])


_PAD_NAMES = ("<pad>", "[PAD]", "<|pad|>", "<PAD>")
_EOS_NAMES = ("<eos>", "</s>", "<|endoftext|>", "[SEP]", "<EOS>")
_MASK_NAMES = ("<mask>", "[MASK]", "<|mask|>", "<unk>", "[UNK]")


class HFTokenizer(FileTokenizer):
  """A Hugging Face `tokenizers` JSON file (e.g. from `train_bpe`).

  Special tokens are found by name: padding `<pad>`/`[PAD]`, end `<eos>`/`</s>`/`<|endoftext|>`,
  mask `<mask>`/`[MASK]` (else the unknown token). Without a padding token at id 0, ids shift by
  one.
  """

  def _load(self) -> None:
    tk = _require("tokenizers")
    model = tk.Tokenizer.from_file(self.path)
    self._model = model

    def find(names):
      for name in names:
        i = model.token_to_id(name)
        if i is not None:
          return i
      return None

    pad = find(_PAD_NAMES)
    self.offset = 0 if pad == 0 else 1
    eos, mask = find(_EOS_NAMES), find(_MASK_NAMES)
    self.pad_id = 0
    self.eos_id = None if eos is None else eos + self.offset
    self.mask_id = None if mask is None else mask + self.offset
    self.vocab_size = model.get_vocab_size(with_added_tokens=True) + self.offset

  def encode(self, text: str) -> list[int]:
    ids = self.model.encode(text, add_special_tokens=False).ids
    return [i + self.offset for i in ids] if self.offset else list(ids)

  def decode(self, ids: Sequence[int]) -> str:
    drop = {0, self.eos_id, self.mask_id}
    return self.model.decode([int(i) - self.offset for i in ids if i not in drop])


def train_bpe(
  texts: Iterable[str],
  path: str,
  *,
  vocab_size: int = 8192,
  min_frequency: int = 2,
  lowercase: bool = True,
) -> HFTokenizer:
  """Fits a byte-level BPE vocabulary on `texts` and saves it as a `tokenizers` JSON file.

  Special tokens: `<pad>` (0), `<eos>` (1), `<mask>` (2). Byte-level, so no text is unknown.

  Args:
    texts: the captions to fit on.
    path: where to write the `.json` file.
    vocab_size: the vocabulary size, special tokens and the 256 byte symbols included.
    min_frequency: the least count of a merge.
    lowercase: lowercase (and NFKC-normalize) before encoding.

  Returns:
    The saved tokenizer, loaded from `path`.
  """
  tk = _require("tokenizers")
  model = tk.Tokenizer(tk.models.BPE())
  normalizers = [tk.normalizers.NFKC()] + ([tk.normalizers.Lowercase()] if lowercase else [])
  model.normalizer = tk.normalizers.Sequence(normalizers)
  model.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
  model.decoder = tk.decoders.ByteLevel()
  trainer = tk.trainers.BpeTrainer(
    vocab_size=vocab_size,
    min_frequency=min_frequency,
    special_tokens=["<pad>", "<eos>", "<mask>"],
    initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(),
    show_progress=False,
  )
  model.train_from_iterator(texts, trainer)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  model.save(os.fspath(path))
  return HFTokenizer(path)
