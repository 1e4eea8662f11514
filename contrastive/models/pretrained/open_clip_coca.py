"""open_clip's CoCa checkpoints: configs both ways and the tensor mapping onto `models.CoCa`.

An open_clip CoCa `model_cfg` has `vision_cfg` with `attentional_pool: true`, `text_cfg` with
`embed_cls: true` and a `multimodal_cfg` (the decoder); `custom_text` is true. Its state_dict,
and where each tensor goes here (`contrastive/models/coca.py`, `decoder.py`):

| open_clip                                        | here                                 |
| ------------------------------------------------ | ------------------------------------ |
| `visual.{conv1, class_embedding, ln_pre, ...}`   | `image/encoder` (`final_norm="none"`) |
| `visual.attn_pool.{query, ln_q, ln_k}`           | `image/pool/{query, norm_q, norm_k}` |
| `visual.attn_pool.attn.{q,k,v}_proj_weight` [1]  | `image/pool/attn/{query,key,value}`  |
| `visual.ln_post`, `visual.proj` `[e, e]`         | `image/norm`, `image/head/kernel`    |
| `text.{token_embedding, positional_embedding}`   | `text/encoder/{embedding, pos_embedding}` |
| `text.{cls_emb, transformer, ln_final}`          | `text/encoder/{cls, transformer, norm}` |
| `text.text_projection` `[w, e]`                  | `text/head/kernel`                   |
| `text_decoder.resblocks.{i}`                     | `decoder/layer_{i}/self`             |
| `text_decoder.cross_attn.{i}` (`ln_1_kv`)        | `decoder/layer_{i}/cross` (`norm_kv`) |
| `text_decoder.{ln_final, text_projection}`       | `decoder/{norm, head/kernel}` (`[w, vocab]`) |
| `logit_scale` (`logit_bias`)                     | `log_scale` (`bias`)                 |

[1] `[e, d]` each, `d` the ViT's width; one `in_proj_weight` `[3e, e]` where `d == e`. The text
position table has `L + 1` rows, the last the class token's.

What open_clip's code does, and the config here follows: the image pooler has
`attn_pooler_queries` queries (the first the embedding, the rest the decoder's image tokens) and
`attn_pooler_heads` heads, with LayerNorm epsilon 1e-5; the decoder's MLP is 4 times its width
whatever `multimodal_cfg.mlp_ratio` says, its vocabulary is `text_cfg.vocab_size`, its LayerNorm
epsilon 1e-5, its activation GELU (QuickGELU with `quick_gelu`); the text tower's padding mask is
open_clip's legacy one (`correct_cls_mask=False`). Refused with the reason: an HF text tower
(`coca_roberta-ViT-B-32`), the `parallel`/`cascade` poolers, LayerScale, a bidirectional text
tower, a projection with bias, other LayerNorm epsilons in the image tower.
"""

from __future__ import annotations

import math
from typing import Any

import ml_collections

from contrastive.models.pretrained import common
from contrastive.models.pretrained import open_clip_rules as r
from contrastive.models.pretrained.open_clip_configs import CONFIG
from contrastive.models.pretrained.open_clip_configs import _act
from contrastive.models.pretrained.open_clip_configs import _check_supported
from contrastive.models.pretrained.open_clip_configs import _ratio
from contrastive.models.pretrained.open_clip_configs import _refuse
from contrastive.models.pretrained.open_clip_configs import _vision

# open_clip's model_configs/coca_ViT-B-32.json and coca_ViT-L-14.json, copied: name: (embed_dim,
# ViT layers, width, patch, text/decoder width, heads, layers, the image pooler's heads,
# multimodal_cfg's attn_pooler_heads (unused by open_clip)); image 224, context 76, vocabulary
# 49,408. (coca_ViT-L-14's image pooler has 8 heads; its multimodal_cfg says 12.)
_COCA = {
  "coca_ViT-B-32": (512, 12, 768, 32, 512, 8, 12, 8, 8),
  "coca_ViT-L-14": (768, 24, 1024, 14, 768, 12, 12, 8, 12),
}
NAMES = tuple(sorted(_COCA))
_VISION_KEYS = ("attentional_pool", "attn_pooler_queries", "attn_pooler_heads", "output_tokens")
_TOP_KEYS = (
  "embed_dim",
  "vision_cfg",
  "text_cfg",
  "multimodal_cfg",
  "quick_gelu",
  "custom_text",
  "init_logit_scale",
  "init_logit_bias",
  "nonscalar_logit_scale",
  "cast_dtype",
  "pad_id",
)


def named_config(name: str) -> dict[str, Any]:
  """open_clip's `model_cfg` of a CoCa model name (`NAMES`), as its model_configs JSON has it."""
  embed, layers, width, patch, t_width, heads, t_layers, pool_heads, mm_heads = _COCA[name]
  text = dict(context_length=76, vocab_size=49408, width=t_width, heads=heads, layers=t_layers)
  return dict(
    embed_dim=embed,
    vision_cfg=dict(
      image_size=224,
      layers=layers,
      width=width,
      patch_size=patch,
      attentional_pool=True,
      attn_pooler_heads=pool_heads,
      output_tokens=True,
    ),
    text_cfg=dict(text, embed_cls=True, output_tokens=True),
    multimodal_cfg=dict(text, attn_pooler_heads=mm_heads),
    custom_text=True,
  )


def is_coca(model_config: Any) -> bool:
  """Whether a model config has a captioning decoder (a CoCa)."""
  config = model_config.to_dict() if hasattr(model_config, "to_dict") else dict(model_config)
  return config.get("decoder") is not None


# ------------------------------------------------------------------------ open_clip -> here


def _coca_vision(top: dict[str, Any], v: dict[str, Any], source: str) -> dict[str, Any]:
  pool = v.get("attentional_pool", False)
  if pool is not True:
    raise _refuse(source, f"a CoCa image tower with attentional_pool={pool!r} (CoCa: true)")
  if v.get("timm_model_name"):
    raise _refuse(source, f"a CoCa image tower from timm ({v['timm_model_name']!r})")
  if v.get("pool_type", "tok") != "tok":
    raise _refuse(source, f"a CoCa image pool_type {v['pool_type']!r} (CoCa: 'tok')")
  eps = float((v.get("norm_kwargs") or {}).get("eps", 1e-5))
  if eps != 1e-5:
    raise _refuse(source, f"a CoCa image LayerNorm eps {eps} (the pooler's is 1e-5)")
  rest = {k: x for k, x in v.items() if k not in (*_VISION_KEYS, "final_ln_after_pool")}
  return dict(_vision(top, rest, source), final_norm="none")


def _coca_text(top: dict[str, Any], t: dict[str, Any], source: str) -> dict[str, Any]:
  if t.get("hf_model_name"):
    raise _refuse(source, f"a CoCa Hugging Face text tower ({t['hf_model_name']!r})")
  if not t.get("embed_cls", False):
    raise _refuse(source, "a CoCa text tower without embed_cls")
  if t.get("no_causal_mask", False):
    raise _refuse(source, "a bidirectional CoCa text tower (no_causal_mask)")
  if t.get("proj_type", "linear") != "linear" or t.get("proj_bias", False):
    raise _refuse(source, "a CoCa text projection other than a bias-free matrix")
  _check_supported({k: x for k, x in t.items() if k != "embed_cls"}, source, "text")
  width = int(t.get("width", 512))
  return dict(
    kind="coca_text",
    width=width,
    depth=int(t.get("layers", 12)),
    mlp_dim=int(width * t.get("mlp_ratio", 4.0)),
    num_heads=int(t.get("heads", 8)),
    vocab_size=int(t.get("vocab_size", 49408)),
    max_len=int(t.get("context_length", 77)),
    pad_id=int(t.get("pad_id", 0)),
    act=_act(top, t),
    norm_eps=float((t.get("norm_kwargs") or {}).get("eps", 1e-5)),
  )


def model_config(cfg: dict[str, Any], *, source: str = CONFIG) -> ml_collections.ConfigDict:
  """This library's CoCa model config of an open_clip CoCa `model_cfg` (a dict).

  Raises:
    PretrainedError: an architecture `models.CoCa` does not cover; the message names `source`
      and the option.
  """
  extra = sorted(set(cfg) - set(_TOP_KEYS))
  if extra:
    raise _refuse(source, f"CoCa model_cfg key {extra[0]!r}")
  missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg", "multimodal_cfg") if k not in cfg]
  if missing:
    raise common.PretrainedError(
      f"{source}: an open_clip CoCa model_cfg needs embed_dim, vision_cfg, text_cfg and "
      f"multimodal_cfg; {missing[0]!r} is missing."
    )
  v, m = cfg["vision_cfg"], cfg["multimodal_cfg"]
  if m.get("ls_init_value") is not None:
    raise _refuse(source, f"the decoder's ls_init_value={m['ls_init_value']!r}")
  image, text = _coca_vision(cfg, v, source), _coca_text(cfg, cfg["text_cfg"], source)
  width = int(m.get("width", 512))
  decoder = dict(
    width=width,
    depth=int(m.get("layers", 12)),
    mlp_dim=4 * width,  # open_clip builds the decoder without its mlp_ratio
    num_heads=int(m.get("heads", 8)),
    vocab_size=text["vocab_size"],  # the decoder's output is the text tower's vocabulary
    max_len=int(m.get("context_length", 77)),
    act="quick_gelu" if cfg.get("quick_gelu") else "gelu",
    norm_eps=1e-5,
    pool_queries=int(v.get("attn_pooler_queries", 256)),
    pool_heads=int(v.get("attn_pooler_heads", 8)),
  )
  siglip = cfg.get("init_logit_bias") is not None
  return ml_collections.ConfigDict(
    dict(
      encoders=dict(image=image, text=text),
      decoder=decoder,
      embed_dim=int(cfg["embed_dim"]),
      convention="siglip" if siglip else "clip",
      max_scale=math.inf,
      dtype="float32",
      remat="none",
      scan=False,
      locked=(),
    )
  )


# ------------------------------------------------------------------------ here -> open_clip


def _one_activation(image: str, text: str, decoder: str) -> bool:
  """Whether open_clip can build these activations: `quick_gelu` sets all three."""
  if decoder == "quick_gelu":
    return image == text == "quick_gelu"
  return decoder == "gelu" and {image, text} <= {"gelu", "gelu_tanh"}


def open_clip_config(model_config: Any, path: str = "") -> dict[str, Any]:
  """The open_clip CoCa `model_cfg` of a CoCa model config (the inverse of `model_config`).

  Raises:
    PretrainedError: a CoCa that open_clip's `CoCa` cannot build (see the module docstring).
  """
  from contrastive.models import config as config_lib

  config = model_config.to_dict() if hasattr(model_config, "to_dict") else dict(model_config)
  model = config_lib.make_model(config)
  vit, text, dec = model.image_encoder, model.text_encoder, model.decoder
  if not hasattr(vit, "image_hw"):
    raise common.PretrainedError(f"{path}: open_clip's CoCa has a ViT image tower.")
  vd, td, dd = vit.dims, text.dims, dec.dims
  problems = [
    (vit.pool != "cls" or not vit.cls_posemb, "a ViT with pool 'cls' and cls_posemb"),
    (vit.patch_bias or vit.stem != "patch", "a patch stem without bias"),
    (
      vit.posemb != "learn" or vit.final_norm != "none",
      "learned position embeddings and no final ViT LayerNorm (the pooler's come after)",
    ),
    (
      vit.norm_eps != 1e-5 or dec.norm_eps != 1e-5,
      "LayerNorm eps 1e-5 in the image tower and the decoder",
    ),
    (dd["mlp_dim"] != 4 * dd["width"], "a decoder MLP 4 times its width"),
    (
      dd["width"] != config["embed_dim"],
      "a decoder as wide as the embedding (its keys are the pooled image tokens)",
    ),
    (text.correct_cls_mask, "the legacy text mask (correct_cls_mask=False)"),
    (
      not _one_activation(vit.act, text.act, dec.act),
      "GELU (tanh GELU in the towers) or QuickGELU in every tower and the decoder",
    ),
  ]
  for bad, what in problems:
    if bad:
      raise common.PretrainedError(f"{path}: open_clip's CoCa needs {what}.")
  h, w = vit.image_hw
  vision = dict(
    image_size=h if h == w else [h, w],
    layers=vd["depth"],
    width=vd["width"],
    head_width=vd["width"] // vd["num_heads"],
    mlp_ratio=_ratio(vd["mlp_dim"], vd["width"]),
    patch_size=vd["patch_size"],
    attentional_pool=True,
    attn_pooler_queries=model.pool_queries,
    attn_pooler_heads=model.pool_heads,
    output_tokens=True,
  )
  if not vit.pre_norm:
    vision["no_ln_pre"] = True
  if vit.act == "gelu_tanh":
    vision["act_kwargs"] = dict(approximate="tanh")
  text_cfg = dict(
    context_length=text.max_len,
    vocab_size=text.vocab_size,
    width=td["width"],
    heads=td["num_heads"],
    layers=td["depth"],
    mlp_ratio=_ratio(td["mlp_dim"], td["width"]),
    embed_cls=True,
    output_tokens=True,
  )
  if text.pad_id != 0:
    text_cfg["pad_id"] = text.pad_id
  if text.norm_eps != 1e-5:
    text_cfg["norm_kwargs"] = dict(eps=text.norm_eps)
  if text.act == "gelu_tanh":
    text_cfg["act_kwargs"] = dict(approximate="tanh")
  top = dict(embed_dim=int(config["embed_dim"]))
  if dec.act == "quick_gelu":
    top["quick_gelu"] = True
  if config.get("bias_init") is not None or config.get("convention") == "siglip":
    top["init_logit_bias"] = float(config.get("bias_init") or -10.0)
  multimodal = dict(
    context_length=dec.max_len,
    vocab_size=dec.vocab_size,
    width=dd["width"],
    heads=dd["num_heads"],
    layers=dd["depth"],
  )
  return dict(
    top, vision_cfg=vision, text_cfg=text_cfg, multimodal_cfg=multimodal, custom_text=True
  )


# ---------------------------------------------------------------------------------- tensors


def rules(model_config: Any) -> list[r.Rule]:
  """Every tensor's mapping for a CoCa model config (see the module docstring)."""
  from contrastive.models import config as config_lib

  config = model_config.to_dict() if hasattr(model_config, "to_dict") else dict(model_config)
  model = config_lib.make_model(config)
  vd, td, dd = model.image_encoder.dims, model.text_encoder.dims, model.decoder.dims
  e = "image/encoder"
  out = [
    r.conv("visual.conv1.weight", f"{e}/embedding/kernel"),
    r.copy("visual.class_embedding", f"{e}/cls", (1, 1, -1), (-1,)),
    r.copy(
      "visual.positional_embedding", f"{e}/pos_embedding", (1, -1, vd["width"]), (-1, vd["width"])
    ),
  ]
  if model.image_encoder.pre_norm:
    out += r.norm("visual.ln_pre", f"{e}/norm_pre")
  out += r.blocks(
    "visual.transformer.resblocks", f"{e}/transformer", vd["depth"], vd["num_heads"], timm=False
  )
  p, q = "visual.attn_pool", "image/pool"
  out += [r.copy(f"{p}.query", f"{q}/query")]
  out += r.norm(f"{p}.ln_q", f"{q}/norm_q") + r.norm(f"{p}.ln_k", f"{q}/norm_k")
  if vd["width"] == config["embed_dim"]:  # torch fuses the projections when kdim == embed_dim
    out += r.fused(
      f"{p}.attn.in_proj_weight",
      f"{p}.attn.in_proj_bias",
      f"{q}/attn",
      ("query", "key", "value"),
      model.pool_heads,
    )
  else:
    out += r.separate(f"{p}.attn", f"{q}/attn", model.pool_heads)
  out += r.out_proj(f"{p}.attn.out_proj", f"{q}/attn/out", model.pool_heads)
  out += r.norm("visual.ln_post", "image/norm") + [r.copy("visual.proj", "image/head/kernel")]
  t = "text/encoder"
  out += [
    r.copy("text.token_embedding.weight", f"{t}/embedding/embedding"),
    r.copy("text.positional_embedding", f"{t}/pos_embedding"),
    r.copy("text.cls_emb", f"{t}/cls"),
  ]
  out += r.blocks(
    "text.transformer.resblocks", f"{t}/transformer", td["depth"], td["num_heads"], timm=False
  )
  out += r.norm("text.ln_final", f"{t}/norm") + [r.copy("text.text_projection", "text/head/kernel")]
  for i in range(dd["depth"]):
    src, dst = "text_decoder", f"decoder/layer_{i}"
    out += r.block(f"{src}.resblocks.{i}", f"{dst}/self", dd["num_heads"])
    out += r.block(f"{src}.cross_attn.{i}", f"{dst}/cross", dd["num_heads"])
    out += r.norm(f"{src}.cross_attn.{i}.ln_1_kv", f"{dst}/cross/norm_kv")
  out += r.norm("text_decoder.ln_final", "decoder/norm")
  out += [r.copy("text_decoder.text_projection", "decoder/head/kernel")]
  out += [r.copy("logit_scale", "log_scale", (), ())]
  if config.get("convention") == "siglip" or config.get("bias_init") is not None:
    out += [r.copy("logit_bias", "bias", (), ())]
  return out
