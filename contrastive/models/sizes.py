"""Transformer sizes by name: `"B/16"` for a ViT, `"B"` or `"CLIP-B"` for a text transformer.

One explicit table, after big_vision's `decode_variant` (`big_vision/models/vit.py`), whose
numbers come from "Scaling Vision Transformers" (Zhai et al., 2021, Table 2) and, for
`So400m`, "Getting ViT in Shape" (Alabdulmohsin et al., 2023). The `mu`, `nano` and `micro`
entries are tiny sizes for CPU tests and examples; the `CLIP-*` entries are the text towers of
OpenAI's CLIP and open_clip (Radford et al., 2021), which are narrower than the image tower they
are paired with.

Every dimension a name gives can be overridden by the encoder's own keyword (`width=`, ...).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Size:
  """The dimensions of a pre-LayerNorm transformer encoder.

  Attributes:
    width: the model (residual stream) dimension, `embed` in the logical axis names.
    depth: the number of blocks.
    mlp_dim: the hidden size of each block's MLP, `mlp` in the logical axis names.
    num_heads: the number of attention heads; `width` must be divisible by it.
  """

  width: int
  depth: int
  mlp_dim: int
  num_heads: int


# name: Size(width, depth, mlp_dim, num_heads)
SIZES: dict[str, Size] = {
  # Tiny sizes for tests and CPU runs.
  "mu": Size(32, 1, 128, 2),
  "nano": Size(64, 2, 256, 2),
  "micro": Size(128, 4, 512, 4),
  # Zhai et al. 2021, Table 2; So400m from Alabdulmohsin et al. 2023.
  "Ti": Size(192, 12, 768, 3),
  "S": Size(384, 12, 1536, 6),
  "M": Size(512, 12, 2048, 8),
  "B": Size(768, 12, 3072, 12),
  "L": Size(1024, 24, 4096, 16),
  "So400m": Size(1152, 27, 4304, 16),
  "H": Size(1280, 32, 5120, 16),
  "g": Size(1408, 40, 6144, 16),
  "G": Size(1664, 48, 8192, 16),
}

# Text-only names: the text towers of CLIP ViT-B/*, ViT-L/14 (OpenAI) and ViT-H/14 (open_clip).
TEXT_SIZES: dict[str, Size] = {
  **SIZES,
  "CLIP-B": Size(512, 12, 2048, 8),
  "CLIP-L": Size(768, 12, 3072, 12),
  "CLIP-H": Size(1024, 24, 4096, 16),
}


@dataclasses.dataclass(frozen=True)
class VitSize(Size):
  """A `Size` plus the side of the square image patches."""

  patch_size: int = 16


def decode_vit_variant(variant: str) -> VitSize:
  """Turns `"B/16"` (size name, slash, patch side) into its dimensions.

  Args:
    variant: `"<name>/<patch>"` with `<name>` a key of `SIZES` and `<patch>` a positive int.

  Returns:
    The `VitSize` of that name and patch size.

  Raises:
    ValueError: the name is unknown (the message lists the known ones) or the patch is not a
      positive integer.

  Example:
    >>> decode_vit_variant("B/16")
    VitSize(width=768, depth=12, mlp_dim=3072, num_heads=12, patch_size=16)
  """
  if not isinstance(variant, str) or variant.count("/") != 1:
    raise ValueError(
      f"Unknown ViT variant {variant!r}: expected '<size>/<patch>' such as 'B/16', with size "
      f"one of {sorted(SIZES)}."
    )
  name, patch = variant.split("/")
  if name not in SIZES:
    raise ValueError(
      f"Unknown ViT size {name!r} in variant {variant!r}; known sizes: {sorted(SIZES)}."
    )
  if not patch.isdigit() or int(patch) < 1:
    raise ValueError(
      f"The patch size in ViT variant {variant!r} must be a positive integer, got {patch!r}."
    )
  return VitSize(**dataclasses.asdict(SIZES[name]), patch_size=int(patch))


def decode_text_variant(variant: str) -> Size:
  """Turns a text size name (`"B"`, `"CLIP-B"`, `"mu"`, ...) into its dimensions.

  Raises:
    ValueError: the name is unknown; the message lists the known ones.

  Example:
    >>> decode_text_variant("CLIP-B")
    Size(width=512, depth=12, mlp_dim=2048, num_heads=8)
  """
  if variant not in TEXT_SIZES:
    raise ValueError(f"Unknown text size {variant!r}; known sizes: {sorted(TEXT_SIZES)}.")
  return TEXT_SIZES[variant]


def resolve_size(
  base: Size | None, overrides: dict[str, int | None], *, what: str
) -> dict[str, int]:
  """Merges a named size with explicit per-dimension overrides and checks the result.

  Args:
    base: the size a variant name gave, or None when no name was given.
    overrides: `{field: value or None}`; a non-None value replaces the named one.
    what: how to call the encoder in error messages.

  Returns:
    `{field: int}` for every field of `Size` (and `patch_size` where `overrides` has it).

  Raises:
    ValueError: a dimension is neither named nor given, is not a positive int, or `width` is
      not divisible by `num_heads`.
  """
  out = {}
  for field, value in overrides.items():
    if value is None:
      value = getattr(base, field, None) if base is not None else None
    if value is None:
      raise ValueError(
        f"{what}: no variant name gives {field!r} and it was not set; pass "
        f"variant= (one of {sorted(SIZES)}) or {field}=."
      )
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f"{what}: {field} must be a positive int, got {value!r}.")
    out[field] = value
  if out["width"] % out["num_heads"]:
    raise ValueError(
      f"{what}: width {out['width']} is not divisible by num_heads {out['num_heads']}."
    )
  return out
