"""Hugging Face transformers checkpoints: `CLIPModel` and `SiglipModel` directories.

A directory as `save_pretrained` writes it (or the hub serves it): `config.json` and
`model.safetensors`, or shards `model-0000x-of-0000y.safetensors` with
`model.safetensors.index.json`; `preprocessor_config.json` and a tokenizer file beside them
when present (`TOKENIZERS`: the `data.make_tokenizer` spec each file gets). SigLIP 2
checkpoints of fixed resolution are `SiglipModel`s (`model_type` `"siglip"`) and load here; the
NaFlex ones (`Siglip2Model`, `model_type` `"siglip2"`) have another patch embedding and do not.

The mapping onto this library's layout, per transformer block (`W` a torch `[out, in]` weight):

| transformers                     | here                            | transform                |
| -------------------------------- | ------------------------------- | ------------------------ |
| `self_attn.{q,k,v}_proj.weight`  | `attn/{query,key,value}/kernel` | `W.T` to `[w, heads, kv]` |
| `self_attn.out_proj.weight`      | `attn/out/kernel`               | `W.T` to `[heads, kv, w]` |
| `layer_norm{1,2}`, `mlp.fc{1,2}` | `norm{1,2}`, `mlp/fc{1,2}`      | `W.T` for kernels        |
| `patch_embedding.weight`         | `embedding/kernel`              | `(3, 2, 1, 0)` transpose |

CLIP's class token has row 0 of the position table: it loads onto a ViT with `cls_posemb=True`,
tensor for tensor; a class token without a row of its own (`cls_posemb=False`, this library's
default) saves with a row 0 of `-0.0` (adding `-0.0` changes no float). An image side that is not
a multiple of the patch (So400m/14 at 384 px) loads with `drop_remainder=True`, as
transformers' convolution drops the remainder. SigLIP's attention-pooling head
(`vision_model.head`) is a torch `nn.MultiheadAttention` whose `in_proj_weight` splits into
query, key and value. SigLIP's image tower has no projection (`proj=False` here); its text tower
pools the last position and projects with a bias. The logit scale is not clipped
(`max_scale=inf`), as in transformers' forward.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from typing import Any

from absl import logging
import flax
import jax
import ml_collections
import numpy as np

from contrastive.models import config as model_config_lib
from contrastive.models import layers
from contrastive.models.pretrained import common
from contrastive.models.pretrained import hf_params
from contrastive.models.pretrained import weights as weights_lib

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
PREPROCESSOR = "preprocessor_config.json"
# model_type: (file, `data.make_tokenizer` prefix), in order of preference. "hf:" is the file
# with its own template, as transformers' fast tokenizer reads it; "siglip:" SigLIP's
# SentencePiece model as transformers' SiglipTokenizer reads it.
TOKENIZERS = {
  "clip": (("tokenizer.json", "hf:"),),
  "siglip": (("spiece.model", "siglip:"), ("tokenizer.json", "hf:")),
}

# transformers' class defaults: config.json leaves out values equal to them.
_DEFAULTS = {
  "clip": dict(
    projection_dim=512,
    logit_scale_init_value=2.6592,
    text=dict(
      vocab_size=49408,
      hidden_size=512,
      intermediate_size=2048,
      num_hidden_layers=12,
      num_attention_heads=8,
      max_position_embeddings=77,
      hidden_act="quick_gelu",
      layer_norm_eps=1e-5,
      pad_token_id=1,
      bos_token_id=49406,
      eos_token_id=49407,
    ),
    vision=dict(
      hidden_size=768,
      intermediate_size=3072,
      num_hidden_layers=12,
      num_attention_heads=12,
      num_channels=3,
      image_size=224,
      patch_size=32,
      hidden_act="quick_gelu",
      layer_norm_eps=1e-5,
    ),
  ),
  "siglip": dict(
    text=dict(
      vocab_size=32000,
      hidden_size=768,
      intermediate_size=3072,
      num_hidden_layers=12,
      num_attention_heads=12,
      max_position_embeddings=64,
      hidden_act="gelu_pytorch_tanh",
      layer_norm_eps=1e-6,
      pad_token_id=1,
      bos_token_id=49406,
      eos_token_id=49407,
      projection_size=None,
    ),
    vision=dict(
      hidden_size=768,
      intermediate_size=3072,
      num_hidden_layers=12,
      num_attention_heads=12,
      num_channels=3,
      image_size=224,
      patch_size=16,
      hidden_act="gelu_pytorch_tanh",
      layer_norm_eps=1e-6,
      vision_use_head=True,
    ),
  ),
}
ARCHITECTURES = {"clip": "CLIPModel", "siglip": "SiglipModel"}
# transformers' `hidden_act` name: this library's activation (and back).
ACTS = {
  "quick_gelu": "quick_gelu",
  "gelu": "gelu",
  "gelu_pytorch_tanh": "gelu_tanh",
  "gelu_new": "gelu_tanh",
}
HF_ACTS = {"quick_gelu": "quick_gelu", "gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh"}
# PIL's resampling codes in preprocessor_config.json.
_RESAMPLE = {2: "bilinear", 3: "bicubic"}
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
# A HF CLIP text config with this `eos_token_id` pools at the largest id (transformers keeps
# that for configs written before its PR #24773); any other id pools at its first position.
LEGACY_EOS = 2


# Keys old transformers versions saved as buffers; nothing to load.
def _err(path: str, message: str) -> common.PretrainedError:
  return common.PretrainedError(f"{path}: {message}")


def _dir(path: str | os.PathLike) -> str:
  path = os.fspath(path)
  return path if os.path.isdir(path) else os.path.dirname(path) or "."


def detect(path: str | os.PathLike) -> bool:
  """Whether `path` (a directory, or a file in one) has a transformers config and weights."""
  directory = _dir(path)
  config = os.path.join(directory, CONFIG)
  if not os.path.isfile(config):
    return False
  try:
    with open(config) as f:
      model_type = json.load(f).get("model_type")
  except (OSError, ValueError, AttributeError):
    return False
  has_weights = any(os.path.isfile(os.path.join(directory, n)) for n in (WEIGHTS, INDEX))
  return model_type is not None and has_weights


# ------------------------------------------------------------------------------------ reading


def _open_weights(directory: str) -> weights_lib.Weights:
  for name in (WEIGHTS, INDEX):
    if os.path.isfile(os.path.join(directory, name)):
      return weights_lib.open_weights(os.path.join(directory, name))
  raise _err(directory, f"no {WEIGHTS} and no {INDEX}; found {common.describe(directory)}.")


def _read_json(path: str) -> dict[str, Any]:
  try:
    with open(path) as f:
      value = json.load(f)
  except (OSError, ValueError) as e:
    raise _err(path, f"not a readable JSON file ({e}).") from None
  if not isinstance(value, dict):
    raise _err(path, f"expected a JSON object, got {type(value).__name__}.")
  return value


def _sub_config(config: dict[str, Any], kind: str, tower: str) -> dict[str, Any]:
  given = config.get(f"{tower}_config") or {}
  return {**_DEFAULTS[kind][tower], **{k: v for k, v in given.items() if v is not None}}


def _side(value, *, what: str, path: str) -> int:
  if isinstance(value, (list, tuple)):
    if len(value) != 2 or value[0] != value[1]:
      raise _err(path, f"{what} {value} is not square; only square images and patches load.")
    value = value[0]
  return int(value)


def _act(name: str, *, path: str, tower: str) -> str:
  if name not in ACTS:
    raise _err(path, f"{tower} hidden_act {name!r} is not supported; known: {sorted(ACTS)}.")
  return ACTS[name]


def model_config_from_hf(
  config: dict[str, Any], *, path: str = CONFIG
) -> ml_collections.ConfigDict:
  """The model config of a transformers `CLIPModel` or `SiglipModel` config (a dict)."""
  kind = config.get("model_type")
  if kind == "siglip2":
    raise _err(
      path,
      "model_type 'siglip2' (Siglip2Model, NaFlex) is not supported; SigLIP 2 "
      "checkpoints of fixed resolution (model_type 'siglip') load.",
    )
  if kind not in _DEFAULTS:
    raise _err(
      path,
      f"model_type {kind!r} is not supported; known: {sorted(_DEFAULTS)} "
      f"({', '.join(ARCHITECTURES.values())}).",
    )
  t, v = _sub_config(config, kind, "text"), _sub_config(config, kind, "vision")
  dims = lambda c: dict(
    width=int(c["hidden_size"]),
    depth=int(c["num_hidden_layers"]),
    mlp_dim=int(c["intermediate_size"]),
    num_heads=int(c["num_attention_heads"]),
  )
  image = dict(
    kind="vit",
    **dims(v),
    patch_size=_side(v["patch_size"], what="patch_size", path=path),
    image_size=_side(v["image_size"], what="image_size", path=path),
    channels=int(v["num_channels"]),
    posemb="learn",
    stem="patch",
    **(
      {"drop_remainder": True}
      if _side(v["image_size"], what="image_size", path=path)
      % _side(v["patch_size"], what="patch_size", path=path)
      else {}
    ),
    final_norm="pre_pool",
    act=_act(v["hidden_act"], path=path, tower="vision"),
    norm_eps=float(v["layer_norm_eps"]),
  )
  text = dict(
    kind="text",
    **dims(t),
    vocab_size=int(t["vocab_size"]),
    max_len=int(t["max_position_embeddings"]),
    pad_id=None,
    final_norm="pre_pool",
    act=_act(t["hidden_act"], path=path, tower="text"),
    norm_eps=float(t["layer_norm_eps"]),
  )
  if kind == "clip":
    image.update(pool="cls", cls_posemb=True, pre_norm=True, patch_bias=False, proj_bias=False)
    eos = t["eos_token_id"]
    if isinstance(eos, list):
      raise _err(path, f"text eos_token_id {eos} is a list; CLIP pools at one end-of-text id.")
    text.update(
      causal=True,
      proj_bias=False,
      **(dict(pool="eot") if eos == LEGACY_EOS else dict(pool="eos", eos_id=int(eos))),
    )
    embed_dim = int(config.get("projection_dim") or _DEFAULTS["clip"]["projection_dim"])
    convention = "clip"
  else:
    if not v.get("vision_use_head", True):
      raise _err(
        path,
        "vision_use_head is false: a SiglipModel without its attention-pooling "
        "head has no image embedding to load.",
      )
    image.update(pool="map", pre_norm=False, patch_bias=True, proj=False)
    text.update(causal=False, pool="last", proj_bias=True)
    embed_dim = image["width"]
    projection = int(t.get("projection_size") or t["hidden_size"])
    if projection != embed_dim:
      raise _err(
        path,
        f"text projection_size {projection} differs from the vision hidden_size "
        f"{embed_dim}; SigLIP's image embedding is the vision width.",
      )
    convention = "siglip"
  return ml_collections.ConfigDict(
    dict(
      encoders=dict(image=image, text=text),
      embed_dim=embed_dim,
      convention=convention,
      max_scale=math.inf,
      dtype="float32",
      remat="none",
      scan=False,
      locked=(),
    )
  )


def load(path: str | os.PathLike, *, name: str | None = None) -> common.Pretrained:
  """Loads a transformers `CLIPModel` or `SiglipModel` directory.

  Args:
    path: the directory, or a file in it (`config.json`, `model.safetensors`).
    name: unused (the directory's `config.json` names the architecture); accepted so that every
      family has one signature.

  Raises:
    PretrainedError: no or an unsupported config, unreadable or truncated weights, weights of
      another architecture, or a config whose sizes do not match the weights.
  """
  del name
  directory = _dir(path)
  config_path = os.path.join(directory, CONFIG)
  if not os.path.isfile(config_path):
    raise _err(directory, f"no {CONFIG}; found {common.describe(directory)}.")
  config = _read_json(config_path)
  model_config = model_config_from_hf(config, path=config_path)
  weights = _open_weights(directory)
  params = hf_params.params_from_hf(
    weights,
    model_config,
    config_path=config_path,
    architecture=ARCHITECTURES[model_config.convention],
  )
  return common.Pretrained(
    model_config=model_config,
    params=params,
    data=data_from_hf(directory, config, model_config),
    family="hf",
    source=directory,
  )


def data_from_hf(directory: str, config: dict[str, Any], model_config) -> ml_collections.ConfigDict:
  """The data settings: the tokenizer file beside the weights, sizes, and normalization."""
  kind = model_config.convention
  image_size = model_config.encoders.image.image_size
  clip = kind == "clip"
  mean, std = (OPENAI_MEAN, OPENAI_STD) if clip else ((0.5,) * 3, (0.5,) * 3)
  resize, crop = image_size, "center" if clip else "squash"
  interpolation = "bicubic"
  pre_path = os.path.join(directory, PREPROCESSOR)
  if os.path.isfile(pre_path):
    pre = _read_json(pre_path)
    mean, std = pre.get("image_mean", mean), pre.get("image_std", std)
    size = pre.get("size")
    if isinstance(size, dict):
      size = size.get("shortest_edge", size.get("height"))
    if pre.get("do_center_crop", clip):
      crop = "center"
      resize = int(size or resize)
    else:
      crop = "squash"
    interpolation = _RESAMPLE.get(pre.get("resample"), interpolation)
  files = TOKENIZERS[kind]
  tokenizer = next(
    (
      prefix + os.path.join(directory, n)
      for n, prefix in files
      if os.path.isfile(os.path.join(directory, n))
    ),
    None,
  )
  if tokenizer is None and clip and model_config.encoders.text.vocab_size == 49408:
    tokenizer = "clip"  # OpenAI's BPE, which every 49,408-entry CLIP vocabulary is
  if tokenizer is None:
    name, prefix = files[0]
    tokenizer = prefix + os.path.join(directory, name)
    logging.warning(
      "%s has no tokenizer file (%s): the weights load, and "
      "data.make_tokenizer(pre.data.tokenizer) fails naming %s.",
      directory,
      " or ".join(n for n, _ in files),
      os.path.join(directory, name),
    )
  return common.data_settings(
    tokenizer=tokenizer,
    max_len=model_config.encoders.text.max_len,
    image_size=image_size,
    resize=resize,
    crop=crop,
    mean=mean,
    std=std,
    interpolation=interpolation,
  )


# ------------------------------------------------------------------------------------ writing


def _exportable(model_config) -> str:
  """`"clip"` or `"siglip"`: the transformers class that computes what `model_config` does."""
  cfg = model_config.to_dict() if hasattr(model_config, "to_dict") else dict(model_config)
  encoders = cfg.get("encoders") or {}
  if set(encoders) != {"image", "text"}:
    raise common.PretrainedError(
      f"A transformers CLIPModel or SiglipModel has an image and a "
      f"text tower; this model has {sorted(encoders)}."
    )
  image, text = dict(encoders["image"]), dict(encoders["text"])
  kind = "siglip" if image.get("pool") == "map" else "clip"
  fields = lambda k: {
    f: getattr(model_config_lib.ENCODERS[k], f) for f in model_config_lib.encoder_fields(k)
  }
  image, text = {**fields("vit"), **image}, {**fields("text"), **text}
  image.setdefault("proj", True)
  text.setdefault("proj", True)
  want = dict(
    clip=(
      dict(
        kind="vit",
        pool="cls",
        pre_norm=True,
        patch_bias=False,
        posemb="learn",
        stem="patch",
        proj=True,
        proj_bias=False,
      ),
      dict(kind="text", causal=True, proj=True, proj_bias=False),
    ),
    siglip=(
      dict(
        kind="vit",
        pool="map",
        pre_norm=False,
        final_norm="pre_pool",
        patch_bias=True,
        posemb="learn",
        stem="patch",
        proj=False,
      ),
      dict(kind="text", causal=False, pool="last", pad_id=None, proj=True, proj_bias=True),
    ),
  )[kind]
  for tower, enc, required in (("image", image, want[0]), ("text", text, want[1])):
    for key, value in required.items():
      if enc.get(key, False if key == "proj_bias" else None) != value:
        raise common.PretrainedError(
          f"transformers' {ARCHITECTURES[kind]} needs {tower} {key}={value!r}; this model has "
          f"{enc.get(key)!r}."
        )
    if enc.get("final_norm") == "none":
      raise common.PretrainedError(
        f"transformers' {ARCHITECTURES[kind]} needs a {tower} final_norm; this model has 'none'."
      )
    if enc.get("act") not in HF_ACTS:
      raise common.PretrainedError(
        f"{tower} act {enc.get('act')!r} has no transformers hidden_act; known: {sorted(HF_ACTS)}."
      )
  size = image.get("image_size", 224)
  if not isinstance(size, int) and (len(size) != 2 or size[0] != size[1]):
    raise common.PretrainedError(
      f"transformers' vision towers take square images; this model's image_size is {size!r}."
    )
  if kind == "clip":
    if text.get("pool") not in ("eot", "eos"):
      raise common.PretrainedError(
        f"transformers' CLIPModel pools the text at its end-of-text token: text pool 'eot' "
        f"(largest id) or 'eos' (with eos_id); this model has {text.get('pool')!r}."
      )
    if text.get("pool") == "eos" and text.get("eos_id") == LEGACY_EOS:
      raise common.PretrainedError(
        f"text eos_id {LEGACY_EOS} is transformers' marker for largest-id pooling; use pool "
        f"'eot' if {LEGACY_EOS} is the largest id."
      )
  if (cfg.get("bias_init") is not None or cfg.get("convention") == "siglip") != (kind == "siglip"):
    raise common.PretrainedError(
      f"transformers' {ARCHITECTURES[kind]} "
      f"{'has' if kind == 'siglip' else 'has no'} logit bias; this "
      f"model's convention is {cfg.get('convention')!r}."
    )
  return kind


def _hf_config(model_config, kind: str, dims: dict[str, dict[str, int]]) -> dict[str, Any]:
  enc = model_config.encoders
  image, text = enc.image, enc.text

  def common_fields(e, d):
    return dict(
      hidden_size=d["width"],
      intermediate_size=d["mlp_dim"],
      num_hidden_layers=d["depth"],
      num_attention_heads=d["num_heads"],
      hidden_act=HF_ACTS[e.act],
      layer_norm_eps=float(e.norm_eps),
      attention_dropout=0.0,
    )

  size = image.get("image_size", 224)
  vision = dict(
    common_fields(image, dims["image"]),
    num_channels=int(image.get("channels", 3)),
    image_size=size if isinstance(size, int) else int(size[0]),
    patch_size=dims["image"]["patch_size"],
  )
  txt = dict(
    common_fields(text, dims["text"]),
    vocab_size=int(text.vocab_size),
    max_position_embeddings=int(text.max_len),
  )
  if kind == "clip":
    eos = LEGACY_EOS if text.pool == "eot" else int(text.eos_id)
    txt.update(
      eos_token_id=eos,
      bos_token_id=0 if eos == LEGACY_EOS else eos - 1,
      pad_token_id=1,
      projection_dim=int(model_config.embed_dim),
    )
    vision.update(projection_dim=int(model_config.embed_dim))
    config = dict(projection_dim=int(model_config.embed_dim), logit_scale_init_value=2.6592)
  else:
    txt.update(projection_size=int(model_config.embed_dim))
    vision.update(vision_use_head=True)
    config = {}
  return dict(
    architectures=[ARCHITECTURES[kind]],
    model_type=kind,
    dtype="float32",
    text_config=dict(model_type=f"{kind}_text_model", **txt),
    vision_config=dict(model_type=f"{kind}_vision_model", **vision),
    **config,
  )


def _preprocessor(kind: str, settings) -> dict[str, Any]:
  """transformers' image processor config for data settings (`Pretrained.data`)."""
  if settings.crop not in ("center", "squash"):
    raise common.PretrainedError(
      f"transformers' image processors resize and center-crop, or "
      f"squash; these data settings crop {settings.crop!r}."
    )
  center = settings.crop == "center"
  side = int(settings.image_size)
  return dict(
    image_processor_type="CLIPImageProcessor" if kind == "clip" else "SiglipImageProcessor",
    do_resize=True,
    do_center_crop=center,
    do_rescale=True,
    rescale_factor=1 / 255,
    do_normalize=True,
    do_convert_rgb=True,
    image_mean=list(settings.mean),
    image_std=list(settings.std),
    resample={v: k for k, v in _RESAMPLE.items()}.get(settings.get("interpolation"), 3),
    size=({"shortest_edge": int(settings.resize)} if center else {"height": side, "width": side}),
    **({"crop_size": {"height": side, "width": side}} if center else {}),
  )


def _copy_tokenizer(kind: str, spec: str, directory: str) -> None:
  prefix, _, path = spec.rpartition(":") if ":" in spec else ("", "", spec)
  del prefix
  if not os.path.isfile(path):
    return  # "clip" (built in) or a file that was missing at load time
  name = "spiece.model" if path.endswith(".model") else "tokenizer.json"
  if kind == "clip" and name != "tokenizer.json":
    return
  target = os.path.join(directory, name)
  if os.path.abspath(path) != os.path.abspath(target):
    shutil.copyfile(path, target)


def save(model_config, params, path: str | os.PathLike, *, data=None) -> None:
  """Writes `config.json` and `model.safetensors` that transformers' `from_pretrained` loads.

  Args:
    model_config: the model config (e.g. `Pretrained.model_config`).
    params: its params, unrolled or scanned layers.
    path: the directory to write (created if needed).
    data: optional data settings (`Pretrained.data`): also writes `preprocessor_config.json`
      and copies the tokenizer file they name (`tokenizer.json` or `spiece.model`), so that
      loading the directory again gives the same settings.

  Raises:
    PretrainedError: the model is not one that `CLIPModel` or `SiglipModel` computes (e.g. a
      text tower pooling its last non-padding token, a MAP head with a projection); the message
      names the setting.
  """
  if not isinstance(model_config, ml_collections.ConfigDict):
    model_config = ml_collections.ConfigDict(model_config)
  kind = _exportable(model_config)
  model = model_config_lib.make_model(model_config)
  dims = {m: model.encoders[m].dims for m in ("image", "text")}
  unrolled = model_config.copy_and_resolve_references()
  unrolled.scan = False
  for m in ("image", "text"):
    unrolled.encoders[m].scan = False
  here = hf_params.here_shapes(unrolled)
  flat = flax.traverse_util.flatten_dict(
    layers.unstack_layers(jax.tree.map(np.asarray, flax.linen.unbox(params))), sep="/"
  )
  missing = sorted(set(here) - set(flat))
  if missing:
    raise common.PretrainedError(
      f"The params lack {missing[0]!r} ({len(missing)} missing) of "
      f"the model config's {ARCHITECTURES[kind]}."
    )
  for key, shape in here.items():
    if tuple(flat[key].shape) != shape:
      raise common.PretrainedError(
        f"Param {key} has shape {tuple(flat[key].shape)}; the model config gives {shape}."
      )
  cls_posemb = bool(getattr(model.encoders["image"], "cls_posemb", False))
  out = hf_params.params_to_hf(
    flat,
    here,
    kind=kind,
    image_depth=dims["image"]["depth"],
    text_depth=dims["text"]["depth"],
    cls_posemb=cls_posemb,
  )
  preprocessor = _preprocessor(kind, data) if data is not None else None
  directory = os.fspath(path)
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, CONFIG), "w") as f:
    json.dump(_hf_config(model_config, kind, dims), f, indent=2)
  weights_lib.save_safetensors(out, os.path.join(directory, WEIGHTS))
  if data is not None:
    with open(os.path.join(directory, PREPROCESSOR), "w") as f:
      json.dump(preprocessor, f, indent=2)
    _copy_tokenizer(kind, str(data.tokenizer), directory)
