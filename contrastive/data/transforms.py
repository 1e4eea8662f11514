"""Per-example transforms, run in grain workers: decode, crop, flip, normalize, tokenize.

`ExampleTransform` turns one source record into one training example (see its docstring for
the keys). A record that cannot be used (corrupt image, empty caption, unreadable record) comes
out as `{"_bad": reason}`; the pipeline drops and counts it. Everything random draws from the
`np.random.Generator` grain passes with each element, so an example depends only on the seed and
its position in the stream.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import functools
import io
import math
from typing import Any, Literal

from absl import logging
import numpy as np
from PIL import Image

from contrastive.data import tokenizers as tokenizers_lib

Normalization = Literal["clip", "inception", "unit"]

# Per-channel mean and standard deviation of pixel values in [0, 1].
NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
  "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
  "inception": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # to [-1, 1]
  "unit": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),  # to [0, 1]
}
ERROR_KEY = "__error__"  # a source record that could not be read carries its reason here
BAD_KEY = "_bad"
SKIPPED_KEY = "_skipped"


# ---------------------------------------------------------------------------------------------
# Images.


def decode_image(data: bytes | np.ndarray) -> np.ndarray:
  """Encoded bytes (JPEG, PNG, ...) or an array to uint8 RGB `[height, width, 3]`.

  Raises:
    ValueError: undecodable bytes or an array of the wrong rank or channel count.
  """
  if isinstance(data, np.ndarray) and data.dtype != object and data.ndim >= 2:
    image = data
  else:
    if isinstance(data, np.ndarray):
      data = data.item()
    try:
      with Image.open(io.BytesIO(data)) as pil:
        image = np.asarray(pil.convert("RGB"))
    except Exception as e:
      raise ValueError(f"undecodable image ({type(e).__name__}: {e})") from e
  if image.ndim == 2:
    image = image[:, :, None]
  if image.ndim != 3 or image.shape[-1] not in (1, 3, 4) or min(image.shape[:2]) < 1:
    raise ValueError(f"image of shape {image.shape} is not [height, width, 1|3|4]")
  if image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)
  elif image.shape[-1] == 4:
    image = image[:, :, :3]
  if image.dtype != np.uint8:
    image = np.clip(image, 0, 255).astype(np.uint8)
  return image


def _resize_box(image: np.ndarray, size: int, box: tuple[float, float, float, float]) -> np.ndarray:
  """The `(left, top, right, bottom)` box of `image` resized to `[size, size, 3]` (bilinear)."""
  h, w = image.shape[:2]
  if box == (0, 0, w, h) and h == w == size:
    return image
  pil = Image.fromarray(image)
  return np.asarray(pil.resize((size, size), Image.BILINEAR, box=box))


def center_crop_resize(image: np.ndarray, size: int) -> np.ndarray:
  """The largest centred square, resized to uint8 `[size, size, 3]`."""
  h, w = image.shape[:2]
  side = min(h, w)
  left, top = (w - side) / 2, (h - side) / 2
  return _resize_box(image, size, (left, top, left + side, top + side))


def random_resized_crop(
  image: np.ndarray,
  rng: np.random.Generator,
  size: int,
  *,
  scale: tuple[float, float] = (0.08, 1.0),
  ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> np.ndarray:
  """Inception-style crop: a box of random area fraction and aspect ratio, to `[size, size, 3]`.

  Falls back to the centre square after ten boxes that do not fit.
  """
  h, w = image.shape[:2]
  area = h * w
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    target = area * rng.uniform(*scale)
    aspect = math.exp(rng.uniform(*log_ratio))
    cw, ch = math.sqrt(target * aspect), math.sqrt(target / aspect)
    if 0 < cw <= w and 0 < ch <= h:
      left, top = rng.uniform(0, w - cw), rng.uniform(0, h - ch)
      return _resize_box(image, size, (left, top, left + cw, top + ch))
  return center_crop_resize(image, size)


@functools.lru_cache(maxsize=16)
def _affine_rows(kind: str, width: int) -> tuple[np.ndarray, np.ndarray]:
  if kind not in NORMALIZATIONS:
    raise ValueError(f"Unknown normalization {kind!r}; known: {sorted(NORMALIZATIONS)}.")
  mean, std = (np.asarray(v, np.float32) for v in NORMALIZATIONS[kind])
  # Tiled over a whole row: numpy broadcasts a long trailing axis far faster than one of 3.
  return np.tile(1.0 / (255.0 * std), width), np.tile(-mean / std, width)


def normalize(image: np.ndarray, kind: Normalization = "clip") -> np.ndarray:
  """uint8 `[height, width, 3]` to float32 `(image / 255 - mean) / std` by `NORMALIZATIONS`."""
  h, w, c = image.shape
  scale, shift = _affine_rows(kind, w)
  out = image.reshape(h, w * c).astype(np.float32)
  out *= scale
  out += shift
  return out.reshape(h, w, c)


# ---------------------------------------------------------------------------------------------
# Text.


def caption_list(value: Any) -> list[str]:
  """A text field (str, bytes, or a list/array of them) as its non-empty captions."""
  if isinstance(value, (str, bytes)):
    value = [value]
  elif isinstance(value, np.ndarray):
    value = value.ravel().tolist()
  out = []
  for v in value:
    if isinstance(v, bytes):
      v = v.decode("utf-8", errors="replace")
    v = str(v).strip()
    if v:
      out.append(v)
  return out


def augment_tokens(
  ids: list[int],
  rng: np.random.Generator,
  *,
  delete_prob: float = 0.0,
  mask_prob: float = 0.0,
  mask_id: int | None = None,
) -> list[int]:
  """Drops each token with `delete_prob`, then replaces each with `mask_id` with `mask_prob`.

  At least one token is kept.
  """
  if delete_prob > 0 and len(ids) > 1:
    keep = rng.random(len(ids)) >= delete_prob
    if not keep.any():
      keep[rng.integers(len(ids))] = True
    ids = [i for i, k in zip(ids, keep) if k]
  if mask_prob > 0:
    masked = rng.random(len(ids)) < mask_prob
    ids = [mask_id if m else i for i, m in zip(ids, masked)]
  return ids


def _pad(ids: list[int], tokenizer: tokenizers_lib.Tokenizer, max_len: int) -> np.ndarray:
  # One framing for every path (start/end ids, truncation, padding id): see tokenizers.frame.
  return tokenizers_lib.frame(tokenizer, ids, max_len)


# ---------------------------------------------------------------------------------------------
# The example.


def get_field(record: dict[str, Any], key: str) -> Any:
  """`record[key]`, where `key` may be a `/`-separated path into nested dicts."""
  value = record
  for part in key.split("/"):
    value = value[part]
  return value


@dataclasses.dataclass(frozen=True)
class ExampleTransform:
  """One source record to one example (a grain random-map callable).

  Output keys:
    image: float32 `[image_size, image_size, 3]`, normalized.
    text: int32 `[max_len]`, 0 = padding.
    mask: bool, True (False only on padding rows that an evaluation pipeline adds).
    label: int32, when `label_key` is set.
    index, meaning_id, num_objects: int32; heldout: bool; from `passthrough`, when present.
    hard_negatives: int32 `[3, max_len]` and hard_negatives_mask: bool `[3]`, when
      `hard_negatives` (built-in dataset only).
    _skipped: int, always 0 here (the pipeline counts dropped records in it).

  A record that cannot be used gives `{"_bad": reason}` instead.

  Attributes:
    image_key, text_key, label_key: record fields (`/` reaches into nested dicts).
    image_size: output side in pixels.
    tokenizer, max_len: text encoding.
    training: random caption choice, crop, flip and text augmentation; else the first caption,
      centre crop and no augmentation.
    random_resized_crop, crop_scale, flip: image augmentation (training only).
    normalization: a key of `NORMALIZATIONS`.
    text_delete_prob, text_mask_prob: token deletion and masking (training only).
    hard_negatives: tokenize the record's `hard_negative_captions`.
    passthrough: numeric record fields copied to the example, if present.
  """

  image_key: str
  text_key: str
  image_size: int
  tokenizer: tokenizers_lib.Tokenizer
  max_len: int
  label_key: str | None = None
  training: bool = True
  random_resized_crop: bool = False
  crop_scale: tuple[float, float] = (0.9, 1.0)
  flip: bool = False
  normalization: Normalization = "clip"
  text_delete_prob: float = 0.0
  text_mask_prob: float = 0.0
  hard_negatives: bool = False
  passthrough: tuple[str, ...] = ("index", "meaning_id", "heldout", "num_objects")

  def __post_init__(self):
    if self.normalization not in NORMALIZATIONS:
      raise ValueError(
        f"Unknown normalization {self.normalization!r}; known: {sorted(NORMALIZATIONS)}."
      )
    if self.text_mask_prob > 0 and self.tokenizer.mask_id is None:
      raise ValueError(
        f"text_mask_prob={self.text_mask_prob} needs a mask token, and {self.tokenizer!r} has none."
      )
    for name in ("text_delete_prob", "text_mask_prob"):
      if not 0.0 <= getattr(self, name) < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}.")
    lo, hi = self.crop_scale
    if not 0 < lo <= hi <= 1:
      raise ValueError(f"crop_scale must satisfy 0 < min <= max <= 1, got {self.crop_scale}.")

  def __call__(self, record: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    try:
      return self._apply(record, rng)
    except _BadRecord as e:
      index = record.get("index", "?") if isinstance(record, dict) else "?"
      logging.log_every_n_seconds(logging.WARNING, "Skipping record %s: %s", 60, index, e)
      return {BAD_KEY: str(e)}

  def _apply(self, record: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    if ERROR_KEY in record:
      raise _BadRecord(f"unreadable record ({record[ERROR_KEY]})")
    captions = caption_list(get_field(record, self.text_key))
    if not captions:
      raise _BadRecord("empty caption")
    text = captions[int(rng.integers(len(captions)))] if self.training else captions[0]
    try:
      image = decode_image(get_field(record, self.image_key))
    except ValueError as e:
      raise _BadRecord(str(e)) from e

    if self.training and self.random_resized_crop:
      image = random_resized_crop(image, rng, self.image_size, scale=self.crop_scale)
    else:
      image = center_crop_resize(image, self.image_size)
    if self.training and self.flip and rng.random() < 0.5:
      image = image[:, ::-1]
    example = {
      "image": normalize(np.ascontiguousarray(image), self.normalization),
      "mask": np.bool_(True),
      SKIPPED_KEY: 0,
    }

    ids = self.tokenizer.encode(text)
    if self.training and (self.text_delete_prob or self.text_mask_prob):
      ids = augment_tokens(
        ids,
        rng,
        delete_prob=self.text_delete_prob,
        mask_prob=self.text_mask_prob,
        mask_id=self.tokenizer.mask_id,
      )
    example["text"] = _pad(ids, self.tokenizer, self.max_len)

    if self.label_key is not None:
      example["label"] = np.int32(get_field(record, self.label_key))
    for key in self.passthrough:
      if key in record:
        value = record[key]
        example[key] = np.bool_(value) if isinstance(value, (bool, np.bool_)) else np.int32(value)
    if self.hard_negatives:
      negatives = record["hard_negative_captions"]
      example["hard_negatives"] = np.stack(
        [_pad(self.tokenizer.encode(t), self.tokenizer, self.max_len) for t in negatives]
      )
      example["hard_negatives_mask"] = np.asarray(record["hard_negative_valid"], bool)
    return example


class _BadRecord(Exception):
  """A record to skip and count."""


def is_bad(example: dict[str, Any]) -> bool:
  return BAD_KEY in example


def stack_examples(examples: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
  """Stacks examples key by key; the `_skipped` counts are summed to one int."""
  out = {k: np.stack([e[k] for e in examples]) for k in examples[0] if k != SKIPPED_KEY}
  out[SKIPPED_KEY] = int(sum(e.get(SKIPPED_KEY, 0) for e in examples))
  return out


@dataclasses.dataclass(frozen=True)
class ModalityTransform:
  """One record of a source of named modalities (`Source.modalities`, e.g. `xor`) to one example.

  Each modality field becomes the model input of the same name, with no augmentation:
    a uint8 `[H, W, 3]` image: float32 `[H, W, 3]`, normalized by `normalization` (not resized:
      such a source draws at `data.image_size`);
    a str: int32 `[max_len]`, tokenized and framed as `ExampleTransform` does captions;
    another integer array: int32 (token ids as they are); a float array: float32 (vectors).
  Besides: `mask` (True), `label` (int32, when `label_key` is set) and the `passthrough` fields
  that are present (bool stays bool, integers become int32, floats float32; arrays keep their
  shape). An unreadable record gives `{"_bad": reason}`.
  """

  modalities: tuple[str, ...]
  tokenizer: tokenizers_lib.Tokenizer
  max_len: int
  normalization: Normalization = "clip"
  label_key: str | None = None
  passthrough: tuple[str, ...] = ("index",)

  def __post_init__(self):
    if self.normalization not in NORMALIZATIONS:
      raise ValueError(
        f"Unknown normalization {self.normalization!r}; known: {sorted(NORMALIZATIONS)}."
      )

  def __call__(self, record: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    del rng  # nothing random: no augmentation
    if ERROR_KEY in record:
      index = record.get("index", "?")
      logging.log_every_n_seconds(
        logging.WARNING, "Skipping record %s: %s", 60, index, record[ERROR_KEY]
      )
      return {BAD_KEY: f"unreadable record ({record[ERROR_KEY]})"}
    example = {"mask": np.bool_(True), SKIPPED_KEY: 0}
    for name in self.modalities:
      example[name] = self._input(get_field(record, name))
    if self.label_key is not None:
      example["label"] = np.int32(get_field(record, self.label_key))
    for key in self.passthrough:
      if key in record and key not in example:
        example[key] = _numeric(record[key])
    return example

  def _input(self, value: Any) -> np.ndarray:
    if isinstance(value, (str, bytes)):
      text = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value
      return _pad(self.tokenizer.encode(text), self.tokenizer, self.max_len)
    value = np.asarray(value)
    if value.dtype == np.uint8 and value.ndim == 3 and value.shape[-1] == 3:
      return normalize(np.ascontiguousarray(value), self.normalization)
    return _numeric(value)


def _numeric(value: Any) -> np.ndarray:
  value = np.asarray(value)
  if value.dtype == np.bool_:
    return value
  if np.issubdtype(value.dtype, np.integer):
    return value.astype(np.int32)
  return value.astype(np.float32)
