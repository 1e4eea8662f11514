"""OpenAI CLIP's byte-level BPE tokenizer: the ids of `open_clip.tokenize`, exactly.

`data.make_tokenizer("clip")` (or `"clip:PATH"` for another merges file in the same format)
gives a `ClipTokenizer`; `data.tokenize(tok, texts, 77)` then equals `open_clip.tokenize(texts)`:

- cleaning (open_clip's `clean="lower"`): fix the text as `ftfy.fix_text` does, unescape HTML
  entities twice (`&amp;lt;` is `<`), collapse every run of whitespace to one space, strip,
  lower-case;
- split with CLIP's pattern (`'s|'t|'re|'ve|'m|'ll|'d|\\p{L}+|\\p{N}|[^\\s\\p{L}\\p{N}]+`), map each
  piece's UTF-8 bytes to printable characters, merge by BPE rank; as in open_clip, the strings
  `<start_of_text>` and `<end_of_text>` written in a text become those tokens;
- frame: `[49406 (start)] + ids + [49407 (end)]`, cut to the context length with the end token
  kept last, zeros after it. `bos_id`/`eos_id`/`pad_id` carry these for `tokenize`.

The vocabulary is 49,408 entries: 256 byte symbols, the same with the end-of-word mark `</w>`,
48,894 merges, start and end. Since the end token has the largest id, CLIP's text tower pools at
the argmax id.

ftfy: when `ftfy` is installed, cleaning calls `ftfy.fix_text`, as open_clip does. Without it
(it is no dependency here), `fix_text` below applies the deterministic part of ftfy's default
fixes: HTML entities (unless the line holds a `<`), C1 controls read as Windows-1252, Latin
ligatures (`ﬁ`), full- and half-width forms (`ＡＢＣ`, the ideographic space), curly quotes
(`’` is `'`), line breaks, surrogates, terminal escapes, invisible control characters, then NFC.
What it leaves out is ftfy's mojibake repair (`"cafÃ©"` is `"café"` for ftfy): a heuristic that
rewrites only text that looks like UTF-8 decoded in a single-byte code page; for such text the
ids differ from open_clip's unless ftfy is installed. tests/data/fixtures/tokenizers.json
records ftfy's output on the test corpus; tests/data/test_tokenizers_clip.py checks both paths
(and, with ftfy installed, that random texts differ only where ftfy repairs an encoding).

The vocabulary file `bpe_simple_vocab_16e6.txt.gz` and the BPE algorithm come from OpenAI's CLIP
(https://github.com/openai/CLIP) by way of open_clip (https://github.com/mlfoundations/open_clip),
both under the MIT License:

  CLIP: Copyright (c) 2021 OpenAI. open_clip: Copyright (c) 2012-2021 Gabriel Ilharco, Mitchell
  Wortsman, Nicholas Carlini, Rohan Taori, Achal Dave, Vaishaal Shankar, John Miller, Hongseok
  Namkoong, Hannaneh Hajishirzi, Ali Farhadi, Ludwig Schmidt.

  Permission is hereby granted, free of charge, to any person obtaining a copy of this software
  and associated documentation files (the "Software"), to deal in the Software without
  restriction, including without limitation the rights to use, copy, modify, merge, publish,
  distribute, sublicense, and/or sell copies of the Software, and to permit persons to whom the
  Software is furnished to do so, subject to the following conditions:

  The above copyright notice and this permission notice shall be included in all copies or
  substantial portions of the Software.

  THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING
  BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
  NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM,
  DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
  OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
"""

from __future__ import annotations

from collections.abc import Sequence
import functools
import gzip
import html
import html.entities
import itertools
import os
import re
import unicodedata

from contrastive.data import tokenizers

VOCAB_FILE = os.path.join(
  os.path.dirname(os.path.abspath(__file__)), "bpe_simple_vocab_16e6.txt.gz"
)
NUM_MERGES = 49152 - 256 - 2  # the first line of the file is a header
START, END = "<start_of_text>", "<end_of_text>"
_CACHE_LIMIT = 200_000  # distinct words remembered; cleared when full


@functools.cache
def bytes_to_unicode() -> dict[int, str]:
  """Each byte to a printable character: itself where printable, else `256 + k`.

  The dict's order is the vocabulary's: the printable bytes first, then the others.
  """
  printable = (
    list(range(ord("!"), ord("~") + 1))
    + list(range(ord("¡"), ord("¬") + 1))
    + list(range(ord("®"), ord("ÿ") + 1))
  )
  others = [b for b in range(256) if b not in printable]
  return {**{b: chr(b) for b in printable}, **{b: chr(256 + k) for k, b in enumerate(others)}}


# ---------------------------------------------------------------------------------------------
# Cleaning.


def _html_entities() -> dict[str, str]:
  # ftfy decodes the entities that end in ';', and all-caps forms of lower-case names.
  table = {}
  for name, char in html.entities.html5.items():
    if name.endswith(";"):
      table["&" + name] = char
      if name == name.lower() and html.unescape("&" + name.upper()) == "&" + name.upper():
        table["&" + name.upper()] = char.upper()
  return table


_ENTITY = re.compile(r"&#?[0-9A-Za-z]{1,24};")
_ANSI = re.compile("\033\\[((?:\\d|;)*)([a-zA-Z])")
_C1 = re.compile("[\x80-\x9f]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_PAIR = re.compile("[\ud800-\udbff][\udc00-\udfff]")
_LIGATURES = str.maketrans(
  {
    "Ĳ": "IJ",
    "ĳ": "ij",
    "ŉ": "ʼn",
    "Ǳ": "DZ",
    "ǲ": "Dz",
    "ǳ": "dz",
    "Ǆ": "DŽ",
    "ǅ": "Dž",
    "ǆ": "dž",
    "Ǉ": "LJ",
    "ǈ": "Lj",
    "ǉ": "lj",
    "Ǌ": "NJ",
    "ǋ": "Nj",
    "ǌ": "nj",
    "ﬀ": "ff",
    "ﬁ": "fi",
    "ﬂ": "fl",
    "ﬃ": "ffi",
    "ﬄ": "ffl",
    "ﬅ": "ſt",
    "ﬆ": "st",
  }
)
_QUOTES = str.maketrans(
  {
    **{c: "'" for c in "\u02bc\u2018\u2019\u201a\u201b"},
    **{c: '"' for c in "\u201c\u201d\u201e\u201f"},
  }
)
_CONTROLS = dict.fromkeys(
  itertools.chain(
    range(0x00, 0x09),
    [0x0B],
    range(0x0E, 0x20),
    [0x7F],
    range(0x206A, 0x2070),
    [0xFEFF],
    range(0xFFF9, 0xFFFD),
  )
)


@functools.lru_cache(maxsize=1)
def _tables():
  width = {0x3000: " "}
  for i in range(0xFF01, 0xFFF0):
    alt = unicodedata.normalize("NFKC", chr(i))
    if alt != chr(i):
      width[i] = alt
  return _html_entities(), width


def _unescape(match: re.Match) -> str:
  text = match.group(0)
  entities, _ = _tables()
  if text in entities:
    return entities[text]
  if text.startswith("&#"):
    out = html.unescape(text)
    return text if ";" in out else out
  return text


def _c1(match: re.Match) -> str:
  try:
    return match.group(0).encode("latin-1").decode("windows-1252")
  except UnicodeDecodeError:  # 0x81, 0x8d, 0x8f, 0x90, 0x9d: ftfy's "sloppy" codec keeps them
    return match.group(0)


def _surrogates(text: str) -> str:
  if _SURROGATE.search(text):
    text = _SURROGATE_PAIR.sub(
      lambda m: chr(0x10000 + (ord(m[0][0]) - 0xD800) * 0x400 + ord(m[0][1]) - 0xDC00), text
    )
    text = _SURROGATE.sub("\ufffd", text)
  return text


def _fix_segment(text: str, unescape: bool) -> str:
  _, width = _tables()
  while True:
    before = text
    if unescape:
      text = _ENTITY.sub(_unescape, text)
    text = _C1.sub(_c1, text)
    text = text.translate(_LIGATURES).translate(width).translate(_QUOTES)
    text = (
      text.replace("\r\n", "\n")
      .replace("\r", "\n")
      .replace("\u2028", "\n")
      .replace("\u2029", "\n")
      .replace("\u0085", "\n")
    )
    text = _surrogates(text)
    text = _ANSI.sub("", text).translate(_CONTROLS)
    text = unicodedata.normalize("NFC", text)
    if text == before:
      return text


def _lines(text: str) -> list[str]:
  parts = text.split("\n")
  return [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


_UNSET = object()
_ftfy = _UNSET  # the ftfy module, None when missing; looked up once (a failed import is slow)
_PLAIN = re.compile(r"[\t\n\x0c\x20-\x25\x27-\x7e]*")  # ASCII that no fix changes


def _ftfy_module():
  global _ftfy
  if _ftfy is _UNSET:
    try:
      import ftfy

      _ftfy = ftfy
    except ImportError:
      _ftfy = None
  return _ftfy


def fix_text(text: str) -> str:
  """`ftfy.fix_text(text)` when ftfy is installed, else its fixes less mojibake repair."""
  ftfy = _ftfy_module()
  if ftfy is not None:
    return ftfy.fix_text(text)
  if _PLAIN.fullmatch(text):
    return text
  out, unescape = [], True
  for line in _lines(text):
    # ftfy works line by line (on '\n' only) and stops unescaping for good after a '<'.
    unescape = unescape and "<" not in line
    out.append(_fix_segment(line, unescape))
  return "".join(out)


def clean(text: str) -> str:
  """open_clip's `clean="lower"`: fix, unescape HTML twice, one space per run, strip, lower."""
  text = html.unescape(html.unescape(fix_text(text))).strip()
  return " ".join(text.split()).lower()


# ---------------------------------------------------------------------------------------------
# The tokenizer.


def _regex():
  try:
    import regex
  except ImportError as e:
    raise ImportError(
      "The 'regex' package is needed for CLIP's tokenizer (\\p{L} classes): pip install regex"
    ) from e
  return regex


class ClipTokenizer(tokenizers.FileTokenizer):
  """OpenAI CLIP's BPE (49,408 ids); start 49406, end 49407, padding 0, no mask id."""

  pad_id = 0
  mask_id = None

  def __init__(self, path: str | os.PathLike = VOCAB_FILE):
    super().__init__(path)

  def _load(self) -> None:
    if not os.path.isfile(self.path):
      raise FileNotFoundError(f"CLIP BPE vocabulary {self.path!r} does not exist.")
    try:
      lines = gzip.open(self.path).read().decode("utf-8").split("\n")
    except (OSError, EOFError, UnicodeDecodeError) as e:
      raise ValueError(
        f"CLIP BPE vocabulary {self.path!r} is not a gzipped merges file: {e}"
      ) from e
    merges = [tuple(line.split()) for line in lines[1 : NUM_MERGES + 1] if line.strip()]
    if len(merges) != NUM_MERGES or any(len(m) != 2 for m in merges):
      raise ValueError(
        f"CLIP BPE vocabulary {self.path!r} has {len(merges)} merge lines, "
        f"expected {NUM_MERGES} pairs after a header line."
      )
    self._byte_chars = bytes_to_unicode()
    self._char_bytes = {c: b for b, c in self._byte_chars.items()}
    symbols = list(self._byte_chars.values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [START, END]
    self._ids = {s: i for i, s in enumerate(vocab)}
    self._symbols = vocab
    self._ranks = {m: i for i, m in enumerate(merges)}
    self._cache: dict[str, list[int]] = {}
    self.vocab_size = len(vocab)
    self.bos_id, self.eos_id = self._ids[START], self._ids[END]
    # As in open_clip, the special strings written in a text are their tokens.
    self._pattern = _regex().compile(
      START + "|" + END + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
      _regex().IGNORECASE,
    )

  def __repr__(self) -> str:
    return "ClipTokenizer()" if self.path == VOCAB_FILE else f"ClipTokenizer({self.path!r})"

  def _bpe(self, piece: str) -> list[int]:
    """Merges the characters of one piece (already byte-mapped), lowest rank first."""
    if piece in (START, END):
      return [self._ids[piece]]
    word = list(piece[:-1]) + [piece[-1] + "</w>"]
    while len(word) > 1:
      pairs = set(zip(word, word[1:]))
      best = min(pairs, key=lambda p: self._ranks.get(p, float("inf")))
      if best not in self._ranks:
        break
      merged, i = [], 0
      while i < len(word):
        if i < len(word) - 1 and (word[i], word[i + 1]) == best:
          merged.append(word[i] + word[i + 1])
          i += 2
        else:
          merged.append(word[i])
          i += 1
      word = merged
    return [self._ids[s] for s in word]

  def encode(self, text: str) -> list[int]:
    """The ids of the cleaned `text`, without start, end or padding."""
    ids = []
    for piece in self._pattern.findall(clean(text)):
      piece = "".join(self._byte_chars[b] for b in piece.encode("utf-8"))
      cached = self._cache.get(piece)
      if cached is None:
        if len(self._cache) >= _CACHE_LIMIT:
          self._cache.clear()
        cached = self._cache[piece] = self._bpe(piece)
      ids.extend(cached)
    return ids

  def decode(self, ids: Sequence[int]) -> str:
    """The text of `ids`, words joined by spaces; start, end and padding are dropped."""
    drop = {self.pad_id, self.bos_id, self.eos_id}
    chars = "".join(self._symbols[int(i)] for i in ids if int(i) not in drop)
    data = bytearray(self._char_bytes[c] for c in chars)
    return data.decode("utf-8", errors="replace").replace("</w>", " ").strip()
