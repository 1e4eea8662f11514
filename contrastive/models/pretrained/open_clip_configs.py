"""open_clip's model configs both ways: its `model_cfg` dicts to model configs here, and back.

`named_config(name)` gives open_clip's `model_cfg` of a model name from a table copied from
open_clip's `model_configs/*.json` (`NAMES`); `model_config_from_open_clip` reads any
`model_cfg` (a hub `open_clip_config.json`'s) into a model config for `models.make_model`, and
`open_clip_config` writes one back. `TIMM_TRUNKS` sizes the timm trunks of open_clip's SigLIP
models. The tensor mapping lives in `open_clip.py`.
"""

from __future__ import annotations

import math
from typing import Any

import ml_collections
import numpy as np

from contrastive.models.pretrained import common

CONFIG = "open_clip_config.json"

# The tables below stay one entry a line, as tables read.
# fmt: off
# timm trunks of open_clip's SigLIP models, measured from timm 1.0 (`timm.create_model`):
# name: (width, depth, mlp_dim, num_heads, patch_size, image_size, act). All have no class token,
# a MAP head, patch bias, no pre-norm and LayerNorm eps 1e-6. Add an entry for another trunk of
# that kind.
TIMM_TRUNKS: dict[str, tuple[int, int, int, int, int, int, str]] = {
    "vit_base_patch16_siglip_224": (768, 12, 3072, 12, 16, 224, "gelu"),
    "vit_base_patch16_siglip_256": (768, 12, 3072, 12, 16, 256, "gelu"),
    "vit_base_patch16_siglip_384": (768, 12, 3072, 12, 16, 384, "gelu"),
    "vit_base_patch16_siglip_512": (768, 12, 3072, 12, 16, 512, "gelu"),
    "vit_base_patch32_siglip_256": (768, 12, 3072, 12, 32, 256, "gelu_tanh"),
    "vit_large_patch16_siglip_256": (1024, 24, 4096, 16, 16, 256, "gelu"),
    "vit_large_patch16_siglip_384": (1024, 24, 4096, 16, 16, 384, "gelu"),
    "vit_large_patch16_siglip_512": (1024, 24, 4096, 16, 16, 512, "gelu_tanh"),
    "vit_so400m_patch14_siglip_224": (1152, 27, 4304, 16, 14, 224, "gelu"),
    "vit_so400m_patch14_siglip_378": (1152, 27, 4304, 16, 14, 378, "gelu"),
    "vit_so400m_patch14_siglip_384": (1152, 27, 4304, 16, 14, 384, "gelu"),
    "vit_so400m_patch16_siglip_256": (1152, 27, 4304, 16, 16, 256, "gelu_tanh"),
    "vit_so400m_patch16_siglip_384": (1152, 27, 4304, 16, 16, 384, "gelu_tanh"),
    "vit_so400m_patch16_siglip_512": (1152, 27, 4304, 16, 16, 512, "gelu_tanh"),
    "vit_giantopt_patch16_siglip_256": (1536, 40, 6144, 16, 16, 256, "gelu_tanh"),
    "vit_giantopt_patch16_siglip_384": (1536, 40, 6144, 16, 16, 384, "gelu_tanh"),
}

# open_clip's model_configs/*.json, copied. CLIP: name: (embed_dim, image_size, layers, width,
# head_width, mlp_ratio, patch_size, text width, text heads, text layers); context 77, vocabulary
# 49,408, text mlp_ratio 4. `-quickgelu` names are the same with QuickGELU.
_CLIP = {
    "ViT-S-32": (384, 224, 12, 384, 64, 4.0, 32, 384, 6, 12),
    "ViT-S-16": (384, 224, 12, 384, 64, 4.0, 16, 384, 6, 12),
    "ViT-M-32": (512, 224, 12, 512, 64, 4.0, 32, 512, 8, 12),
    "ViT-M-16": (512, 224, 12, 512, 64, 4.0, 16, 512, 8, 12),
    "ViT-B-32": (512, 224, 12, 768, 64, 4.0, 32, 512, 8, 12),
    "ViT-B-32-256": (512, 256, 12, 768, 64, 4.0, 32, 512, 8, 12),
    "ViT-B-32-plus-256": (640, 256, 12, 896, 64, 4.0, 32, 640, 10, 12),
    "ViT-B-16": (512, 224, 12, 768, 64, 4.0, 16, 512, 8, 12),
    "ViT-B-16-plus": (640, 224, 12, 896, 64, 4.0, 16, 640, 10, 12),
    "ViT-B-16-plus-240": (640, 240, 12, 896, 64, 4.0, 16, 640, 10, 12),
    "ViT-L-14": (768, 224, 24, 1024, 64, 4.0, 14, 768, 12, 12),
    "ViT-L-14-280": (768, 280, 24, 1024, 64, 4.0, 14, 768, 12, 12),
    "ViT-L-14-336": (768, 336, 24, 1024, 64, 4.0, 14, 768, 12, 12),
    "ViT-L-16": (768, 224, 24, 1024, 64, 4.0, 16, 768, 12, 12),
    "ViT-L-16-320": (768, 320, 24, 1024, 64, 4.0, 16, 768, 12, 12),
    "ViT-H-14": (1024, 224, 32, 1280, 80, 4.0, 14, 1024, 16, 24),
    "ViT-H-14-378": (1024, 378, 32, 1280, 80, 4.0, 14, 1024, 16, 24),
    "ViT-H-16": (1024, 224, 32, 1280, 80, 4.0, 16, 1024, 16, 24),
    "ViT-g-14": (1024, 224, 40, 1408, 88, 4.3637, 14, 1024, 16, 24),
    "ViT-bigG-14": (1280, 224, 48, 1664, 104, 4.9231, 14, 1280, 20, 32),
    "ViT-e-14": (1280, 224, 56, 1792, 112, 8.5715, 14, 1280, 20, 36),
}
_QUICKGELU = ("ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-L-14-336", "ViT-H-14", "ViT-H-14-378",
              "ViT-bigG-14")
# SigLIP: name: (embed_dim, timm trunk, context, vocabulary, text width, heads, layers,
# mlp_ratio, hf_tokenizer_name, SigLIP 2 (tanh GELU in the text tower), text projection).
_SIGLIP = {
    "ViT-B-16-SigLIP": (768, "vit_base_patch16_siglip_224", 64, 32000, 768, 12, 12, 4.0,
                        "timm/ViT-B-16-SigLIP", False, True),
    "ViT-B-16-SigLIP-256": (768, "vit_base_patch16_siglip_256", 64, 32000, 768, 12, 12, 4.0,
                            "timm/ViT-B-16-SigLIP", False, True),
    "ViT-B-16-SigLIP-384": (768, "vit_base_patch16_siglip_384", 64, 32000, 768, 12, 12, 4.0,
                            "timm/ViT-B-16-SigLIP", False, True),
    "ViT-B-16-SigLIP-512": (768, "vit_base_patch16_siglip_512", 64, 32000, 768, 12, 12, 4.0,
                            "timm/ViT-B-16-SigLIP", False, True),
    "ViT-B-16-SigLIP-i18n-256": (768, "vit_base_patch16_siglip_256", 64, 250000, 768, 12, 12,
                                 4.0, "timm/ViT-B-16-SigLIP-i18n-256", False, True),
    "ViT-L-16-SigLIP-256": (1024, "vit_large_patch16_siglip_256", 64, 32000, 1024, 16, 24, 4.0,
                            "timm/ViT-B-16-SigLIP", False, True),
    "ViT-L-16-SigLIP-384": (1024, "vit_large_patch16_siglip_384", 64, 32000, 1024, 16, 24, 4.0,
                            "timm/ViT-B-16-SigLIP", False, True),
    "ViT-SO400M-14-SigLIP": (1152, "vit_so400m_patch14_siglip_224", 16, 32000, 1152, 16, 27,
                             3.7362, "timm/ViT-B-16-SigLIP", False, True),
    "ViT-SO400M-14-SigLIP-378": (1152, "vit_so400m_patch14_siglip_378", 64, 32000, 1152, 16, 27,
                                 3.7362, "timm/ViT-B-16-SigLIP", False, True),
    "ViT-SO400M-14-SigLIP-384": (1152, "vit_so400m_patch14_siglip_384", 64, 32000, 1152, 16, 27,
                                 3.7362, "timm/ViT-B-16-SigLIP", False, True),
    "ViT-SO400M-16-SigLIP-i18n-256": (1152, "vit_so400m_patch16_siglip_256", 64, 250000, 1152,
                                      16, 27, 3.7362, "timm/ViT-B-16-SigLIP-i18n-256", False,
                                      False),
    **{f"ViT-{size}-{patch}-SigLIP2{res}": (
        embed, trunk, 64, 256000, width, heads, layers, ratio,
        f"timm/ViT-{size}-{patch}-SigLIP2{res}", True, True)
       for size, patch, res, embed, trunk, width, heads, layers, ratio in (
           ("B", 16, "", 768, "vit_base_patch16_siglip_224", 768, 12, 12, 4.0),
           ("B", 16, "-256", 768, "vit_base_patch16_siglip_256", 768, 12, 12, 4.0),
           ("B", 16, "-384", 768, "vit_base_patch16_siglip_384", 768, 12, 12, 4.0),
           ("B", 16, "-512", 768, "vit_base_patch16_siglip_512", 768, 12, 12, 4.0),
           ("B", 32, "-256", 768, "vit_base_patch32_siglip_256", 768, 12, 12, 4.0),
           ("L", 16, "-256", 1024, "vit_large_patch16_siglip_256", 1024, 16, 24, 4.0),
           ("L", 16, "-384", 1024, "vit_large_patch16_siglip_384", 1024, 16, 24, 4.0),
           ("L", 16, "-512", 1024, "vit_large_patch16_siglip_512", 1024, 16, 24, 4.0),
           ("SO400M", 14, "", 1152, "vit_so400m_patch14_siglip_224", 1152, 16, 27, 3.7362),
           ("SO400M", 14, "-378", 1152, "vit_so400m_patch14_siglip_378", 1152, 16, 27, 3.7362),
           ("SO400M", 16, "-256", 1152, "vit_so400m_patch16_siglip_256", 1152, 16, 27, 3.7362),
           ("SO400M", 16, "-384", 1152, "vit_so400m_patch16_siglip_384", 1152, 16, 27, 3.7362),
           ("SO400M", 16, "-512", 1152, "vit_so400m_patch16_siglip_512", 1152, 16, 27, 3.7362),
           ("gopt", 16, "-256", 1536, "vit_giantopt_patch16_siglip_256", 1152, 16, 27, 3.7362),
           ("gopt", 16, "-384", 1536, "vit_giantopt_patch16_siglip_384", 1152, 16, 27, 3.7362))},
}
# fmt: on


def named_config(name: str) -> dict[str, Any]:
  """open_clip's `model_cfg` of a model name (`NAMES`), as its model_configs JSON has it."""
  base = name[: -len("-quickgelu")] if name.endswith("-quickgelu") else name
  if base in _CLIP and (base == name or base in _QUICKGELU):
    embed, size, layers, width, head_width, ratio, patch, t_width, t_heads, t_layers = _CLIP[base]
    cfg = dict(
      embed_dim=embed,
      vision_cfg=dict(
        image_size=size,
        layers=layers,
        width=width,
        head_width=head_width,
        mlp_ratio=ratio,
        patch_size=patch,
      ),
      text_cfg=dict(
        context_length=77, vocab_size=49408, width=t_width, heads=t_heads, layers=t_layers
      ),
    )
    return dict(cfg, quick_gelu=True) if base != name else cfg
  if name in _SIGLIP:
    embed, trunk, ctx, vocab, width, heads, layers, ratio, tokenizer, v2, proj = _SIGLIP[name]
    text = dict(
      context_length=ctx,
      vocab_size=vocab,
      hf_tokenizer_name=tokenizer,
      tokenizer_kwargs=dict(clean="canonicalize"),
      width=width,
      heads=heads,
      layers=layers,
      mlp_ratio=ratio,
      no_causal_mask=True,
      pool_type="last",
      norm_kwargs=dict(eps=1e-6),
      **(dict(proj_bias=True) if proj else dict(proj_type="none")),
    )
    if v2:
      text["act_kwargs"] = dict(approximate="tanh")
    return dict(
      embed_dim=embed,
      init_logit_bias=-10,
      custom_text=True,
      text_cfg=text,
      vision_cfg=dict(
        image_size=TIMM_TRUNKS[trunk][5],
        timm_model_name=trunk,
        timm_model_pretrained=False,
        timm_pool="map",
        timm_proj="none",
      ),
    )
  raise common.PretrainedError(f"Unknown open_clip model name {name!r}; known: {NAMES}.")


NAMES = tuple(sorted([*_CLIP, *(f"{n}-quickgelu" for n in _QUICKGELU), *_SIGLIP]))


# ---------------------------------------------------------------------------------- configs


def _refuse(source: str, what: str) -> common.PretrainedError:
  return common.PretrainedError(
    f"{source}: {what} is not supported (see "
    f"contrastive/models/pretrained/open_clip.py for what loads)."
  )


_UNSUPPORTED = dict(
  ls_init_value=None,
  attentional_pool=False,
  embed_cls=False,
  block_type=None,
  qk_norm=False,
  scaled_cosine_attn=False,
  scale_heads=False,
  scale_attn_inner=False,
  scale_attn=False,
  scale_fc=False,
  pos_embed_type="learnable",
  hf_model_name=None,
)


def _check_supported(cfg: dict[str, Any], source: str, tower: str) -> None:
  for key, default in _UNSUPPORTED.items():
    if cfg.get(key, default) not in (default, "default"):
      raise _refuse(source, f"the {tower} tower's {key}={cfg[key]!r}")


def _act(top: dict[str, Any], cfg: dict[str, Any]) -> str:
  if top.get("quick_gelu"):
    return "quick_gelu"
  return "gelu_tanh" if (cfg.get("act_kwargs") or {}).get("approximate") == "tanh" else "gelu"


def _vision(top: dict[str, Any], v: dict[str, Any], source: str) -> dict[str, Any]:
  if v.get("timm_model_name"):
    name = v["timm_model_name"]
    if name not in TIMM_TRUNKS:
      raise _refuse(source, f"timm image tower {name!r} (known: {sorted(TIMM_TRUNKS)})")
    if v.get("timm_pool", "avg") != "map" or v.get("timm_proj", "linear") not in ("none", "linear"):
      raise _refuse(
        source,
        f"timm pool {v.get('timm_pool')!r} with proj {v.get('timm_proj')!r} "
        f"(SigLIP trunks: pool 'map', proj 'none' or 'linear')",
      )
    width, depth, mlp_dim, heads, patch, size, act = TIMM_TRUNKS[name]
    proj = v.get("timm_proj") == "linear"
    # A side that is no multiple of the patch loses its remainder, as timm's conv does.
    remainder = dict(drop_remainder=True) if size % patch else {}
    return dict(
      kind="vit",
      width=width,
      depth=depth,
      mlp_dim=mlp_dim,
      num_heads=heads,
      patch_size=patch,
      image_size=size,
      pool="map",
      pre_norm=False,
      patch_bias=True,
      act=act,
      norm_eps=1e-6,
      final_norm="pre_pool",
      proj=proj,
      proj_bias=proj and bool(v.get("timm_proj_bias", False)),
      **remainder,
    )
  _check_supported(v, source, "image")
  layers = v.get("layers", 12)
  if not isinstance(layers, int):
    raise _refuse(source, f"a ModifiedResNet image tower (layers={layers})")
  if v.get("pool_type", "tok") != "tok":
    raise _refuse(source, f"image pool_type {v['pool_type']!r}")
  width = int(v.get("width", 768))
  head_width = int(v.get("head_width", 64))
  size = v.get("image_size", 224)
  patch = int(v.get("patch_size", 16))
  sides = (size,) if isinstance(size, int) else tuple(size)
  remainder = dict(drop_remainder=True) if any(side % patch for side in sides) else {}
  return dict(
    kind="vit",
    width=width,
    depth=layers,
    mlp_dim=int(width * v.get("mlp_ratio", 4.0)),
    num_heads=width // head_width,
    patch_size=patch,
    image_size=size if isinstance(size, int) else tuple(size),
    pool="cls",
    cls_posemb=True,
    pre_norm=not v.get("no_ln_pre", False),
    patch_bias=False,
    act=_act(top, v),
    norm_eps=float((v.get("norm_kwargs") or {}).get("eps", 1e-5)),
    final_norm="pre_pool",
    proj_bias=False,
    **remainder,
  )


def _text(top: dict[str, Any], t: dict[str, Any], source: str) -> dict[str, Any]:
  _check_supported(t, source, "text")
  pool = t.get("pool_type", "argmax")
  pools = dict(
    argmax=dict(pool="eot"),
    last=dict(pool="last"),
    eos=dict(pool="eos", eos_id=int(t.get("eos_id", 2))),
  )
  if pool not in pools:
    raise _refuse(source, f"text pool_type {pool!r}")
  width = int(t.get("width", 512))
  proj = t.get("proj_type", "linear") != "none"
  return dict(
    kind="text",
    width=width,
    depth=int(t.get("layers", 12)),
    mlp_dim=int(width * t.get("mlp_ratio", 4.0)),
    num_heads=int(t.get("heads", 8)),
    vocab_size=int(t.get("vocab_size", 49408)),
    max_len=int(t.get("context_length", 77)),
    causal=not t.get("no_causal_mask", False),
    pad_id=None,
    final_norm="pre_pool",
    act=_act(top, t),
    norm_eps=float((t.get("norm_kwargs") or {}).get("eps", 1e-5)),
    proj=proj,
    proj_bias=proj and bool(t.get("proj_bias", False)),
    **pools[pool],
  )


def model_config_from_open_clip(
  cfg: dict[str, Any], *, source: str = CONFIG
) -> ml_collections.ConfigDict:
  """This library's model config of an open_clip `model_cfg` (a dict).

  Raises:
    PretrainedError: an architecture this library's encoders do not cover; the message names
      `source` and the option.
  """
  known = {
    "embed_dim",
    "vision_cfg",
    "text_cfg",
    "quick_gelu",
    "custom_text",
    "init_logit_scale",
    "init_logit_bias",
    "nonscalar_logit_scale",
    "output_dict",
    "cast_dtype",
  }
  extra = sorted(set(cfg) - known)
  if extra:
    raise _refuse(
      source,
      f"model_cfg key {extra[0]!r}" + (" (a CoCa model)" if extra[0] == "multimodal_cfg" else ""),
    )
  if "embed_dim" not in cfg or "vision_cfg" not in cfg or "text_cfg" not in cfg:
    raise common.PretrainedError(
      f"{source}: an open_clip model_cfg needs embed_dim, vision_cfg "
      f"and text_cfg; found keys {sorted(cfg)}."
    )
  image = _vision(cfg, cfg["vision_cfg"], source)
  text = _text(cfg, cfg["text_cfg"], source)
  siglip = cfg.get("init_logit_bias") is not None
  return ml_collections.ConfigDict(
    dict(
      encoders=dict(image=image, text=text),
      embed_dim=int(cfg["embed_dim"]),
      convention="siglip" if siglip else "clip",
      max_scale=math.inf,
      dtype="float32",
      remat="none",
      scan=False,
      locked=(),
    )
  )


def _ratio(mlp_dim: int, width: int) -> float:
  """An `mlp_ratio` for which open_clip's `int(width * mlp_ratio)` gives back `mlp_dim` (the
  4-digit ratios of its configs where one works: 4304 / 1152 is 3.7362)."""
  exact = mlp_dim / width
  candidates = [round(exact, 4), math.ceil(exact * 1e4) / 1e4, exact]
  for _ in range(4):
    candidates.append(float(np.nextafter(candidates[-1], np.inf)))
  for ratio in candidates:
    if int(width * ratio) == mlp_dim:
      return ratio
  raise common.PretrainedError(f"No mlp_ratio gives mlp_dim {mlp_dim} at width {width}.")


def _timm_name(image: dict[str, Any], path: str) -> str:
  key = (
    image["width"],
    image["depth"],
    image["mlp_dim"],
    image["num_heads"],
    image["patch_size"],
    image["image_size"],
    image["act"],
  )
  for name, entry in TIMM_TRUNKS.items():
    if entry == key:
      return name
  raise common.PretrainedError(
    f"{path}: open_clip has no timm SigLIP trunk of (width, depth, mlp_dim, num_heads, patch, "
    f"image_size, act) {key}; add it to open_clip.TIMM_TRUNKS if timm has one."
  )


def encoder_dims(encoder: dict[str, Any]) -> dict[str, int]:
  from contrastive.models import config as config_lib

  module = config_lib.make_encoder(encoder)
  return dict(module.dims, **({"image_size": module.image_hw} if encoder["kind"] == "vit" else {}))


def open_clip_config(model_config: Any, path: str = "") -> dict[str, Any]:
  """The open_clip `model_cfg` of a model config this layout can hold (the inverse mapping).

  Raises:
    PretrainedError: a model open_clip cannot build (other modalities, a ViT patch bias with
      class-token pooling, a text tower that masks padding bidirectionally, ...).
  """
  config = model_config.to_dict() if hasattr(model_config, "to_dict") else dict(model_config)
  encoders = config.get("encoders", {})
  if set(encoders) != {"image", "text"}:
    raise common.PretrainedError(
      f"{path}: open_clip holds an image and a text tower; the model has {sorted(encoders)}."
    )
  image, text = dict(encoders["image"]), dict(encoders["text"])
  if image.get("kind") != "vit" or text.get("kind") != "text":
    raise common.PretrainedError(
      f"{path}: open_clip needs a 'vit' image and a 'text' text "
      f"encoder, got {image.get('kind')!r} and {text.get('kind')!r}."
    )
  image.update(encoder_dims(image))
  h, w = image["image_size"]
  image["image_size"] = h if h == w else [h, w]
  text.update(encoder_dims(text))
  get = lambda enc, key, default: enc.get(key, default) if enc.get(key) is not None else default
  acts = {get(image, "act", "gelu"), get(text, "act", "gelu")}
  top = dict(embed_dim=int(config["embed_dim"]))
  if get(image, "pool", "cls") == "map":
    if (
      get(image, "posemb", "learn") != "learn"
      or get(image, "pre_norm", False)
      or not get(image, "patch_bias", True)
      or get(image, "norm_eps", 1e-6) != 1e-6
      or get(image, "final_norm", "pre_pool") != "pre_pool"
    ):
      raise common.PretrainedError(
        f"{path}: a MAP-pooled ViT maps onto a timm SigLIP trunk, "
        f"which has a patch bias, no pre-norm, eps 1e-6."
      )
    image["act"] = get(image, "act", "gelu")
    proj = get(image, "proj", True)
    vision = dict(
      image_size=image["image_size"],
      timm_model_name=_timm_name(image, path),
      timm_model_pretrained=False,
      timm_pool="map",
      timm_proj="linear" if proj else "none",
    )
    if proj and get(image, "proj_bias", False):
      vision["timm_proj_bias"] = True
    top["custom_text"] = True
    acts = {get(text, "act", "gelu")}
  elif get(image, "pool", "cls") == "cls":
    if (
      get(image, "patch_bias", True)
      or get(image, "posemb", "learn") != "learn"
      or get(image, "stem", "patch") != "patch"
      or get(image, "proj_bias", False)
      or not get(image, "proj", True)
      or get(image, "final_norm", "pre_pool") == "none"
    ):
      raise common.PretrainedError(
        f"{path}: a class-token ViT maps onto open_clip's VisionTransformer only with "
        f"patch_bias=False, learned position embeddings, a patch stem, a final norm and a "
        f"head without bias."
      )
    vision = dict(
      image_size=image["image_size"],
      layers=image["depth"],
      width=image["width"],
      head_width=image["width"] // image["num_heads"],
      mlp_ratio=_ratio(image["mlp_dim"], image["width"]),
      patch_size=image["patch_size"],
    )
    if not get(image, "pre_norm", False):
      vision["no_ln_pre"] = True
    if get(image, "norm_eps", 1e-6) != 1e-5:
      vision["norm_kwargs"] = dict(eps=get(image, "norm_eps", 1e-6))
    if get(image, "act", "gelu") == "gelu_tanh":
      vision["act_kwargs"] = dict(approximate="tanh")
  else:
    raise common.PretrainedError(
      f"{path}: open_clip's ViT pools by class token, a SigLIP trunk "
      f"by MAP; got pool {image.get('pool')!r}."
    )
  if "quick_gelu" in acts:
    if len(acts) > 1:
      raise common.PretrainedError(
        f"{path}: open_clip's quick_gelu applies to both towers; the towers use {sorted(acts)}."
      )
    top["quick_gelu"] = True
  causal, pool = get(text, "causal", True), get(text, "pool", "last")
  pad_id = text.get("pad_id", 0)
  pools = dict(eot="argmax", last="last", eos="eos")
  if pool not in pools or (pad_id is not None and not causal) or (pool == "last" and causal):
    raise common.PretrainedError(
      f"{path}: open_clip's text tower pools a causal tower at the argmax or eos id, or a "
      f"bidirectional one at the last position without padding mask (pad_id=None); got "
      f"causal={causal}, pool={pool!r}, pad_id={pad_id!r}."
    )
  t = dict(
    context_length=text["max_len"],
    vocab_size=text["vocab_size"],
    width=text["width"],
    heads=text["num_heads"],
    layers=text["depth"],
    mlp_ratio=_ratio(text["mlp_dim"], text["width"]),
  )
  if pool != "eot":
    t["pool_type"] = pools[pool]
  if pool == "eos":
    t["eos_id"] = text["eos_id"]
  if not causal:
    t["no_causal_mask"] = True
  if not get(text, "proj", True):
    t["proj_type"] = "none"
  elif get(text, "proj_bias", False):
    t["proj_bias"] = True
  if get(text, "norm_eps", 1e-6) != 1e-5:
    t["norm_kwargs"] = dict(eps=get(text, "norm_eps", 1e-6))
  if get(text, "act", "gelu") == "gelu_tanh":
    t["act_kwargs"] = dict(approximate="tanh")
  if config.get("bias_init") is not None or config.get("convention") == "siglip":
    top["init_logit_bias"] = float(config.get("bias_init") or -10.0)
  return dict(top, vision_cfg=vision, text_cfg=t)
