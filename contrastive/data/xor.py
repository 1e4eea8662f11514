r"""Three modalities whose signal is in no pair: Symile's XOR construction, rendered.

Each record draws two independent uniform bit vectors and a third that is their XOR:

.. math::
  a, b \sim \mathrm{Bernoulli}(1/2)^d, \qquad
  c_j = \begin{cases} a_j \oplus b_j & \text{with probability } p \\
                      a_j & \text{otherwise} \end{cases}

(independently per bit). At :math:`p = 1` (the default) every pair is independent, :math:`I(a;
b) = I(a; c) = I(b; c) = 0`, while any two determine the third: all the information is
higher-order, and a pairwise objective (CLIP on each pair) has nothing to learn, while Symile's
or GRAM's can learn :math:`c` from :math:`(a, b)`. At :math:`p = 0`, :math:`c = a` (all of it
pairwise); values between mix the two, as in Symile's synthetic experiment (Saporta et al., 2024,
section 5.1, with :math:`d = 5`).

Rendering, so that an encoder must read the bits: each modality is an image (by default) of a
`ceil(sqrt(d))`-wide grid of cells on a dark background, bit `j` at cell `(j // g, j % g)`
(row-major), a light square of half the cell's side where the bit is 1 and nothing where it is
0; `jitter` moves each square to a random place in its cell, `noise` adds Gaussian pixel noise
(standard deviation in units of the pixel range). A modality named in `tokens` is the string of
its bits instead (`"0110"`: one token per bit with the `bytes` tokenizer), for a text tower.
Everything is a pure function of `(seed, split, index)`; nothing is stored.

Records (`XorSource[i]`):
  a, b, c: uint8 `[image_size, image_size, 3]` images, or str for the modalities in `tokens`.
  a_bits, b_bits, c_bits: int32 `[d]`, the bits each shows.
  index: int, `i`.

The pipeline (source `"xor"`) feeds `a`, `b`, `c` to the towers of those names: images
normalized to float32 `[b, image_size, image_size, 3]`, strings tokenized to int32
`[b, max_len]`; `a_bits`, `b_bits`, `c_bits` come along as int32 `[b, d]`, with `mask` and
`index`. A three-tower Symile run:

    config.data.source = "xor"
    config.data.image_size = 16
    config.data.xor = dict(bits=4, noise=0.05, jitter=True)  # options: XOR_DEFAULTS
    tower = dict(kind="cnn", image_size=16, widths=(16, 32), width=64)
    config.model.encoders = dict(a=tower, b=tower, c=tower)
    config.loss.name = "symile"                              # or "gram"; "softmax" is pairwise

With `config.data.xor.tokens = ("c",)` the `c` tower is a text one instead, e.g.
`dict(kind="text", variant="mu", vocab_size=259, max_len=8)` with `data.max_len = 8`.
"""

from __future__ import annotations

from collections.abc import Sequence
import hashlib
import math
from typing import Any

import numpy as np

MODALITIES = ("a", "b", "c")
SPLITS = ("train", "test")
# The options of `config.data.xor` and their defaults.
XOR_DEFAULTS = dict(
  seed=0,
  train_size=100_000,
  test_size=2_000,
  bits=4,
  xor_prob=1.0,
  noise=0.0,
  jitter=False,
  tokens=(),
)
MIN_CELL = 4  # pixels per grid cell: a square of half the side, and room to jitter it
BACKGROUND, FOREGROUND = 40, 215


def grid(bits: int, image_size: int) -> tuple[int, int, int, int]:
  """`(columns, cell, margin, square)`: the layout of `bits` cells in an `image_size` image.

  Cell `j` spans pixels `[margin + (j // columns) * cell, ... + cell)` in rows and likewise
  `j % columns` in columns; its square has side `square`.
  """
  columns = math.ceil(math.sqrt(bits))
  cell = image_size // columns
  return columns, cell, (image_size - columns * cell) // 2, cell // 2


def xor_bits(
  rng: np.random.Generator, bits: int, xor_prob: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """`(a, b, c)` int32 `[bits]` each: `a, b` uniform, `c` their XOR on a `xor_prob` share."""
  a = rng.integers(0, 2, bits).astype(np.int32)
  b = rng.integers(0, 2, bits).astype(np.int32)
  use_xor = rng.random(bits) < xor_prob  # drawn at every `xor_prob`, so it never shifts a stream
  return a, b, np.where(use_xor, a ^ b, a).astype(np.int32)


def render_image(
  bits: np.ndarray,
  rng: np.random.Generator,
  *,
  image_size: int,
  noise: float = 0.0,
  jitter: bool = False,
) -> np.ndarray:
  """The bits as uint8 `[image_size, image_size, 3]`: a light square in cell `j` where bit `j`
  is 1 (see the module docstring)."""
  columns, cell, margin, square = grid(len(bits), image_size)
  image = np.full((image_size, image_size), BACKGROUND, np.float32)
  offsets = (
    rng.integers(0, cell - square + 1, (len(bits), 2))
    if jitter
    else np.full((len(bits), 2), (cell - square) // 2)
  )
  for j, bit in enumerate(bits):
    if bit:
      top = margin + (j // columns) * cell + offsets[j, 0]
      left = margin + (j % columns) * cell + offsets[j, 1]
      image[top : top + square, left : left + square] = FOREGROUND
  image = np.repeat(image[:, :, None], 3, axis=-1)
  if noise > 0:
    image += rng.normal(0.0, 255.0 * noise, image.shape).astype(np.float32)
  return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def render_tokens(bits: np.ndarray) -> str:
  """The bits as a string, `"0110"`."""
  return "".join("1" if bit else "0" for bit in bits)


def _stream_key(seed: int, split: str) -> int:
  """A 64-bit key of `(seed, split)`, stable across processes (unlike the salted `hash()`)."""
  digest = hashlib.blake2b(f"contrastive.xor/{seed}/{split}".encode(), digest_size=8)
  return int.from_bytes(digest.digest(), "little")


def _is_int(value: Any) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


class XorSource:
  """Random-access source of the XOR records (grain `RandomAccessDataSource` protocol).

  Args:
    split: `"train"` or `"test"` (independent streams).
    num_examples: the length (the content does not depend on it).
    image_size: the side of the images, at least `4 * ceil(sqrt(bits))`.
    seed: with `split` and the index, it fixes every record.
    bits: `d`, the bits per modality, 1 to 256.
    xor_prob: `p`, the share of `c`'s bits that are `a XOR b` (the others copy `a`).
    noise: the standard deviation of Gaussian pixel noise, in units of 255 (0: none).
    jitter: place each square at random in its cell (else centred).
    tokens: the modalities rendered as strings of bits instead of images.

  Raises:
    ValueError: a bad option, naming it (as `data.xor.<option>`) and its value.
  """

  fields = ("a", "b", "c", "a_bits", "b_bits", "c_bits", "index")

  def __init__(
    self,
    *,
    split: str,
    num_examples: int,
    image_size: int = 32,
    seed: int = 0,
    bits: int = 4,
    xor_prob: float = 1.0,
    noise: float = 0.0,
    jitter: bool = False,
    tokens: Sequence[str] = (),
  ):
    if split not in SPLITS:
      raise ValueError(f"Unknown split {split!r} of data source 'xor'; known: {SPLITS}.")
    if not _is_int(num_examples) or num_examples < 1:
      raise ValueError(f"data.xor: the {split} size must be a positive int, got {num_examples!r}.")
    if not _is_int(seed) or seed < 0:
      raise ValueError(f"data.xor.seed must be a non-negative int, got {seed!r}.")
    if not _is_int(bits) or not 1 <= bits <= 256:
      raise ValueError(f"data.xor.bits must be an int in [1, 256], got {bits!r}.")
    if (
      isinstance(xor_prob, bool)
      or not isinstance(xor_prob, (int, float))
      or not (0.0 <= xor_prob <= 1.0)
    ):
      raise ValueError(f"data.xor.xor_prob must be in [0, 1], got {xor_prob!r}.")
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not noise >= 0:
      raise ValueError(f"data.xor.noise must be a non-negative float, got {noise!r}.")
    if not isinstance(jitter, (bool, np.bool_)):
      raise ValueError(f"data.xor.jitter must be a bool, got {jitter!r}.")
    if isinstance(tokens, str):
      tokens = (tokens,)
    unknown = sorted(set(tokens) - set(MODALITIES))
    if unknown:
      raise ValueError(
        f"data.xor.tokens names {unknown}, not modalities of data source 'xor'; "
        f"known: {list(MODALITIES)}."
      )
    columns = math.ceil(math.sqrt(bits))
    if set(tokens) != set(MODALITIES) and (
      not _is_int(image_size) or image_size < MIN_CELL * columns
    ):
      raise ValueError(
        f"data.image_size={image_size!r} is too small for data.xor.bits={bits}: "
        f"its {columns}x{columns} grid needs cells of at least {MIN_CELL} pixels, "
        f"an image_size of at least {MIN_CELL * columns}."
      )
    self.split = split
    self.num_examples = int(num_examples)
    self.image_size = int(image_size)
    self.seed = int(seed)
    self.bits = int(bits)
    self.xor_prob = float(xor_prob)
    self.noise = float(noise)
    self.jitter = bool(jitter)
    self.tokens = tuple(m for m in MODALITIES if m in tokens)
    self._key = _stream_key(self.seed, split)

  def __len__(self) -> int:
    return self.num_examples

  def __repr__(self) -> str:
    return (
      f"XorSource(split={self.split!r}, num_examples={self.num_examples}, "
      f"image_size={self.image_size}, seed={self.seed}, bits={self.bits}, "
      f"xor_prob={self.xor_prob}, noise={self.noise}, jitter={self.jitter}, "
      f"tokens={self.tokens})"
    )

  def __getitem__(self, index: int) -> dict[str, Any]:
    index = int(index)
    if not 0 <= index < self.num_examples:
      raise IndexError(f"Index {index} is out of range for {self!r}.")
    # One Philox stream per (seed, split, index) for the bits, another for the rendering, so
    # the rendering options never change which bits a record shows.
    bits_rng = np.random.Generator(np.random.Philox(key=2 * index + (self._key << 64)))
    draw_rng = np.random.Generator(np.random.Philox(key=2 * index + 1 + (self._key << 64)))
    values = dict(zip(MODALITIES, xor_bits(bits_rng, self.bits, self.xor_prob)))
    record: dict[str, Any] = {}
    for name, bits in values.items():
      record[name] = (
        render_tokens(bits)
        if name in self.tokens
        else render_image(
          bits, draw_rng, image_size=self.image_size, noise=self.noise, jitter=self.jitter
        )
      )
      record[f"{name}_bits"] = bits
    record["index"] = index
    return record
