"""The tensors of a transformers `CLIPModel` / `SiglipModel` and this library's, both ways.

Every tensor but SigLIP's fused attention-pooling `in_proj` (split into query, key and value)
and CLIP's class token without a position row of its own is one rule: (key here, key in
transformers, transform), read one tensor at a time. See `hf.py` for the table.
"""

from __future__ import annotations

import math
from typing import Any

import flax
import jax
import numpy as np

from contrastive.models import config as model_config_lib
from contrastive.models.pretrained import common
from contrastive.models.pretrained import weights as weights_lib

_IGNORED_SUFFIXES = ("position_ids",)


def _contiguous(x) -> np.ndarray:
  """`x` as a C-ordered float32 array, copied only if needed (0-d stays 0-d, unlike numpy's
  `ascontiguousarray`)."""
  return np.array(x, dtype=np.float32, order="C", copy=None)


_CLS, _VPOS = "image/encoder/cls", "image/encoder/pos_embedding"
_HF_CLS = "vision_model.embeddings.class_embedding"
_HF_VPOS = "vision_model.embeddings.position_embedding.weight"

# kind: (HF shape from this library's shape, to this library's layout, to HF's layout)
_TRANSFORMS = {
  "copy": (lambda s: s, lambda x, s: x.reshape(s), lambda x, h: x.reshape(h)),
  "linear": (lambda s: s[::-1], lambda x, s: x.T, lambda x, h: x.T),
  "qkv": (
    lambda s: (s[1] * s[2], s[0]),
    lambda x, s: x.T.reshape(s),
    lambda x, h: x.reshape(x.shape[0], -1).T,
  ),
  "out": (
    lambda s: (s[2], s[0] * s[1]),
    lambda x, s: x.T.reshape(s),
    lambda x, h: x.reshape(-1, x.shape[-1]).T,
  ),
  "flat": (lambda s: (math.prod(s),), lambda x, s: x.reshape(s), lambda x, h: x.reshape(h)),
  "unbatch": (lambda s: s[1:], lambda x, s: x.reshape(s), lambda x, h: x.reshape(h)),
  "conv": (
    lambda s: (s[3], s[2], s[0], s[1]),
    lambda x, s: x.transpose(2, 3, 1, 0),
    lambda x, h: x.transpose(3, 2, 0, 1),
  ),
}


def _block_rules(here: str, hf: str) -> list[tuple[str, str, str]]:
  rules = []
  for ours, theirs in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
    rules += [
      (f"{here}/attn/{ours}/kernel", f"{hf}.self_attn.{theirs}.weight", "qkv"),
      (f"{here}/attn/{ours}/bias", f"{hf}.self_attn.{theirs}.bias", "flat"),
    ]
  rules += [
    (f"{here}/attn/out/kernel", f"{hf}.self_attn.out_proj.weight", "out"),
    (f"{here}/attn/out/bias", f"{hf}.self_attn.out_proj.bias", "copy"),
  ]
  for ours, theirs in (("norm1", "layer_norm1"), ("norm2", "layer_norm2")):
    rules += [
      (f"{here}/{ours}/scale", f"{hf}.{theirs}.weight", "copy"),
      (f"{here}/{ours}/bias", f"{hf}.{theirs}.bias", "copy"),
    ]
  for fc in ("fc1", "fc2"):
    rules += [
      (f"{here}/mlp/{fc}/kernel", f"{hf}.mlp.{fc}.weight", "linear"),
      (f"{here}/mlp/{fc}/bias", f"{hf}.mlp.{fc}.bias", "copy"),
    ]
  return rules


def _norm_rules(here: str, hf: str) -> list[tuple[str, str, str]]:
  return [(f"{here}/scale", f"{hf}.weight", "copy"), (f"{here}/bias", f"{hf}.bias", "copy")]


def _rules(
  kind: str, image_depth: int, text_depth: int, cls_posemb: bool = True
) -> list[tuple[str, str, str]]:
  """(here key, HF key, transform) for every tensor but SigLIP's fused `in_proj` (and CLIP's
  class token and position table when the class token has no position row of its own)."""
  img, txt = "image/encoder", "text/encoder"
  rules = [(_VPOS, _HF_VPOS, "unbatch")] if kind == "siglip" or cls_posemb else []
  if kind == "clip" and cls_posemb:
    rules.append((_CLS, _HF_CLS, "flat"))
  rules += [
    (f"{img}/embedding/kernel", "vision_model.embeddings.patch_embedding.weight", "conv"),
    (f"{txt}/embedding/embedding", "text_model.embeddings.token_embedding.weight", "copy"),
    (f"{txt}/pos_embedding", "text_model.embeddings.position_embedding.weight", "copy"),
  ]
  for i in range(image_depth):
    rules += _block_rules(f"{img}/transformer/encoderblock_{i}", f"vision_model.encoder.layers.{i}")
  for i in range(text_depth):
    rules += _block_rules(f"{txt}/transformer/encoderblock_{i}", f"text_model.encoder.layers.{i}")
  rules += _norm_rules(f"{img}/norm", "vision_model.post_layernorm")
  rules += _norm_rules(f"{txt}/norm", "text_model.final_layer_norm")
  if kind == "clip":
    rules += _norm_rules(f"{img}/norm_pre", "vision_model.pre_layrnorm")
    rules += [
      ("image/head/kernel", "visual_projection.weight", "linear"),
      ("text/head/kernel", "text_projection.weight", "linear"),
      ("log_scale", "logit_scale", "copy"),
    ]
  else:
    head = "vision_model.head"
    rules += [
      (f"{img}/embedding/bias", "vision_model.embeddings.patch_embedding.bias", "copy"),
      (f"{img}/map/probe", f"{head}.probe", "copy"),
      (f"{img}/map/attn/out/kernel", f"{head}.attention.out_proj.weight", "out"),
      (f"{img}/map/attn/out/bias", f"{head}.attention.out_proj.bias", "copy"),
      ("text/head/kernel", "text_model.head.weight", "linear"),
      ("text/head/bias", "text_model.head.bias", "copy"),
      ("log_scale", "logit_scale", "copy"),
      ("bias", "logit_bias", "copy"),
    ]
    rules += _norm_rules(f"{img}/map/norm", f"{head}.layernorm")
    for fc in ("fc1", "fc2"):
      rules += [
        (f"{img}/map/mlp/{fc}/kernel", f"{head}.mlp.{fc}.weight", "linear"),
        (f"{img}/map/mlp/{fc}/bias", f"{head}.mlp.{fc}.bias", "copy"),
      ]
  return rules


_MAP_QKV = tuple(
  f"image/encoder/map/attn/{n}/{p}" for p in ("kernel", "bias") for n in ("query", "key", "value")
)
_HF_IN_PROJ = (
  "vision_model.head.attention.in_proj_weight",
  "vision_model.head.attention.in_proj_bias",
)


def here_shapes(model_config) -> dict[str, tuple[int, ...]]:
  model = model_config_lib.make_model(model_config)
  abstract = jax.eval_shape(
    lambda: model.init(jax.random.key(0), model.dummy_batch(1), train=False)
  )
  params = flax.linen.unbox(abstract)["params"]
  return {k: tuple(v.shape) for k, v in flax.traverse_util.flatten_dict(params, sep="/").items()}


def _hf_shapes(kind: str, rules, here: dict[str, tuple[int, ...]]) -> dict[str, tuple]:
  """The shape of every tensor transformers keeps for this model."""
  shapes = {hf: _TRANSFORMS[t][0](here[ours]) for ours, hf, t in rules}
  if kind == "clip":
    if _HF_CLS not in shapes:  # a class token without its own position row
      w = here[_CLS][-1]
      shapes[_HF_CLS], shapes[_HF_VPOS] = (w,), (here[_VPOS][1] + 1, w)
    shapes["logit_scale"] = ()
  else:
    w = here["image/encoder/map/probe"][-1]
    shapes[_HF_IN_PROJ[0]], shapes[_HF_IN_PROJ[1]] = (3 * w, w), (3 * w,)
    shapes["logit_scale"] = shapes["logit_bias"] = (1,)
  return shapes


def _check_weights(
  weights: weights_lib.Weights, expected: dict[str, tuple], *, config_path: str, architecture: str
) -> None:
  found = {k for k in weights.keys() if not k.endswith(_IGNORED_SUFFIXES)}
  missing = sorted(set(expected) - found)
  extra = sorted(found - set(expected))
  if missing or extra:
    detail = []
    if missing:
      detail.append(f"{len(missing)} missing, e.g. {missing[0]!r}")
    if extra:
      detail.append(f"{len(extra)} unexpected, e.g. {extra[0]!r}")
    raise common.PretrainedError(
      f"{weights.path}: does not hold the {architecture} that {config_path} describes: "
      f"keys {'; '.join(detail)}."
    )
  for key, shape in expected.items():
    if tuple(weights.shape(key)) != tuple(shape):
      raise common.PretrainedError(
        f"{weights.file(key)}: {key} has shape {tuple(weights.shape(key))} but "
        f"{config_path} implies {tuple(shape)}; the config does not match the weights."
      )


def params_from_hf(
  weights: weights_lib.Weights, model_config, *, config_path: str, architecture: str
) -> dict[str, Any]:
  """This library's params from the tensors of a transformers checkpoint, read one by one."""
  kind = model_config.convention
  here = here_shapes(model_config)
  enc = model_config.encoders
  rules = _rules(kind, enc.image.depth, enc.text.depth)
  _check_weights(
    weights, _hf_shapes(kind, rules, here), config_path=config_path, architecture=architecture
  )
  flat = {
    ours: _contiguous(_TRANSFORMS[t][1](weights.pop(hf), here[ours])) for ours, hf, t in rules
  }
  if kind == "siglip":
    for value, names in zip((weights.pop(k) for k in _HF_IN_PROJ), (_MAP_QKV[:3], _MAP_QKV[3:])):
      for part, name in zip(np.split(value, 3, axis=0), names):
        flat[name] = _contiguous(part.T if part.ndim == 2 else part).reshape(here[name])
  return flax.traverse_util.unflatten_dict(flat, sep="/")


def params_to_hf(
  flat: dict[str, np.ndarray],
  here: dict[str, tuple[int, ...]],
  *,
  kind: str,
  image_depth: int,
  text_depth: int,
  cls_posemb: bool,
) -> dict[str, np.ndarray]:
  """transformers' tensors (by key) from this library's flat params (unrolled layers)."""
  rules = _rules(kind, image_depth, text_depth, cls_posemb)
  hf_shapes = _hf_shapes(kind, rules, here)
  f32 = lambda x: np.asarray(x, np.float32)
  out = {hf: _TRANSFORMS[t][2](f32(flat[ours]), hf_shapes[hf]) for ours, hf, t in rules}
  if kind == "clip" and not cls_posemb:
    pos = f32(flat[_VPOS])[0]
    out[_HF_CLS] = f32(flat[_CLS]).reshape(-1)
    # -0.0 is the identity of float addition, so class_embedding + row 0 is the class token.
    out[_HF_VPOS] = np.concatenate([np.full((1, pos.shape[-1]), -0.0, np.float32), pos])
  if kind == "siglip":
    out[_HF_IN_PROJ[0]] = np.concatenate(
      [f32(flat[k]).reshape(f32(flat[k]).shape[0], -1).T for k in _MAP_QKV[:3]]
    )
    out[_HF_IN_PROJ[1]] = np.concatenate([f32(flat[k]).reshape(-1) for k in _MAP_QKV[3:]])
  return {k: _contiguous(v.reshape(hf_shapes[k])) for k, v in out.items()}
