"""open_clip and OpenAI CLIP checkpoints: key names and shape transforms, both ways.

What loads: a directory as the hub repos ship it (`open_clip_config.json` holding
`{"model_cfg": ..., "preprocess_cfg": ...}` beside `open_clip_model.safetensors` or
`open_clip_pytorch_model.bin`), one such weights file with its config beside it, or any weights
file with `name=` an open_clip model name (`NAMES`). A `.bin` may hold a plain state_dict or
`{"state_dict": ...}`, with or without DDP's `module.` prefix. Three model classes:

- `CLIP` (OpenAI's ViT layout): image `visual.conv1` (no bias), `visual.class_embedding`,
  `visual.positional_embedding` (class token first), `visual.ln_pre`,
  `visual.transformer.resblocks.{i}` with the fused `attn.in_proj_weight` `[3w, w]`,
  `visual.ln_post`, `visual.proj` `[w, e]`; text `token_embedding`, `positional_embedding`,
  `transformer.resblocks.{i}`, `ln_final`, `text_projection` `[w, e]`; `logit_scale`. The text
  tower is causal and pools at the argmax id (the end-of-text token); QuickGELU (`-quickgelu`
  names, OpenAI's weights) or exact GELU.
- `CustomTextCLIP` (SigLIP): the same text tower under `text.` (bidirectional, pooling the last
  position, `text.text_projection` a Linear with bias) and a timm trunk under `visual.trunk.`:
  `patch_embed.proj` (with bias), `pos_embed` (no class token), `blocks.{i}` (`attn.qkv` fused),
  `norm`, the MAP head `attn_pool` (`latent`, `q`, `kv`, `proj`, `norm`, `mlp`), no
  projection; `logit_bias`.
- `CoCa` (a `model_cfg` with `multimodal_cfg`): a CLIP ViT with an attentional pooler, a text
  tower with an appended class token, a multimodal decoder; loaded as `models.CoCa`
  (`open_clip_coca` has its configs and tensor mapping).

| open_clip                        | here                             | transform              |
| -------------------------------- | -------------------------------- | ---------------------- |
| Linear `*.weight` `[o, i]`       | `*/kernel` `[i, o]`              | transposed             |
| `attn.in_proj_weight` `[3w, w]`  | `attn/{query,key,value}/kernel`  | split, `W.T` reshaped  |
| `attn.out_proj.weight` `[w, w]`  | `attn/out/kernel` `[h, w/h, w]`  | `W.T` reshaped         |
| `conv1.weight` `[w, 3, p, p]`    | `embedding/kernel` `[p, p, 3, w]` | transposed            |
| `class_embedding` `[w]`          | `cls` `[1, 1, w]`                | reshaped               |
| `positional_embedding` `[1+n, w]` | `pos_embedding` `[1, 1+n, w]`   | reshaped               |
| `logit_scale`, `logit_bias`      | `log_scale`, `bias`              | copied                 |

(The query, key and value kernels are `[w, heads, w/heads]`; the ViT has `cls_posemb=True`.)

Configs (`open_clip_configs`, `open_clip_coca`): the architecture comes from the config file or
from `name=` (`NAMES`, open_clip's `model_configs` copied), both read by
`model_config_from_open_clip`. The rules' pieces are in `open_clip_rules`.

Not covered (refused with the reason): ModifiedResNet (`RN50`...) and other timm trunks, HF text
towers (`coca_roberta-ViT-B-32` too), LayerScale (`ls_init_value`), attentional pooling outside
CoCa, average pooling over patches (CLIPA), custom attention blocks. The loaded model has
`max_scale=inf` so that its scale is open_clip's `logit_scale.exp()` exactly.
"""

from __future__ import annotations

import json
import os
from typing import Any

from absl import logging
import ml_collections
import numpy as np

from contrastive.models.pretrained import common
from contrastive.models.pretrained import open_clip_coca as coca
from contrastive.models.pretrained import open_clip_configs as configs
from contrastive.models.pretrained import weights as weights_lib
from contrastive.models.pretrained.open_clip_configs import CONFIG
from contrastive.models.pretrained.open_clip_configs import TIMM_TRUNKS
from contrastive.models.pretrained.open_clip_configs import encoder_dims
from contrastive.models.pretrained.open_clip_rules import Rule
from contrastive.models.pretrained.open_clip_rules import blocks
from contrastive.models.pretrained.open_clip_rules import class_token
from contrastive.models.pretrained.open_clip_rules import conv
from contrastive.models.pretrained.open_clip_rules import copy
from contrastive.models.pretrained.open_clip_rules import fused
from contrastive.models.pretrained.open_clip_rules import linear
from contrastive.models.pretrained.open_clip_rules import norm
from contrastive.models.pretrained.open_clip_rules import out_proj

WEIGHTS = (
  "open_clip_model.safetensors",
  "open_clip_pytorch_model.safetensors",
  "open_clip_pytorch_model.bin",
  "open_clip_pytorch_model.pth",
)
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
SIGLIP_MEAN = SIGLIP_STD = (0.5, 0.5, 0.5)
_CROPS = {"shortest": "center", "squash": "squash", "longest": "pad"}
_IGNORED = ("input_resolution", "context_length", "vocab_size", "attn_mask", "text.attn_mask")
# Every open_clip model name this library knows the architecture of (CLIP, SigLIP, CoCa).
NAMES = tuple(sorted([*configs.NAMES, *coca.NAMES]))


def named_config(name: str) -> dict[str, Any]:
  """open_clip's `model_cfg` of a model name (`NAMES`), as its model_configs JSON has it."""
  return coca.named_config(name) if name in coca.NAMES else configs.named_config(name)


def model_config_from_open_clip(
  cfg: dict[str, Any], *, source: str = CONFIG
) -> ml_collections.ConfigDict:
  """This library's model config of an open_clip `model_cfg` (a CoCa's with `multimodal_cfg`).

  Raises:
    PretrainedError: an architecture this library's models do not cover; the message names
      `source` and the option.
  """
  if isinstance(cfg, dict) and "multimodal_cfg" in cfg:
    return coca.model_config(cfg, source=source)
  return configs.model_config_from_open_clip(cfg, source=source)


def open_clip_config(model_config: Any, path: str = "") -> dict[str, Any]:
  """The open_clip `model_cfg` of a model config open_clip can build (the inverse mapping)."""
  if coca.is_coca(model_config):
    return coca.open_clip_config(model_config, path)
  return configs.open_clip_config(model_config, path)


def _param_shapes(model_config: Any) -> dict[str, tuple[int, ...]]:
  """`common.param_shapes`, with a scanned decoder's layers unrolled too (`layer_{i}`)."""
  config = model_config.to_dict() if hasattr(model_config, "to_dict") else dict(model_config)
  unroll = not config.get("scan") and not (config.get("decoder") or {}).get("scan")
  shapes = {}
  for key, shape in common.param_shapes(model_config).items():
    if unroll and key.startswith("decoder/layer/"):
      for i in range(shape[0]):
        shapes[key.replace("decoder/layer/", f"decoder/layer_{i}/", 1)] = shape[1:]
    else:
      shapes[key] = shape
  return shapes


def _rules(model_config: Any, **kwargs) -> list[Rule]:
  return coca.rules(model_config) if coca.is_coca(model_config) else rules(model_config, **kwargs)


# ---------------------------------------------------------------------------------- mapping


def rules(model_config: Any, *, text_prefix: str, image_head: str | None = None) -> list[Rule]:
  """Every tensor's mapping for a model config: `text_prefix` is `"text."` (CustomTextCLIP) or
  `""` (CLIP); `image_head` the key of a timm trunk's projection (`visual.head.proj` or
  `visual.trunk.head`)."""
  config = model_config.to_dict() if hasattr(model_config, "to_dict") else dict(model_config)
  image, text = config["encoders"]["image"], config["encoders"]["text"]
  di, dt = encoder_dims(image), encoder_dims(text)
  e, tp = "image/encoder", text_prefix
  out: list[Rule] = []
  if image.get("pool") == "map":
    v = "visual.trunk"
    out += [
      conv(f"{v}.patch_embed.proj.weight", f"{e}/embedding/kernel"),
      copy(f"{v}.patch_embed.proj.bias", f"{e}/embedding/bias"),
      copy(f"{v}.pos_embed", f"{e}/pos_embedding"),
    ]
    out += blocks(f"{v}.blocks", f"{e}/transformer", di["depth"], di["num_heads"], timm=True)
    out += norm(f"{v}.norm", f"{e}/norm")
    p, m = f"{v}.attn_pool", f"{e}/map"
    out += [copy(f"{p}.latent", f"{m}/probe")]
    out += fused(f"{p}.q.weight", f"{p}.q.bias", f"{m}/attn", ("query",), di["num_heads"])
    out += fused(f"{p}.kv.weight", f"{p}.kv.bias", f"{m}/attn", ("key", "value"), di["num_heads"])
    out += out_proj(f"{p}.proj", f"{m}/attn/out", di["num_heads"]) + norm(f"{p}.norm", f"{m}/norm")
    out += linear(f"{p}.mlp.fc1", f"{m}/mlp/fc1") + linear(f"{p}.mlp.fc2", f"{m}/mlp/fc2")
    if image.get("proj", True):
      out += linear(
        image_head or "visual.head.proj", "image/head", bias=bool(image.get("proj_bias"))
      )
  else:
    out += [conv("visual.conv1.weight", f"{e}/embedding/kernel")]
    if image.get("cls_posemb", False):
      out += [
        copy("visual.class_embedding", f"{e}/cls", (1, 1, -1), (-1,)),
        copy(
          "visual.positional_embedding",
          f"{e}/pos_embedding",
          (1, -1, di["width"]),
          (-1, di["width"]),
        ),
      ]
    else:
      out += [class_token("visual.class_embedding", "visual.positional_embedding", e)]
    if image.get("pre_norm", False):
      out += norm("visual.ln_pre", f"{e}/norm_pre")
    out += blocks(
      "visual.transformer.resblocks", f"{e}/transformer", di["depth"], di["num_heads"], timm=False
    )
    out += norm("visual.ln_post", f"{e}/norm") + [copy("visual.proj", "image/head/kernel")]
  t = "text/encoder"
  out += [
    copy(f"{tp}token_embedding.weight", f"{t}/embedding/embedding"),
    copy(f"{tp}positional_embedding", f"{t}/pos_embedding"),
  ]
  out += blocks(
    f"{tp}transformer.resblocks", f"{t}/transformer", dt["depth"], dt["num_heads"], timm=False
  )
  out += norm(f"{tp}ln_final", f"{t}/norm")
  if text.get("proj", True):
    if text.get("proj_bias"):
      out += linear(f"{tp}text_projection", "text/head")
    else:
      out += [copy(f"{tp}text_projection", "text/head/kernel")]
  out += [copy("logit_scale", "log_scale", (), ())]
  if config.get("convention") == "siglip" or config.get("bias_init") is not None:
    out += [copy("logit_bias", "bias", (), ())]
  return out


def _architecture(keys) -> str:
  """What a state_dict's keys look like, for error messages."""
  keys = list(keys)
  has = lambda prefix: any(k.startswith(prefix) for k in keys)
  if has("vision_model.") or has("text_model."):
    return "a Hugging Face CLIPModel/SiglipModel state_dict"
  if has("img/") or has("params/img/"):
    return "a big_vision checkpoint"
  image = (
    "a timm image trunk"
    if has("visual.trunk.")
    else "a ModifiedResNet image tower"
    if has("visual.layer1.")
    else "an open_clip ViT image tower"
    if has("visual.conv1.")
    else "no known image tower"
  )
  text = (
    "a Hugging Face text tower"
    if has("text.transformer.embeddings")
    else "a text tower under 'text.'"
    if has("text.token_embedding.")
    else "a CLIP text tower"
    if has("token_embedding.")
    else "no known text tower"
  )
  decoder = " and a CoCa text decoder" if has("text_decoder.") else ""
  return f"{image} and {text}{decoder}"


def _expected_sources(rule: Rule, here: dict[str, tuple[int, ...]]) -> list[tuple[int, ...]]:
  zeros = [np.broadcast_to(np.float32(0), here[t]) for t in rule.targets]
  return [tuple(a.shape) for a in rule.save(*zeros)]


# ------------------------------------------------------------------------------ load / save


def _directory(path: str) -> str:
  return path if os.path.isdir(path) else os.path.dirname(path)


def detect(path: str | os.PathLike) -> bool:
  """Whether `path` is an open_clip checkpoint: a directory with `open_clip_config.json` or an
  `open_clip_*` weights file, or such a file."""
  path = os.fspath(path)
  directory = _directory(path)
  if os.path.isdir(path):
    return any(os.path.isfile(os.path.join(path, n)) for n in (CONFIG, *WEIGHTS))
  return os.path.isfile(path) and (
    os.path.basename(path).startswith("open_clip_")
    or os.path.isfile(os.path.join(directory, CONFIG))
  )


def _weights_file(path: str) -> str:
  if not os.path.isdir(path):
    return path
  for name in WEIGHTS:
    if os.path.isfile(os.path.join(path, name)):
      return os.path.join(path, name)
  raise common.PretrainedError(
    f"{path}: no open_clip weights ({' or '.join(WEIGHTS[::2])}); found {common.describe(path)}."
  )


def _read_config(path: str, weights_file: str, name: str | None):
  """`(model_cfg, preprocess_cfg, where the config came from)`."""
  if name is not None:
    return named_config(name), {}, f"open_clip model {name!r}"
  config_path = os.path.join(_directory(path) or ".", CONFIG)
  if not os.path.isfile(config_path):
    raise common.PretrainedError(
      f"{weights_file}: no {CONFIG} beside it and no name=; pass an open_clip model name "
      f"(e.g. name='ViT-B-32'; known: {', '.join(NAMES)})."
    )
  try:
    with open(config_path) as f:
      config = json.load(f)
  except (OSError, ValueError) as e:
    raise common.PretrainedError(f"{config_path}: not readable JSON ({e}).") from e
  if not isinstance(config, dict):
    raise common.PretrainedError(
      f"{config_path}: expected a JSON object, got {type(config).__name__}."
    )
  return config.get("model_cfg", config), config.get("preprocess_cfg") or {}, config_path


def _tokenizer(cfg: dict[str, Any], directory: str) -> str:
  text = cfg.get("text_cfg", {})
  if not text.get("hf_tokenizer_name"):
    return "clip"
  candidates = [os.path.join(directory, n) for n in ("tokenizer.json", "spiece.model")]
  found = [c for c in candidates if os.path.isfile(c)]
  kind = "siglip" if "siglip" in text["hf_tokenizer_name"].lower() else "hf"
  if not found:
    logging.warning(
      "open_clip checkpoint in %s: no tokenizer file (%s) beside it for %s; "
      "`data.make_tokenizer(pre.data.tokenizer)` will fail until one is there.",
      directory,
      " or ".join(candidates),
      text["hf_tokenizer_name"],
    )
  return f"{kind}:{(found or candidates)[0]}"


def _data(cfg, preprocess, model_config, directory) -> ml_collections.ConfigDict:
  siglip = bool(cfg["vision_cfg"].get("timm_model_name"))
  defaults = dict(
    mean=SIGLIP_MEAN if siglip else OPENAI_MEAN,
    std=SIGLIP_STD if siglip else OPENAI_STD,
    interpolation="bicubic",
    resize_mode="squash" if siglip else "shortest",
  )
  pre = dict(defaults, **{k: v for k, v in preprocess.items() if v is not None})
  size = model_config.encoders.image.image_size
  size = size if isinstance(size, int) else max(size)
  return common.data_settings(
    tokenizer=_tokenizer(cfg, directory),
    max_len=model_config.encoders.text.max_len,
    image_size=size,
    mean=pre["mean"],
    std=pre["std"],
    crop=_CROPS.get(pre["resize_mode"], "center"),
    interpolation=pre["interpolation"],
  )


def load(path: str | os.PathLike, *, name: str | None = None) -> common.Pretrained:
  """Reads an open_clip checkpoint (see the module docstring for the layouts).

  Args:
    path: a directory with `open_clip_config.json` and weights, or a weights file.
    name: an open_clip model name (`NAMES`) giving the architecture instead of the config file.

  Raises:
    PretrainedError: no weights, no config and no name, an unreadable or truncated file, an
      architecture not covered, or weights that do not match the config (a missing or extra
      key, a shape); one line naming the file and the mismatch.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise common.PretrainedError(f"{path}: does not exist.")
  weights_file = _weights_file(path)
  cfg, preprocess, source = _read_config(path, weights_file, name)
  model_config = model_config_from_open_clip(cfg, source=source)
  weights = weights_lib.open_weights(weights_file)
  params = convert(weights, model_config, source=source)
  data = _data(cfg, preprocess, model_config, _directory(weights_file) or ".")
  return common.Pretrained(
    model_config=model_config,
    params=params,
    data=data,
    family="open_clip",
    source=path,
    meta=dict(model_cfg=cfg),
  )


def convert(weights: weights_lib.Weights, model_config: Any, *, source: str) -> dict[str, Any]:
  """This library's params from open_clip weights, tensor by tensor (each popped as it is used).

  Raises:
    PretrainedError: a key the architecture needs is missing, an extra key, or a shape
      that differs from what `source` (the config) implies.
  """
  file = weights.path
  text_prefix = "text." if "text.token_embedding.weight" in weights else ""
  head = next(
    (
      k[: -len(".weight")]
      for k in ("visual.head.proj.weight", "visual.trunk.head.weight")
      if k in weights
    ),
    None,
  )
  table = _rules(model_config, text_prefix=text_prefix, image_head=head)
  here = _param_shapes(model_config)
  needed = [k for rule in table for k in rule.sources]
  missing = [k for k in needed if k not in weights]
  if missing:
    raise common.PretrainedError(
      f"{file}: has no {missing[0]!r} ({len(missing)} keys missing), which {source} needs; the "
      f"file holds {_architecture(weights.keys())}."
    )
  extra = sorted(set(weights.keys()) - set(needed) - set(_IGNORED))
  if extra:
    raise common.PretrainedError(
      f"{file}: has {len(extra)} keys that {source} does not use, e.g. {extra[0]!r}; the file "
      f"holds {_architecture(weights.keys())}."
    )
  for rule in table:
    for key, shape in zip(rule.sources, _expected_sources(rule, here)):
      found = weights.shape(key)
      if found != shape and not (shape == () and found == (1,)):
        raise common.PretrainedError(
          f"{file}: {key} has shape {found} but {source} implies "
          f"{shape}; the config does not match the weights."
        )
  flat = {}
  for rule in table:
    outputs = rule.load(*[weights.pop(k) for k in rule.sources])
    for target, value in zip(rule.targets, outputs):
      flat[target] = np.ascontiguousarray(value, np.float32).reshape(here[target])
  return common.unflatten(flat)


def save(
  model_config: Any,
  params: Any,
  path: str | os.PathLike,
  *,
  data: ml_collections.ConfigDict | None = None,
  meta: dict[str, Any] | None = None,
) -> None:
  """Writes `open_clip_model.safetensors` and `open_clip_config.json` into directory `path`.

  `open_clip.create_model("local-dir:" + path)` (or `create_model_and_transforms`) then builds
  and loads it unchanged. `data` (a `Pretrained.data`) gives the `preprocess_cfg`; `meta` (a
  `Pretrained.meta` from this family) keeps the source's tokenizer fields.

  Raises:
    PretrainedError: a model open_clip cannot hold, or params that do not fit the config.
  """
  path = os.fspath(path)
  cfg = open_clip_config(model_config, path)
  source_text = ((meta or {}).get("model_cfg") or {}).get("text_cfg", {})
  for key in ("hf_tokenizer_name", "tokenizer_kwargs", "tokenizer_mode"):
    if key in source_text:
      cfg["text_cfg"][key] = source_text[key]
  here = _param_shapes(model_config)
  flat = {k: np.asarray(v) for k, v in common.flatten(params).items()}
  if set(flat) != set(here):
    odd = sorted(set(flat) ^ set(here))
    raise common.PretrainedError(
      f"{path}: the params do not fit the model config (e.g. {odd[0]!r} is in only one of them)."
    )
  for key, shape in here.items():
    if flat[key].shape != shape:
      raise common.PretrainedError(
        f"{path}: params {key} has shape {flat[key].shape}, the model config implies {shape}."
      )
  custom = bool(cfg.get("custom_text"))
  tensors = {}
  for rule in _rules(model_config, text_prefix="text." if custom else ""):
    for key, value in zip(rule.sources, rule.save(*[flat[t] for t in rule.targets])):
      tensors[key] = np.require(value, np.float32, "C")  # 0-d stays 0-d
  os.makedirs(path, exist_ok=True)
  weights_lib.save_safetensors(tensors, os.path.join(path, WEIGHTS[0]))
  siglip = cfg["vision_cfg"].get("timm_model_name") is not None
  preprocess = dict(
    mean=list(SIGLIP_MEAN if siglip else OPENAI_MEAN),
    std=list(SIGLIP_STD if siglip else OPENAI_STD),
    interpolation="bicubic",
    resize_mode="squash" if siglip else "shortest",
  )
  if data is not None:
    modes = {v: k for k, v in _CROPS.items()}
    preprocess.update(
      mean=list(data.mean),
      std=list(data.std),
      interpolation=data.get("interpolation", "bicubic"),
      resize_mode=modes.get(data.crop, "shortest"),
    )
  preprocess["size"] = cfg["vision_cfg"]["image_size"]
  with open(os.path.join(path, CONFIG), "w") as f:
    json.dump(dict(model_cfg=cfg, preprocess_cfg=preprocess), f, indent=2)


__all__ = [
  "CONFIG",
  "NAMES",
  "TIMM_TRUNKS",
  "WEIGHTS",
  "Rule",
  "convert",
  "detect",
  "load",
  "model_config_from_open_clip",
  "named_config",
  "open_clip_config",
  "rules",
  "save",
]
