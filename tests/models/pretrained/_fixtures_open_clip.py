"""Fixtures of the open_clip family, made by open_clip itself (run with the peers' venv).

`make(out_dir)` builds three tiny random open_clip models, saves each as open_clip saves them for
the hub (`open_clip_config.json` with `model_cfg` and `preprocess_cfg`, weights by
`safetensors.torch.save_file` or `torch.save`), and stores what open_clip computes for fixed
inputs in `expected.npz`:

- `open_clip_clip/`: a `CLIP` with QuickGELU, `open_clip_model.safetensors`;
- `open_clip_bin/`: a `CLIP` with GELU and `final_ln_after_pool`, as
  `open_clip_pytorch_model.bin` holding `{"state_dict": {"module." + key: ...}}` (a DDP
  training checkpoint);
- `open_clip_siglip/`: a `CustomTextCLIP` with a timm SigLIP trunk (`TINY_TRUNK`, registered
  with timm here and with `open_clip.TIMM_TRUNKS` by the tests), MAP head, bidirectional text
  tower pooling the last position, projection bias, `logit_bias`.

It also counts the parameters of every open_clip model name the library ships, CoCa's included
(`open_clip_param_counts.json`, built on the meta device) and keeps open_clip's `model_cfg` of
each, so the tests check the library's table against open_clip's JSON. Nothing here imports
`contrastive` (this venv has no jax): the expected values come from open_clip alone.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..")))

from tests import peers

TINY_TRUNK = "vit_pico_patch4_siglip_16"
# (width, depth, mlp_dim, num_heads, patch_size, image_size, act), as open_clip.TIMM_TRUNKS has it.
TINY_TRUNK_DIMS = (32, 2, 64, 2, 4, 16, "gelu_tanh")
IMAGE, TEXT_LEN, VOCAB, BATCH = 16, 8, 64, 4

_TEXT = dict(context_length=TEXT_LEN, vocab_size=VOCAB, width=16, heads=2, layers=2, mlp_ratio=2.0)
CONFIGS = {
  "open_clip_clip": dict(
    embed_dim=16,
    quick_gelu=True,
    vision_cfg=dict(
      image_size=IMAGE, layers=2, width=32, head_width=16, mlp_ratio=2.0, patch_size=4
    ),
    text_cfg=_TEXT,
  ),
  "open_clip_bin": dict(
    embed_dim=16,
    vision_cfg=dict(
      image_size=IMAGE,
      layers=2,
      width=32,
      head_width=16,
      mlp_ratio=2.0,
      patch_size=4,
      final_ln_after_pool=True,
    ),
    text_cfg=_TEXT,
  ),
  "open_clip_siglip": dict(
    embed_dim=32,
    init_logit_bias=-10,
    custom_text=True,
    vision_cfg=dict(
      image_size=IMAGE,
      timm_model_name=TINY_TRUNK,
      timm_model_pretrained=False,
      timm_pool="map",
      timm_proj="none",
    ),
    text_cfg=dict(
      _TEXT,
      hf_tokenizer_name="timm/ViT-B-16-SigLIP",
      tokenizer_kwargs=dict(clean="canonicalize"),
      no_causal_mask=True,
      proj_bias=True,
      pool_type="last",
      norm_kwargs=dict(eps=1e-6),
    ),
  ),
}
PREPROCESS = {
  "open_clip_clip": dict(
    mean=[0.48145466, 0.4578275, 0.40821073],
    std=[0.26862954, 0.26130258, 0.27577711],
    interpolation="bicubic",
    resize_mode="shortest",
  ),
  "open_clip_bin": dict(
    mean=[0.48145466, 0.4578275, 0.40821073], std=[0.26862954, 0.26130258, 0.27577711]
  ),
  "open_clip_siglip": dict(
    mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5], interpolation="bicubic", resize_mode="squash"
  ),
}


def register_tiny_trunk() -> None:
  """Registers `TINY_TRUNK` with timm: a SigLIP-shaped ViT small enough for a fixture."""
  import timm
  from timm.models import register_model
  from timm.models.vision_transformer import VisionTransformer

  if timm.is_model(TINY_TRUNK):
    return
  width, depth, mlp_dim, heads, patch, size, _ = TINY_TRUNK_DIMS

  def build(pretrained=False, **kwargs):
    del pretrained
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
      kwargs.pop(key, None)
    args = dict(
      img_size=size,
      patch_size=patch,
      embed_dim=width,
      depth=depth,
      num_heads=heads,
      mlp_ratio=mlp_dim / width,
      class_token=False,
      global_pool="map",
      act_layer="gelu_tanh",
    )
    return VisionTransformer(**dict(args, **kwargs))

  build.__name__ = TINY_TRUNK
  register_model(build)


def build_model(cfg: dict):
  """An open_clip model of a `model_cfg` (CLIP or CustomTextCLIP), on the CPU."""
  import open_clip  # installed by peers.import_open_clip

  cfg = dict(cfg)
  custom = cfg.pop("custom_text", False)
  return (open_clip.CustomTextCLIP if custom else open_clip.CLIP)(**cfg)


def randomize(model, seed: int) -> None:
  """Every parameter random (LayerNorms around 1 and 0), so that no mapping hides behind an init."""
  import torch

  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=generator)
      if name in ("logit_scale", "logit_bias"):
        p.copy_(torch.tensor(2.3 if name == "logit_scale" else -4.7).reshape(p.shape))
      elif p.ndim == 1 and ("norm" in name or "ln_" in name) and name.endswith("weight"):
        p.copy_(1.0 + 0.1 * noise)
      elif p.ndim == 1:
        p.copy_(0.1 * noise)
      else:
        p.copy_(noise * p.shape[-1] ** -0.5)


def inputs(seed: int, *, eot: bool):
  """`(images [b, 3, H, W], tokens [b, L])`: CLIP-style rows end with the largest id (the
  end-of-text token), one has id 0 inside its text; SigLIP-style rows are padded with id 1."""
  rng = np.random.default_rng(seed)
  images = rng.standard_normal((BATCH, 3, IMAGE, IMAGE)).astype(np.float32)
  tokens = np.zeros((BATCH, TEXT_LEN), np.int64) if eot else np.ones((BATCH, TEXT_LEN), np.int64)
  for row, length in zip(tokens, (TEXT_LEN - 1, 3, 5, 1)):
    row[:length] = rng.integers(2, VOCAB - 1, length)
    if eot:
      row[length] = VOCAB - 1
  tokens[2, 1] = 0  # CLIP's "!" is id 0: it is text, not padding
  return images, tokens


def embeddings(model, images, tokens) -> dict[str, np.ndarray]:
  import torch

  model.eval()
  with torch.no_grad():
    image = model.encode_image(torch.from_numpy(images), normalize=True)
    text = model.encode_text(torch.from_numpy(tokens), normalize=True)
    scale = model.logit_scale.exp()
    bias = model.logit_bias if model.logit_bias is not None else torch.tensor(np.nan)
  return dict(
    image_emb=image.numpy(),
    text_emb=text.numpy(),
    scale=np.float32(scale.item()),
    bias=np.float32(bias.item()),
  )


def save_hub_layout(model, cfg: dict, preprocess: dict, directory: str, *, bin_: bool) -> None:
  """As open_clip's `push_to_hf_hub.save_for_hf` writes a model (without a tokenizer)."""
  import safetensors.torch
  import torch

  os.makedirs(directory, exist_ok=True)
  state = model.state_dict()
  if bin_:
    torch.save(
      {"epoch": 1, "state_dict": {f"module.{k}": v for k, v in state.items()}},
      os.path.join(directory, "open_clip_pytorch_model.bin"),
    )
  else:
    safetensors.torch.save_file(state, os.path.join(directory, "open_clip_model.safetensors"))
  with open(os.path.join(directory, "open_clip_config.json"), "w") as f:
    json.dump(dict(model_cfg=cfg, preprocess_cfg=preprocess), f, indent=2)


# The open_clip names the library ships (contrastive/models/pretrained/open_clip_configs.py).
NAMES = [
  "ViT-S-32",
  "ViT-S-16",
  "ViT-M-32",
  "ViT-M-16",
  "ViT-B-32",
  "ViT-B-32-256",
  "ViT-B-32-plus-256",
  "ViT-B-16",
  "ViT-B-16-plus",
  "ViT-B-16-plus-240",
  "ViT-L-14",
  "ViT-L-14-280",
  "ViT-L-14-336",
  "ViT-L-16",
  "ViT-L-16-320",
  "ViT-H-14",
  "ViT-H-14-378",
  "ViT-H-16",
  "ViT-g-14",
  "ViT-bigG-14",
  "ViT-e-14",
  *[
    f"{n}-quickgelu"
    for n in (
      "ViT-B-32",
      "ViT-B-16",
      "ViT-L-14",
      "ViT-L-14-336",
      "ViT-H-14",
      "ViT-H-14-378",
      "ViT-bigG-14",
    )
  ],
  "ViT-B-16-SigLIP",
  "ViT-B-16-SigLIP-256",
  "ViT-B-16-SigLIP-384",
  "ViT-B-16-SigLIP-512",
  "ViT-B-16-SigLIP-i18n-256",
  "ViT-L-16-SigLIP-256",
  "ViT-L-16-SigLIP-384",
  "ViT-SO400M-14-SigLIP",
  "ViT-SO400M-14-SigLIP-378",
  "ViT-SO400M-14-SigLIP-384",
  "ViT-SO400M-16-SigLIP-i18n-256",
  "ViT-B-16-SigLIP2",
  "ViT-B-16-SigLIP2-256",
  "ViT-B-16-SigLIP2-384",
  "ViT-B-16-SigLIP2-512",
  "ViT-B-32-SigLIP2-256",
  "ViT-L-16-SigLIP2-256",
  "ViT-L-16-SigLIP2-384",
  "ViT-L-16-SigLIP2-512",
  "ViT-SO400M-14-SigLIP2",
  "ViT-SO400M-14-SigLIP2-378",
  "ViT-SO400M-16-SigLIP2-256",
  "ViT-SO400M-16-SigLIP2-384",
  "ViT-SO400M-16-SigLIP2-512",
  "ViT-gopt-16-SigLIP2-256",
  "ViT-gopt-16-SigLIP2-384",
  "coca_ViT-B-32",
  "coca_ViT-L-14",
]


def param_counts() -> dict:
  """`{name: {"params": count, "model_cfg": open_clip's config}}` for every name in `NAMES`."""
  import open_clip
  import torch

  out = {}
  for name in NAMES:
    with torch.device("meta"):
      model = open_clip.create_model(name, pretrained=None, device="meta")
    out[name] = dict(
      params=sum(p.numel() for p in model.parameters()), model_cfg=open_clip.get_model_config(name)
    )
  return out


def make(out_dir: str) -> None:
  peers.import_open_clip()
  import torch

  torch.manual_seed(0)
  register_tiny_trunk()
  for seed, (name, cfg) in enumerate(CONFIGS.items()):
    model = build_model(cfg)
    randomize(model, seed)
    images, tokens = inputs(seed, eot=not cfg["text_cfg"].get("no_causal_mask", False))
    directory = os.path.join(out_dir, name)
    save_hub_layout(model, cfg, PREPROCESS[name], directory, bin_=name.endswith("bin"))
    np.savez(
      os.path.join(directory, "expected.npz"),
      images=images.transpose(0, 2, 3, 1),
      tokens=tokens.astype(np.int32),
      **embeddings(model, images, tokens),
    )
  with open(os.path.join(out_dir, "open_clip_param_counts.json"), "w") as f:
    json.dump(param_counts(), f, indent=1, sort_keys=True)
