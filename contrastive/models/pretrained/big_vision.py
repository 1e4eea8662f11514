"""big_vision checkpoints: the `.npz` of a SigLIP (or LiT) two-tower model.

big_vision saves a two-tower model (`big_vision/models/proj/image_text/two_towers.py`) as one
`.npz` whose keys are the flattened flax params joined by `/`, optionally under `params/`:
`img/...` (the ViT of `big_vision/models/vit.py`), `txt/...` (the text transformer of
`proj/image_text/text_transformer.py`), `t` (the log temperature) and `b` (the SigLIP bias).
Blocks are either unrolled (`encoderblock_{i}`) or scanned (one `encoderblock` whose leaves
have a leading layer axis, as the published SigLIP checkpoints are).

Both are flax, so the mapping only renames (`LayerNorm_0` -> `norm1`,
`MultiHeadDotProductAttention_0` -> `attn`, `MlpBlock_0/Dense_0` -> `mlp/fc1`, ...): every
kernel already has this library's shape. The sizes come from the shapes (width and patch from
`img/embedding/kernel`, heads from the query kernels, image side from `img/pos_embedding`);
the image side is the multiple of 32 whose patches fill the position table (So400m/14: 27 x 27
patches at 384 px, the remaining 6 px dropped by the VALID convolution as in big_vision:
`drop_remainder=True`). `name=` (`"B/16"`, or big_vision's `"siglip_b16_224"`, `"So400m/14"`,
...) is checked against the shapes and gives the side where the position embedding is fixed
(`sincos2d`) or ambiguous. The towers
follow big_vision's defaults: no pre-LayerNorm, the encoder norm before pooling, tanh GELU, eps
1e-6, bidirectional text attention pooled at the last position over every token (`pad_id=None`:
big_vision pads with a real id and reads position -1).
"""

from __future__ import annotations

import math
import os
import re
import zipfile

from absl import logging
import flax
import jax
import ml_collections

from contrastive.models import config as model_config_lib
from contrastive.models import layers
from contrastive.models import sizes
from contrastive.models.pretrained import common
from contrastive.models.pretrained import weights as weights_lib

PREFIX = "params/"
# Vocabulary size: the SentencePiece model big_vision's SigLIP checkpoints were trained with.
TOKENIZER_HINTS = {
  32_000: "big_vision's English C4 SentencePiece (c4_en, 32k)",
  250_000: "big_vision's multilingual mC4 SentencePiece (250k)",
  256_000: "the Gemma SentencePiece (SigLIP 2, 256k)",
}
MEAN = STD = (0.5, 0.5, 0.5)  # big_vision's value_range(-1, 1)
# Block parts: big_vision's module name -> this library's.
_BLOCK = {
  "LayerNorm_0": "norm1",
  "LayerNorm_1": "norm2",
  "MultiHeadDotProductAttention_0": "attn",
  "MlpBlock_0/Dense_0": "mlp/fc1",
  "MlpBlock_0/Dense_1": "mlp/fc2",
}
_MAP = {
  "LayerNorm_0": "norm",
  "MultiHeadDotProductAttention_0": "attn",
  "MlpBlock_0/Dense_0": "mlp/fc1",
  "MlpBlock_0/Dense_1": "mlp/fc2",
  "probe": "probe",
}
# Tower prefixes: big_vision's -> this library's, and the part table under each.
_TOWERS = (
  ("img/Transformer/encoder_norm/", "image/encoder/norm/", None),
  ("img/Transformer/", "image/encoder/transformer/", _BLOCK),
  ("img/MAPHead_0/", "image/encoder/map/", _MAP),
  ("img/embedding/", "image/encoder/embedding/", None),
  ("img/pos_embedding", "image/encoder/pos_embedding", None),
  ("img/cls", "image/encoder/cls", None),
  ("img/head/", "image/head/", None),
  ("txt/Embed_0/embedding", "text/encoder/embedding/embedding", None),
  ("txt/pos_embedding", "text/encoder/pos_embedding", None),
  ("txt/Encoder_0/encoder_norm/", "text/encoder/norm/", None),
  ("txt/Encoder_0/", "text/encoder/transformer/", _BLOCK),
  ("txt/head/", "text/head/", None),
  ("t", "log_scale", None),
  ("b", "bias", None),
)
_SIZE_NAMES = "|".join(sorted(sizes.SIZES, key=len, reverse=True))
_NAME = re.compile(rf"(?:^|[_/-])({_SIZE_NAMES})/?(\d+)(?:[_/-](\d+))?", re.IGNORECASE)


def _two_towers(npz: str) -> bool:
  try:
    with zipfile.ZipFile(npz) as archive:
      keys = [n[len(PREFIX) :] if n.startswith(PREFIX) else n for n in archive.namelist()]
  except (OSError, zipfile.BadZipFile):
    return False
  return any(k.startswith("img/") for k in keys) and any(k.startswith("txt/") for k in keys)


def _npz(path: str | os.PathLike) -> str | None:
  """The file itself, or a directory's only two-tower `.npz`."""
  path = os.fspath(path)
  if os.path.isdir(path):
    found = [os.path.join(path, n) for n in sorted(os.listdir(path)) if n.endswith(".npz")]
    found = [f for f in found if _two_towers(f)]
    return found[0] if len(found) == 1 else None
  return path if path.endswith(".npz") else None


def detect(path: str | os.PathLike) -> bool:
  """Whether `path` is (or is a directory with exactly one) `.npz` with `img/` and `txt/` keys."""
  npz = _npz(path)
  return npz is not None and os.path.isfile(npz) and _two_towers(npz)


def _rename(key: str) -> str | None:
  """This library's key for big_vision's `key` (without `params/`), or None if unknown."""
  for theirs, ours, parts in _TOWERS:
    if key == theirs.rstrip("/") or key.startswith(theirs) and theirs.endswith("/"):
      rest = key[len(theirs) :]
      if parts is None:
        return ours + rest
      block, _, inner = rest.partition("/") if parts is _BLOCK else ("", "", rest)
      for part, mine in parts.items():
        if inner == part or inner.startswith(part + "/"):
          return ours + (f"{block}/" if block else "") + mine + inner[len(part) :]
      return None
  return None


def _variant(name: str | None, *, npz: str):
  """`(size name, patch, image side or None)` from `name=`, or None without one."""
  if name is None:
    return None
  match = _NAME.search(name)
  if match is None:
    raise common.PretrainedError(
      f"{npz}: name {name!r} gives no variant; use e.g. 'B/16', 'So400m/14' or big_vision's "
      f"'siglip_b16_224'."
    )
  size = match.group(1)  # as written first: "g" (giant) and "G" (gigantic) differ
  size = size if size in sizes.SIZES else {k.lower(): k for k in sizes.SIZES}[size.lower()]
  return size, int(match.group(2)), int(match.group(3)) if match.group(3) else None


def _dims(shapes: dict[str, tuple], tower: str, *, npz: str) -> dict[str, int]:
  """Width, depth, mlp_dim and num_heads of a tower's blocks (`transformer/encoderblock...`)."""
  base = f"{tower}/encoder/transformer/"
  scanned = f"{base}encoderblock/attn/query/kernel"
  if scanned in shapes:
    depth, width, heads, _ = shapes[scanned]
    mlp = shapes[f"{base}encoderblock/mlp/fc1/kernel"][-1]
  else:
    depth = len({k[len(base) :].split("/")[0] for k in shapes if k.startswith(base)})
    first = f"{base}encoderblock_0/attn/query/kernel"
    if depth == 0 or first not in shapes:
      bv = "img/Transformer" if tower == "image" else "txt/Encoder_0"
      raise common.PretrainedError(
        f"{npz}: no transformer blocks under {bv}/ "
        f"(encoderblock_0/... or a scanned encoderblock/...)."
      )
    width, heads, _ = shapes[first]
    mlp = shapes[f"{base}encoderblock_0/mlp/fc1/kernel"][-1]
  return dict(width=int(width), depth=int(depth), mlp_dim=int(mlp), num_heads=int(heads))


def model_config_from_shapes(
  shapes: dict[str, tuple], *, npz: str, name: str | None = None
) -> ml_collections.ConfigDict:
  """The model config of renamed big_vision params, from their shapes (and `name=`)."""
  for needed in (
    "image/encoder/embedding/kernel",
    "text/encoder/embedding/embedding",
    "text/head/kernel",
    "log_scale",
  ):
    if needed not in shapes:
      raise common.PretrainedError(
        f"{npz}: not a big_vision two-tower model: no {_bv_name(needed)}."
      )
  patch, _, channels, width = shapes["image/encoder/embedding/kernel"]
  image = dict(
    kind="vit",
    **_dims(shapes, "image", npz=npz),
    patch_size=int(patch),
    channels=int(channels),
    pre_norm=False,
    final_norm="pre_pool",
    patch_bias=True,
    act="gelu_tanh",
    norm_eps=1e-6,
    stem="patch",
  )
  variant = _variant(name, npz=npz)
  side = variant[2] if variant else None
  pos = shapes.get("image/encoder/pos_embedding")
  if pos is not None:
    grid = math.isqrt(pos[1])
    if grid * grid != pos[1]:
      raise common.PretrainedError(
        f"{npz}: img/pos_embedding has {pos[1]} rows, not a square grid of patches."
      )
    if side is not None and side // patch != grid:
      raise common.PretrainedError(
        f"{npz}: name {name!r} says image side {side}, but "
        f"img/pos_embedding holds {grid}x{grid} patches of {patch} "
        f"({grid * patch} px)."
      )
    if side is None:  # the side the checkpoints were trained at: a multiple of 32 (378 -> 384)
      sides = range(grid * patch, (grid + 1) * patch)
      side = next((s for s in sides if s % 32 == 0), grid * patch)
    image.update(posemb="learn")
  else:
    side = side or 224
    image.update(posemb="sincos2d")
  image["image_size"] = int(side)
  if side % patch:
    image["drop_remainder"] = True
  if variant is not None:
    size, want_patch, _ = variant
    if (sizes.SIZES[size].width, want_patch) != (image["width"], image["patch_size"]):
      raise common.PretrainedError(
        f"{npz}: name {name!r} is a {size}/{want_patch} (width {sizes.SIZES[size].width}), but "
        f"img/embedding/kernel has width {image['width']} and patch {image['patch_size']}."
      )
  if any(k.startswith("image/encoder/map/") for k in shapes):
    image["pool"] = "map"
  else:
    image["pool"] = "cls" if "image/encoder/cls" in shapes else "gap"
  image["proj"] = "image/head/kernel" in shapes
  image["proj_bias"] = "image/head/bias" in shapes
  vocab, _ = shapes["text/encoder/embedding/embedding"]
  max_len = shapes.get("text/encoder/pos_embedding", (1, 16, 0))[1]
  text = dict(
    kind="text",
    **_dims(shapes, "text", npz=npz),
    vocab_size=int(vocab),
    max_len=int(max_len),
    causal=False,
    pool="last",
    pad_id=None,
    final_norm="pre_pool",
    act="gelu_tanh",
    norm_eps=1e-6,
    proj_bias="text/head/bias" in shapes,
  )
  embed_dim = int(shapes["text/head/kernel"][-1])
  image_dim = shapes["image/head/kernel"][-1] if image["proj"] else image["width"]
  if image_dim != embed_dim:
    raise common.PretrainedError(
      f"{npz}: the image embedding is {image_dim} wide but txt/head projects to {embed_dim}."
    )
  siglip = "bias" in shapes
  return ml_collections.ConfigDict(
    dict(
      encoders=dict(image=image, text=text),
      embed_dim=embed_dim,
      convention="siglip" if siglip else "clip",
      max_scale=math.inf,
      **({} if siglip else dict(bias_init=None)),
      dtype="float32",
      remat="none",
      scan=False,
      locked=(),
    )
  )


def _bv_name(ours: str) -> str:
  """big_vision's key for this library's `ours` (the inverse of `_rename`), for messages."""
  for theirs, mine, parts in _TOWERS:
    if ours == mine.rstrip("/") or ours.startswith(mine) and mine.endswith("/"):
      rest = ours[len(mine) :]
      if parts is None:
        return theirs + rest
      block, _, inner = rest.partition("/") if parts is _BLOCK else ("", "", rest)
      for part, name in parts.items():
        if inner == name or inner.startswith(name + "/"):
          return theirs + (f"{block}/" if block else "") + part + inner[len(name) :]
  return ours


def _data(npz: str, model_config) -> ml_collections.ConfigDict:
  directory = os.path.dirname(os.path.abspath(npz))
  candidates = sorted(n for n in os.listdir(directory) if n.endswith(".model"))
  vocab = model_config.encoders.text.vocab_size
  # "big_vision:" reads a SentencePiece model as big_vision's SigLIP text op does.
  if len(candidates) == 1:
    tokenizer = "big_vision:" + os.path.join(directory, candidates[0])
  else:
    tokenizer = "big_vision:" + os.path.join(directory, "sentencepiece.model")
    logging.warning(
      "%s: %s beside it; the weights load, and data.make_tokenizer("
      "pre.data.tokenizer) fails naming it (%s). Put the SentencePiece model there "
      "(vocabulary %d: %s).",
      npz,
      "several tokenizer files" if candidates else "no tokenizer file",
      tokenizer,
      vocab,
      TOKENIZER_HINTS.get(vocab, "the one the model was trained with"),
    )
  return common.data_settings(
    tokenizer=tokenizer,
    max_len=model_config.encoders.text.max_len,
    image_size=model_config.encoders.image.image_size,
    mean=MEAN,
    std=STD,
    crop="squash",
    interpolation="bilinear",
  )


def load(path: str | os.PathLike, *, name: str | None = None) -> common.Pretrained:
  """Loads a big_vision two-tower `.npz` (see the module docstring).

  Args:
    path: the `.npz`, or a directory holding exactly one.
    name: the variant (`"B/16"`, `"siglip_so400m14_384"`, ...): checked against the shapes,
      and the image side where the position embedding is fixed.

  Raises:
    PretrainedError: a missing, truncated or foreign file, a key this mapping does not know, or
      shapes that disagree with each other or with `name`.
  """
  npz = _npz(path)
  if npz is None:
    raise common.PretrainedError(
      f"Expected a big_vision .npz (or a directory with one); found {common.describe(path)}."
    )
  weights = weights_lib.open_weights(npz)
  renamed, shapes = {}, {}
  for key in weights.keys():
    bare = key[len(PREFIX) :] if key.startswith(PREFIX) else key
    ours = _rename(bare)
    if ours is None:
      raise common.PretrainedError(
        f"{npz}: unknown key {key!r}; a big_vision two-tower model has img/..., txt/..., t and b."
      )
    renamed[ours], shapes[ours] = key, tuple(weights.shape(key))
  model_config = model_config_from_shapes(shapes, npz=npz, name=name)
  model = model_config_lib.make_model(model_config)
  abstract = jax.eval_shape(
    lambda: model.init(jax.random.key(0), model.dummy_batch(1), train=False)
  )
  expected = {
    k: tuple(v.shape)
    for k, v in flax.traverse_util.flatten_dict(
      flax.linen.unbox(abstract)["params"], sep="/"
    ).items()
  }
  flat = {ours: weights.pop(key) for ours, key in renamed.items()}
  # Scanned blocks (one `encoderblock`, layers on axis 0) become the unrolled layout.
  flat = flax.traverse_util.flatten_dict(
    layers.unstack_layers(flax.traverse_util.unflatten_dict(flat, sep="/")), sep="/"
  )
  if "text/encoder/pos_embedding" in flat:
    flat["text/encoder/pos_embedding"] = flat["text/encoder/pos_embedding"].reshape(
      flat["text/encoder/pos_embedding"].shape[-2:]
    )
  for key in ("log_scale", "bias"):
    if key in flat:
      flat[key] = flat[key].reshape(())
  missing = sorted(set(expected) - set(flat))
  if missing:
    raise common.PretrainedError(
      f"{npz}: no {_bv_name(missing[0])} ({len(missing)} keys "
      f"missing for the model its shapes describe)."
    )
  for key, shape in expected.items():
    if flat[key].shape != shape:
      raise common.PretrainedError(
        f"{npz}: {_bv_name(key)} has shape {flat[key].shape}; the other tensors imply {shape}."
      )
  params = flax.traverse_util.unflatten_dict(flat, sep="/")
  return common.Pretrained(
    model_config=model_config,
    params=params,
    data=_data(npz, model_config),
    family="big_vision",
    source=npz,
  )
