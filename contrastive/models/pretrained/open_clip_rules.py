"""The pieces of open_clip's tensor mapping: a `Rule` per tensor (or group), both ways.

A `Rule` names open_clip's source keys and this library's target paths, with `load` (source
arrays to target arrays) and `save` (its inverse, exact to the bit). The helpers below build the
rules of the layouts open_clip's towers share (Linear, LayerNorm, `nn.MultiheadAttention`'s
fused or separate projections, residual blocks, the patch convolution, the class token);
`open_clip.rules` (CLIP, SigLIP) and `open_clip_coca.rules` (CoCa) assemble them.

| open_clip                        | here                             | transform              |
| -------------------------------- | -------------------------------- | ---------------------- |
| Linear `*.weight` `[o, i]`       | `*/kernel` `[i, o]`              | transposed             |
| `attn.in_proj_weight` `[3w, w]`  | `attn/{query,key,value}/kernel`  | split, `W.T` reshaped  |
| `attn.q_proj_weight` `[w, d]`    | `attn/query/kernel` `[d, h, w/h]` | `W.T` reshaped        |
| `attn.out_proj.weight` `[w, w]`  | `attn/out/kernel` `[h, w/h, w]`  | `W.T` reshaped         |
| `conv1.weight` `[w, 3, p, p]`    | `embedding/kernel` `[p, p, 3, w]` | transposed            |
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np


class Rule(NamedTuple):
  """Source keys to target paths: `load(*source arrays)` gives the targets, `save` inverts it."""

  sources: tuple[str, ...]
  targets: tuple[str, ...]
  load: Callable[..., tuple[np.ndarray, ...]]
  save: Callable[..., tuple[np.ndarray, ...]]


def copy(
  src: str, dst: str, here: tuple[int, ...] | None = None, there: tuple[int, ...] | None = None
) -> Rule:
  """A tensor copied, reshaped to `here` on load and to `there` on save where given."""
  load = (lambda a: (a,)) if here is None else (lambda a: (a.reshape(here),))
  save = (lambda a: (a,)) if there is None else (lambda a: (a.reshape(there),))
  return Rule((src,), (dst,), load, save)


def linear(src: str, dst: str, *, bias: bool = True) -> list[Rule]:
  """A torch Linear (`weight` `[o, i]`, `bias`) as a Dense (`kernel` `[i, o]`, `bias`)."""
  rules = [Rule((f"{src}.weight",), (f"{dst}/kernel",), lambda a: (a.T,), lambda a: (a.T,))]
  return rules + ([copy(f"{src}.bias", f"{dst}/bias")] if bias else [])


def norm(src: str, dst: str) -> list[Rule]:
  """A LayerNorm: `weight`, `bias` as `scale`, `bias`."""
  return [copy(f"{src}.weight", f"{dst}/scale"), copy(f"{src}.bias", f"{dst}/bias")]


def fused(weight: str, bias: str, dst: str, names: tuple[str, ...], heads: int) -> list[Rule]:
  """A fused `[n*w, w]` projection (and its bias) split into `n` `[w, heads, w/heads]` kernels."""
  n = len(names)

  def load_w(w):
    width = w.shape[1]
    return tuple(part.T.reshape(width, heads, width // heads) for part in np.split(w, n))

  def save_w(*kernels):
    return (np.concatenate([k.reshape(k.shape[0], -1).T for k in kernels]),)

  def load_b(b):
    return tuple(part.reshape(heads, -1) for part in np.split(b, n))

  def save_b(*biases):
    return (np.concatenate([b.reshape(-1) for b in biases]),)

  return [
    Rule((weight,), tuple(f"{dst}/{m}/kernel" for m in names), load_w, save_w),
    Rule((bias,), tuple(f"{dst}/{m}/bias" for m in names), load_b, save_b),
  ]


def separate(src: str, dst: str, heads: int) -> list[Rule]:
  """`nn.MultiheadAttention` with `kdim`/`vdim` other than its width: `{q,k,v}_proj_weight`
  `[w, d]` each (`d` the keys' width) and the fused `in_proj_bias` `[3w]`."""

  def load(w):
    return (w.T.reshape(w.shape[1], heads, w.shape[0] // heads),)

  def save(k):
    return (k.reshape(k.shape[0], -1).T,)

  rules = [
    Rule((f"{src}.{p}_proj_weight",), (f"{dst}/{m}/kernel",), load, save)
    for p, m in (("q", "query"), ("k", "key"), ("v", "value"))
  ]
  names = ("query", "key", "value")
  return rules + fused(f"{src}.in_proj_weight", f"{src}.in_proj_bias", dst, names, heads)[1:]


def out_proj(src: str, dst: str, heads: int) -> list[Rule]:
  """An attention's output Linear `[w, w]` as `out/kernel` `[heads, w/heads, w]`."""
  load = lambda w: (w.T.reshape(heads, w.shape[1] // heads, w.shape[0]),)
  save = lambda k: (k.reshape(-1, k.shape[-1]).T,)
  return [
    Rule((f"{src}.weight",), (f"{dst}/kernel",), load, save),
    copy(f"{src}.bias", f"{dst}/bias"),
  ]


def attention(src: str, dst: str, heads: int) -> list[Rule]:
  """open_clip's `ResidualAttentionBlock.attn` (a square `nn.MultiheadAttention`)."""
  return fused(
    f"{src}.in_proj_weight", f"{src}.in_proj_bias", dst, ("query", "key", "value"), heads
  ) + out_proj(f"{src}.out_proj", f"{dst}/out", heads)


def block(src: str, dst: str, heads: int, *, timm: bool = False) -> list[Rule]:
  """One pre-LayerNorm residual block (open_clip's `ResidualAttentionBlock` or timm's `Block`)
  as a `layers.EncoderBlock` (`norm1`, `attn`, `norm2`, `mlp/fc1`, `mlp/fc2`)."""
  names = (
    ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")
    if timm
    else ("ln_1", "attn.in_proj_", "attn.out_proj", "ln_2", "mlp.c_fc", "mlp.c_proj")
  )
  ln1, qkv, out, ln2, fc1, fc2 = names
  weight, bias = (
    (f"{src}.{qkv}.weight", f"{src}.{qkv}.bias")
    if timm
    else (f"{src}.{qkv}weight", f"{src}.{qkv}bias")
  )
  rules = norm(f"{src}.{ln1}", f"{dst}/norm1")
  rules += fused(weight, bias, f"{dst}/attn", ("query", "key", "value"), heads)
  rules += out_proj(f"{src}.{out}", f"{dst}/attn/out", heads)
  rules += norm(f"{src}.{ln2}", f"{dst}/norm2")
  return rules + linear(f"{src}.{fc1}", f"{dst}/mlp/fc1") + linear(f"{src}.{fc2}", f"{dst}/mlp/fc2")


def blocks(src: str, dst: str, depth: int, heads: int, *, timm: bool) -> list[Rule]:
  """`depth` blocks `{src}.{i}` as `{dst}/encoderblock_{i}` (a `layers.Encoder`)."""
  return [
    rule
    for i in range(depth)
    for rule in block(f"{src}.{i}", f"{dst}/encoderblock_{i}", heads, timm=timm)
  ]


def conv(src: str, dst: str) -> Rule:
  """The patch convolution `[w, c, p, p]` as a flax Conv kernel `[p, p, c, w]`."""
  return Rule(
    (src,), (dst,), lambda w: (w.transpose(2, 3, 1, 0),), lambda k: (k.transpose(3, 2, 0, 1),)
  )


def class_token(cls_key: str, pos_key: str, dst: str) -> Rule:
  """CLIP's class token and its position row folded into `cls` (a ViT with `cls_posemb=False`):
  `cls + pos[0]` and the patch rows `pos[1:]`."""

  def load(cls, pos):
    return (cls + pos[0])[None, None], pos[None, 1:]

  def save(cls, pos):  # x + (-0.0) == x bit for bit, so loading this back gives `cls` exactly
    return cls[0, 0], np.concatenate([np.full((1, pos.shape[-1]), -0.0, pos.dtype), pos[0]])

  return Rule((cls_key, pos_key), (f"{dst}/cls", f"{dst}/pos_embedding"), load, save)
