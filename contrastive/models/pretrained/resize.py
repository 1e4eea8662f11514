"""Resizing learned position tables to another image size or text length, as each family does.

A ViT's learned table holds `extra` leading rows (the class token's, kept as they are) and one
row per patch of an `h x w` grid; resizing reshapes the grid rows to `[h, w, width]`, resamples
them to the new grid `[H, W, width]` and puts the extra rows back in front. A text table
`[L, width]` is resampled along its length. Every method is separable: one `[out, in]` matrix of
weights per axis, so

.. math::
  \\mathrm{new}[i, j] = \\sum_{a, b} R_h[i, a] \\, R_w[j, b] \\, \\mathrm{old}[a, b].

The matrices follow each family's own code, so a resized checkpoint equals what that family
gives:

- `bicubic_antialias` (open_clip's image grid): `torch.nn.functional.interpolate(
  mode="bicubic", antialias=True, align_corners=False)`, Keys' cubic with `a = -0.5`, its
  support widened by the scale when downsampling, the weights of each output normalized to 1;
- `bicubic` (Hugging Face's image grid, `interpolate_pos_encoding`): `interpolate(
  mode="bicubic", align_corners=False)`, Keys' cubic with `a = -0.75` at
  `src = (dst + 1/2) in / out - 1/2`, the edge taps clamped;
- `linear` (open_clip's and Hugging Face's text table): `interpolate(mode="linear",
  align_corners=False)`, `src = max((dst + 1/2) in / out - 1/2, 0)`;
- `zoom_linear` (big_vision's `resample_posemb`, grid and text): `scipy.ndimage.zoom(order=1)`,
  corners aligned, `src = dst (in - 1) / (out - 1)`.

`resize_pretrained` applies them to a loaded `Pretrained` (`models.load_pretrained(path,
image_size=..., max_len=...)`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import ml_collections
import numpy as np

from contrastive.models.pretrained import common

Method = Literal["bicubic_antialias", "bicubic", "linear", "zoom_linear"]
METHODS = ("bicubic_antialias", "bicubic", "linear", "zoom_linear")

# family: (method for the image grid, method for the text length).
FAMILY_METHODS: dict[str, tuple[str, str]] = {
  "open_clip": (
    "bicubic_antialias",
    "linear",
  ),  # open_clip's resize_pos_embed, resize_text_pos_embed
  "hf": ("bicubic", "linear"),  # transformers' interpolate_pos_encoding
  "big_vision": ("zoom_linear", "zoom_linear"),  # big_vision's resample_posemb
}

IMAGE_POSEMB = "image/encoder/pos_embedding"
TEXT_POSEMB = "text/encoder/pos_embedding"


def _keys_cubic(x: np.ndarray, a: float) -> np.ndarray:
  """Keys' cubic convolution kernel with parameter `a` (support [-2, 2])."""
  x = np.abs(x)
  near = ((a + 2) * x - (a + 3)) * x * x + 1
  far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
  return np.where(x < 1, near, np.where(x < 2, far, 0.0))


def _bicubic_antialias(in_size: int, out_size: int) -> np.ndarray:
  # torch's separable antialiased kernel (aten UpSampleKernel `_compute_weights_aa`).
  scale = in_size / out_size
  support = 2.0 * scale if scale >= 1.0 else 2.0
  invscale = 1.0 / scale if scale >= 1.0 else 1.0
  out = np.zeros((out_size, in_size))
  for i in range(out_size):
    center = scale * (i + 0.5)
    lo = max(int(center - support + 0.5), 0)  # int(): truncation, as the C++ cast
    hi = min(int(center + support + 0.5), in_size)
    j = np.arange(lo, hi)
    w = _keys_cubic((j - center + 0.5) * invscale, -0.5)
    total = w.sum()
    out[i, lo:hi] = w / total if total != 0 else w
  return out


def _bicubic(in_size: int, out_size: int) -> np.ndarray:
  # torch's upsample_bicubic2d: src = scale (dst + 0.5) - 0.5, taps floor(src) - 1 .. + 2 clamped.
  scale = in_size / out_size
  out = np.zeros((out_size, in_size))
  for i in range(out_size):
    src = scale * (i + 0.5) - 0.5
    base = math.floor(src)
    t = src - base
    weights = _keys_cubic(np.array([t + 1, t, 1 - t, 2 - t]), -0.75)
    for k, w in zip(range(base - 1, base + 3), weights):
      out[i, min(max(k, 0), in_size - 1)] += w
  return out


def _linear(in_size: int, out_size: int) -> np.ndarray:
  # torch's upsample_linear1d: src = max(scale (dst + 0.5) - 0.5, 0), taps floor(src) and +1.
  scale = in_size / out_size
  out = np.zeros((out_size, in_size))
  for i in range(out_size):
    src = max(scale * (i + 0.5) - 0.5, 0.0)
    lo = int(src)
    hi = lo + (1 if lo < in_size - 1 else 0)
    t = src - lo
    out[i, lo] += 1.0 - t
    out[i, hi] += t
  return out


def _zoom_linear(in_size: int, out_size: int) -> np.ndarray:
  # scipy.ndimage.zoom(order=1, grid_mode=False): corners aligned.
  ratio = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
  out = np.zeros((out_size, in_size))
  for i in range(out_size):
    src = i * ratio
    lo = min(int(math.floor(src)), in_size - 1)
    hi = min(lo + 1, in_size - 1)
    t = src - lo
    out[i, lo] += 1.0 - t
    out[i, hi] += t
  return out


_WEIGHTS = {
  "bicubic_antialias": _bicubic_antialias,
  "bicubic": _bicubic,
  "linear": _linear,
  "zoom_linear": _zoom_linear,
}


def resize_weights(in_size: int, out_size: int, *, method: Method) -> np.ndarray:
  """The `[out_size, in_size]` float64 matrix that resamples one axis with `method`.

  Each row sums to 1 (the methods interpolate; they do not scale).
  """
  if method not in _WEIGHTS:
    raise ValueError(f"Unknown resize method {method!r}; known: {list(METHODS)}.")
  for what, size in (("in_size", in_size), ("out_size", out_size)):
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
      raise ValueError(f"Resize {what} must be a positive int, got {size!r}.")
  return _WEIGHTS[method](in_size, out_size)


def resize_grid(
  grid: np.ndarray, size: tuple[int, int], *, method: Method = "bicubic_antialias"
) -> np.ndarray:
  """Resamples a `[h, w, width]` grid of embeddings to `[size[0], size[1], width]`.

  Computed in float64, returned in the input's dtype.
  """
  grid = np.asarray(grid)
  if grid.ndim != 3:
    raise ValueError(f"resize_grid takes a [h, w, width] grid, got shape {grid.shape}.")
  rh = resize_weights(grid.shape[0], int(size[0]), method=method)
  rw = resize_weights(grid.shape[1], int(size[1]), method=method)
  out = np.einsum("ia,jb,abd->ijd", rh, rw, grid.astype(np.float64))
  return out.astype(grid.dtype)


def resize_image_posemb(
  table: np.ndarray,
  old_grid: tuple[int, int],
  new_grid: tuple[int, int],
  *,
  extra_tokens: int = 0,
  method: Method = "bicubic_antialias",
) -> np.ndarray:
  """A ViT's learned position table for another patch grid; the extra (class token) rows kept.

  Args:
    table: `[1, extra_tokens + h * w, width]` (or without the leading 1), patches row-major.
    old_grid: `(h, w)`, the grid the table was learned for.
    new_grid: `(H, W)`, the grid wanted.
    extra_tokens: leading rows that are not patches (1 for CLIP's class token).
    method: see the module's table.

  Returns:
    `[1, extra_tokens + H * W, width]` (matching the input's rank), the input's dtype.

  Raises:
    ValueError: a table whose length is not `extra_tokens + h * w`.
  """
  table = np.asarray(table)
  squeeze = table.ndim == 2
  if not (squeeze or (table.ndim == 3 and table.shape[0] == 1)):
    raise ValueError(
      f"A position table is [1, tokens, width] or [tokens, width]; got {table.shape}."
    )
  rows = table if squeeze else table[0]
  (h, w), (nh, nw) = tuple(old_grid), tuple(new_grid)
  if rows.shape[0] != extra_tokens + h * w:
    raise ValueError(
      f"The position table has {rows.shape[0]} rows; a {h}x{w} grid with {extra_tokens} extra "
      f"token(s) needs {extra_tokens + h * w}."
    )
  extra, patches = rows[:extra_tokens], rows[extra_tokens:]
  grid = resize_grid(patches.reshape(h, w, -1), (nh, nw), method=method)
  out = np.concatenate([extra, grid.reshape(nh * nw, -1)], axis=0)
  return out if squeeze else out[None]


def resize_text_posemb(table: np.ndarray, max_len: int, *, method: Method = "linear") -> np.ndarray:
  """A text tower's `[L, width]` (or `[1, L, width]`) position table resampled to `max_len`."""
  table = np.asarray(table)
  rows = table.reshape(table.shape[-2:]) if table.ndim == 3 and table.shape[0] == 1 else table
  if rows.ndim != 2:
    raise ValueError(f"A text position table is [length, width]; got {table.shape}.")
  out = resize_weights(rows.shape[0], int(max_len), method=method) @ rows.astype(np.float64)
  out = out.astype(table.dtype)
  return out[None] if table.ndim == 3 else out


def _hw(size) -> tuple[int, int]:
  if isinstance(size, int):
    return (size, size)
  return tuple(int(s) for s in size)


def patch_grid(image_size, patch_size: int, *, drop_remainder: bool = False) -> tuple[int, int]:
  """The `(rows, cols)` patch grid of an image size (an int or `(height, width)`).

  Raises:
    ValueError: a side the patch does not divide (unless `drop_remainder`).
  """
  h, w = _hw(image_size)
  if (h % patch_size or w % patch_size) and not drop_remainder:
    raise ValueError(
      f"image_size {image_size!r} is not divisible by the patch size {patch_size} (e.g. "
      f"{patch_size * max(h // patch_size, 1)} or {patch_size * (h // patch_size + 1)} is)."
    )
  return h // patch_size, w // patch_size


def resize_pretrained(
  pre: common.Pretrained,
  *,
  image_size: int | tuple[int, int] | None = None,
  max_len: int | None = None,
) -> common.Pretrained:
  """`pre` for another image size and/or text length, its position tables resized its family's
  way (`FAMILY_METHODS`); `model_config` and `data` carry the new values.

  The image tower's `data.resize` scales with the image size (CLIP's 224 -> 336 resizes the
  shorter side to 336 before the centre crop); a non-square `(height, width)` changes the model
  only (`data` holds one side). A ViT with fixed (sin-cos) position embeddings only changes its
  `image_size`.

  Raises:
    ValueError: a size the patch does not divide, a non-positive length, or a tower to resize
      that the model does not have.
  """
  from contrastive.models import config as config_lib

  if image_size is None and max_len is None:
    return pre
  config = ml_collections.ConfigDict(pre.model_config.to_dict())
  data = ml_collections.ConfigDict(pre.data.to_dict())
  flat = dict(common.flatten(pre.params))
  grid_method, text_method = FAMILY_METHODS.get(pre.family, FAMILY_METHODS["open_clip"])
  encoders = config.encoders
  if image_size is not None:
    if "image" not in encoders or encoders.image.get("kind") != "vit":
      raise ValueError(f"image_size={image_size!r}: {pre.source} has no ViT image tower.")
    new_hw = _hw(image_size)
    if min(new_hw) < 1:
      raise ValueError(f"image_size must be positive, got {image_size!r}.")
    vit = config_lib.make_encoder(encoders.image, modality="image")
    patch = vit.dims["patch_size"]
    old = patch_grid(vit.image_hw, patch, drop_remainder=vit.drop_remainder)
    new = patch_grid(new_hw, patch, drop_remainder=vit.drop_remainder)
    if IMAGE_POSEMB in flat and old != new:
      flat[IMAGE_POSEMB] = resize_image_posemb(
        flat[IMAGE_POSEMB], old, new, extra_tokens=int(vit.cls_posemb), method=grid_method
      )
    old_side = int(data.image_size)
    with encoders.image.ignore_type():
      encoders.image.image_size = image_size if isinstance(image_size, int) else tuple(new_hw)
    data.image_size = int(new_hw[0]) if new_hw[0] == new_hw[1] else old_side
    if new_hw[0] == new_hw[1]:
      data.resize = int(round(int(data.resize) * new_hw[0] / old_side))
  if max_len is not None:
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
      raise ValueError(f"max_len must be a positive int, got {max_len!r}.")
    if "text" not in encoders or encoders.text.get("kind") != "text":
      raise ValueError(f"max_len={max_len}: {pre.source} has no text tower.")
    if TEXT_POSEMB in flat and flat[TEXT_POSEMB].shape[-2] != max_len:
      flat[TEXT_POSEMB] = resize_text_posemb(flat[TEXT_POSEMB], max_len, method=text_method)
    encoders.text.max_len = int(max_len)
    data.max_len = int(max_len)
  return dataclasses.replace(pre, model_config=config, params=common.unflatten(flat), data=data)
