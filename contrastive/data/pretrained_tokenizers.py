"""The tokenizers that ship beside SigLIP and Hugging Face checkpoints, with their sources' ids.

A pretrained text tower expects its source's ids exactly: no shift, the source's own end token,
its own padding. `tokenizer_specs.make_tokenizer` builds these from spec strings (what a checkpoint
loader writes into `Pretrained.data.tokenizer`):

- `"siglip:DIR/spiece.model"`: transformers' `SiglipTokenizer` (what `AutoProcessor` gives for
  an HF `SiglipModel` directory). Canonical cleaning; end `</s>`; padding `</s>` (the same id).
- `"siglip:DIR/tokenizer.json"`: open_clip's `HFTokenizer(clean="canonicalize")` (open_clip's
  SigLIP models, whose hub repos ship a `tokenizer.json`). open_clip canonical cleaning; end
  `</s>`; padding the config's.
- `"big_vision:PATH.model"`: big_vision's `tokenize(max_len, model=PATH, eos="sticky",
  pad_value=1)`, its SigLIP configs' text op. ASCII lower-casing; end `</s>`; padding 1.
- `"hf:DIR/tokenizer.json"`: a `tokenizers` file as its own template frames it (start and end
  from the post-processor). No cleaning; padding the config's, else 0.

Every one frames as `tokenize` does for all tokenizers: `[bos] + ids + [eos]`, cut to `max_len`
with the end token kept last ("sticky"), then padding. For SigLIP (T5's `cc_en.32000` vocabulary:
pad 0, `</s>` 1, `<unk>` 2) that is `ids[:L-1] + [1] + [1, ...]`: transformers pads with `</s>`
and big_vision with `pad_value=1`, the same id, and SigLIP's text tower reads the last position,
so the padding id matters. "config's" padding is the `pad_token` of a `tokenizer_config.json`
(or `special_tokens_map.json`) beside the file, else the end token for SigLIP and 0 for `hf:`.

Cleaning:

- canonical (transformers' `SiglipTokenizer.canonicalize_text`): lower-case (unless the
  `tokenizer_config.json` beside says `"do_lower_case": false`), drop ASCII punctuation
  (`string.punctuation`), one space per whitespace run, strip. As transformers does, the special
  strings `</s>` and `<unk>` written in a text are split off first and become their ids, and each
  piece is encoded as `sp.encode("<unk>" + piece)` minus the pieces of `"<unk>"`.
- open_clip canonical (`open_clip.tokenizer.canonicalize_text(basic_clean(text))`): fix and
  unescape as `clip_bpe.clean` does, `_` to a space, drop punctuation, lower-case, one space per
  run; then the file's tokenizer without its template.
- ASCII lower (big_vision's default `lower=True`, `tf.strings.lower`): only `A-Z` lower-case;
  no punctuation is dropped.

SigLIP 2 (Gemma's 256k-entry BPE, transformers' `Siglip2Tokenizer`) is not covered.
"""

from __future__ import annotations

from collections.abc import Sequence
import html
import json
import os
import re
import string

from contrastive.data import clip_bpe
from contrastive.data import tokenizers

_EXTRA = "pip install contrastive[tokenizers]"
_PUNCTUATION = str.maketrans("", "", string.punctuation)
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_UNDERLINE = "\u2581"  # SentencePiece's word-start mark


def _require(module: str):
  try:
    return __import__(module)
  except ImportError as e:
    raise ImportError(f"The {module!r} package is needed for this tokenizer: {_EXTRA}") from e


def hf_canonicalize(text: str, *, lower: bool = True) -> str:
  """transformers' `SiglipTokenizer.canonicalize_text`."""
  if lower:
    text = text.lower()
  return re.sub(r"\s+", " ", text.translate(_PUNCTUATION)).strip()


def open_clip_canonicalize(text: str) -> str:
  """open_clip's `canonicalize_text(basic_clean(text))`."""
  text = html.unescape(html.unescape(clip_bpe.fix_text(text))).strip()
  text = text.replace("_", " ").translate(_PUNCTUATION).lower()
  return " ".join(text.split())


def _side_config(path: str) -> dict:
  """`tokenizer_config.json` over `special_tokens_map.json`, from the file's directory."""
  out = {}
  for name in ("special_tokens_map.json", "tokenizer_config.json"):
    side = os.path.join(os.path.dirname(os.path.abspath(path)), name)
    if os.path.isfile(side):
      try:
        with open(side, encoding="utf-8") as f:
          out.update(json.load(f))
      except (OSError, ValueError) as e:
        raise ValueError(f"Tokenizer config {side!r} is not valid JSON: {e}") from e
  return out


def _token_name(value) -> str | None:
  """A special token as a config writes it: a string or `{"content": ...}`."""
  if isinstance(value, dict):
    return value.get("content")
  return value if isinstance(value, str) else None


class _Pretrained(tokenizers.FileTokenizer):
  """Loads at once (errors at start-up, not in a grain worker) and pickles as its path."""

  mask_id = None
  bos_id = None


class SiglipSentencePiece(_Pretrained):
  """A SigLIP `spiece.model` with transformers' `SiglipTokenizer` rules (`"siglip:PATH"`)."""

  def _load(self) -> None:
    spm = _require("sentencepiece")
    sp = spm.SentencePieceProcessor()
    try:
      sp.Load(self.path)
    except (OSError, RuntimeError) as e:
      raise ValueError(f"SentencePiece model {self.path!r} does not load: {e}") from e
    self._sp = sp
    side = _side_config(self.path)
    self._lower = bool(side.get("do_lower_case", True))
    names = {k: _token_name(side.get(k + "_token")) for k in ("eos", "unk", "pad")}
    eos, unk = names["eos"] or "</s>", names["unk"] or "<unk>"
    pad = names["pad"] or "</s>"
    ids = {t: sp.PieceToId(t) for t in (eos, unk, pad)}
    for role, token in (("end", eos), ("padding", pad)):
      if sp.IdToPiece(ids[token]) != token:
        raise ValueError(f"SentencePiece model {self.path!r} has no {role} piece {token!r}.")
    self.eos_id, self.pad_id, self._unk = ids[eos], ids[pad], unk
    self._specials = {eos: ids[eos], unk: ids[unk], pad: ids[pad]}
    self._split = re.compile(
      "(" + "|".join(re.escape(t) for t in sorted(self._specials, key=len, reverse=True)) + ")"
    )
    self._unk_len = len(sp.EncodeAsPieces(unk))
    self.vocab_size = sp.GetPieceSize()

  def _pieces(self, chunk: str) -> list[str]:
    pieces = self._sp.EncodeAsPieces(self._unk + hf_canonicalize(chunk, lower=self._lower))
    return pieces[self._unk_len :] if len(pieces) >= self._unk_len else pieces

  def encode(self, text: str) -> list[int]:
    """The ids transformers' `SiglipTokenizer` gives `text`, before its end token."""
    parts = self._split.split(_UNDERLINE + text.replace(_UNDERLINE, " "))
    for j in range(1, len(parts), 2):  # special tokens strip the whitespace beside them
      parts[j - 1], parts[j + 1] = parts[j - 1].rstrip(), parts[j + 1].lstrip()
    tokens = []  # (piece, is special)
    for j, part in enumerate(parts):
      if j % 2:
        tokens.append((part, True))
      elif part:
        tokens.extend((p, False) for p in self._pieces(part))
    # transformers drops a lone word-start mark before a special token.
    if len(tokens) > 1 and tokens[0] == (_UNDERLINE, False) and tokens[1][1]:
      tokens = tokens[1:]
    return [self._specials[p] if special else self._sp.PieceToId(p) for p, special in tokens]

  def decode(self, ids: Sequence[int]) -> str:
    drop = {self.pad_id, self.eos_id}
    return self._sp.DecodeIds([int(i) for i in ids if int(i) not in drop])


class BigVisionSentencePiece(SiglipSentencePiece):
  """big_vision's `tokenize(model=PATH, eos="sticky", pad_value=1)` (`"big_vision:PATH"`)."""

  def _load(self) -> None:
    super()._load()
    self.eos_id, self.pad_id = self._sp.eos_id(), 1
    if self.eos_id < 0:
      raise ValueError(
        f"SentencePiece model {self.path!r} has no end-of-sentence piece; "
        "big_vision's eos='sticky' needs one."
      )

  def encode(self, text: str) -> list[int]:
    return list(self._sp.EncodeAsIds(text.translate(_ASCII_LOWER)))


class _TokenizersFile(_Pretrained):
  """A Hugging Face `tokenizers` JSON file."""

  def _load_file(self):
    tk = _require("tokenizers")
    try:
      model = tk.Tokenizer.from_file(self.path)
    except Exception as e:  # tokenizers raises a bare Exception on a bad file
      raise ValueError(f"Tokenizers file {self.path!r} does not load: {e}") from e
    self._model = model
    self.vocab_size = model.get_vocab_size(with_added_tokens=True)
    return model, _side_config(self.path)

  def _id(self, token: str | None, role: str) -> int | None:
    if token is None:
      return None
    i = self._model.token_to_id(token)
    if i is None:
      raise ValueError(f"Tokenizers file {self.path!r} has no {role} token {token!r}.")
    return i

  def decode(self, ids: Sequence[int]) -> str:
    drop = {self.pad_id, self.eos_id, self.bos_id}
    return self._model.decode([int(i) for i in ids if int(i) not in drop])


class SiglipTokenizersFile(_TokenizersFile):
  """A SigLIP `tokenizer.json` with open_clip's `HFTokenizer(clean="canonicalize")` rules."""

  def _load(self) -> None:
    _, side = self._load_file()
    eos = _token_name(side.get("eos_token")) or "</s>"
    self.eos_id = self._id(eos, "end")
    self.pad_id = self._id(_token_name(side.get("pad_token")) or eos, "padding")

  def encode(self, text: str) -> list[int]:
    return self._model.encode(open_clip_canonicalize(text), add_special_tokens=False).ids


class HFTokenizersFile(_TokenizersFile):
  """A `tokenizers` file used as its checkpoint used it (`"hf:PATH"`): its own template.

  The start and end ids come from the file's post-processor (what it adds around a text: at
  most one before and one after), the padding from the `pad_token` beside, else 0.
  """

  def _load(self) -> None:
    model, side = self._load_file()
    for probe in ("a", "x", "hello", "1"):  # a text that gives ids between the specials
      plain = model.encode(probe, add_special_tokens=False).ids
      full = model.encode(probe, add_special_tokens=True).ids
      if plain:
        break
    start = next((k for k in range(len(full)) if full[k : k + len(plain)] == plain), None)
    head, tail = (None, None) if start is None else (full[:start], full[start + len(plain) :])
    if head is None or len(head) > 1 or len(tail) > 1:
      raise ValueError(
        f"Tokenizers file {self.path!r}: its template adds {full} around "
        f"{plain}; only one start and one end token are supported."
      )
    self.bos_id = head[0] if head else None
    self.eos_id = tail[0] if tail else None
    pad = _token_name(side.get("pad_token"))
    self.pad_id = 0 if pad is None else self._id(pad, "padding")

  def encode(self, text: str) -> list[int]:
    return self._model.encode(text, add_special_tokens=False).ids


def from_spec(kind: str, path: str):
  """The pretrained tokenizer of a `kind:path` spec (`siglip`, `big_vision`, `hf`)."""
  suffix = os.path.splitext(path)[1]
  if kind == "siglip" and suffix == ".model":
    return SiglipSentencePiece(path)
  if kind == "siglip" and suffix == ".json":
    return SiglipTokenizersFile(path)
  if kind == "big_vision" and suffix == ".model":
    return BigVisionSentencePiece(path)
  if kind == "hf" and suffix == ".json":
    return HFTokenizersFile(path)
  raise ValueError(
    f"Unknown tokenizer spec '{kind}:{path}'; known: 'siglip:*.model', "
    "'siglip:*.json', 'big_vision:*.model', 'hf:*.json'."
  )
