"""Fixtures of the Hugging Face family, made by transformers itself (run with the peers' venv).

`make(out_dir)` builds a tiny random `CLIPModel` and `SiglipModel`, saves each with
`save_pretrained` (as the hub serves them), and stores the embeddings transformers computes for
fixed inputs in `expected.npz`; it also counts the parameters of full-size configs on the meta
device (`param_counts_hf.json`). Nothing here imports `contrastive`: the expected values come
from transformers alone.
"""

from __future__ import annotations

import json
import os

import numpy as np

IMAGE, PATCH, WIDTH, VOCAB, MAX_LEN = 16, 4, 32, 64, 16
TINY = dict(hidden_size=WIDTH, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)

CLIP_TINY = dict(
  projection_dim=24,
  logit_scale_init_value=2.6592,
  text_config=dict(
    **TINY,
    vocab_size=VOCAB,
    max_position_embeddings=MAX_LEN,
    hidden_act="quick_gelu",
    eos_token_id=2,
    bos_token_id=0,
    pad_token_id=1,
  ),
  vision_config=dict(**TINY, image_size=IMAGE, patch_size=PATCH, hidden_act="quick_gelu"),
)
SIGLIP_TINY = dict(
  text_config=dict(
    **TINY, vocab_size=VOCAB, max_position_embeddings=MAX_LEN, hidden_act="gelu_pytorch_tanh"
  ),
  vision_config=dict(**TINY, image_size=IMAGE, patch_size=PATCH, hidden_act="gelu_pytorch_tanh"),
)
# The first position of this id is where a non-legacy CLIP config pools (ids above it occur).
CLIP_EOS = 7

# Full-size configs after the hub's `config.json` of each model (what the parameter counts use).
_CLIP_B = dict(
  vocab_size=49408,
  hidden_size=512,
  intermediate_size=2048,
  num_hidden_layers=12,
  num_attention_heads=8,
  max_position_embeddings=77,
)
_CLIP_L = dict(_CLIP_B, hidden_size=768, intermediate_size=3072, num_attention_heads=12)
_VIT_B = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)
_VIT_L = dict(
  hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16
)
_SO400M = dict(
  hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16
)
FULL_SIZE = {
  "openai/clip-vit-base-patch32": dict(
    model_type="clip",
    projection_dim=512,
    text_config=dict(_CLIP_B, eos_token_id=2),
    vision_config=dict(_VIT_B, patch_size=32, image_size=224),
  ),
  "openai/clip-vit-base-patch16": dict(
    model_type="clip",
    projection_dim=512,
    text_config=dict(_CLIP_B, eos_token_id=2),
    vision_config=dict(_VIT_B, patch_size=16, image_size=224),
  ),
  "openai/clip-vit-large-patch14": dict(
    model_type="clip",
    projection_dim=768,
    text_config=dict(_CLIP_L, eos_token_id=2),
    vision_config=dict(_VIT_L, patch_size=14, image_size=224),
  ),
  "openai/clip-vit-large-patch14-336": dict(
    model_type="clip",
    projection_dim=768,
    text_config=dict(_CLIP_L, eos_token_id=2),
    vision_config=dict(_VIT_L, patch_size=14, image_size=336),
  ),
  "laion/CLIP-ViT-H-14-laion2B-s32B-b79K": dict(
    model_type="clip",
    projection_dim=1024,
    text_config=dict(
      _CLIP_B,
      hidden_size=1024,
      intermediate_size=4096,
      num_hidden_layers=24,
      num_attention_heads=16,
      hidden_act="gelu",
    ),
    vision_config=dict(
      hidden_size=1280,
      intermediate_size=5120,
      num_hidden_layers=32,
      num_attention_heads=16,
      patch_size=14,
      image_size=224,
      hidden_act="gelu",
    ),
  ),
  "google/siglip-base-patch16-224": dict(
    model_type="siglip",
    text_config=dict(_VIT_B, vocab_size=32000, max_position_embeddings=64),
    vision_config=dict(_VIT_B, patch_size=16, image_size=224),
  ),
  "google/siglip-base-patch16-384": dict(
    model_type="siglip",
    text_config=dict(_VIT_B, vocab_size=32000, max_position_embeddings=64),
    vision_config=dict(_VIT_B, patch_size=16, image_size=384),
  ),
  "google/siglip-large-patch16-256": dict(
    model_type="siglip",
    text_config=dict(_VIT_L, vocab_size=32000, max_position_embeddings=64),
    vision_config=dict(_VIT_L, patch_size=16, image_size=256),
  ),
  "google/siglip-so400m-patch14-384": dict(
    model_type="siglip",
    text_config=dict(_SO400M, vocab_size=32000, max_position_embeddings=64),
    vision_config=dict(_SO400M, patch_size=14, image_size=384),
  ),
  "google/siglip2-base-patch16-224": dict(
    model_type="siglip",
    text_config=dict(_VIT_B, vocab_size=256000, max_position_embeddings=64),
    vision_config=dict(_VIT_B, patch_size=16, image_size=224),
  ),
}


def inputs() -> dict[str, np.ndarray]:
  """Fixed images `[2, H, W, 3]` (normalized) and ids `[3, MAX_LEN]`, with ids above CLIP_EOS."""
  rng = np.random.default_rng(18)
  images = rng.standard_normal((2, IMAGE, IMAGE, 3)).astype(np.float32)
  ids = np.full((3, MAX_LEN), 1, np.int64)  # HF's tokenizers pad with a real id
  for row, length in enumerate((5, 9, MAX_LEN)):
    ids[row, :length] = rng.integers(3, VOCAB - 1, length)
    ids[row, min(length, MAX_LEN - 1)] = VOCAB - 1  # the largest id: legacy CLIP pooling
    ids[row, length // 2] = CLIP_EOS
  return {"images": images, "ids": ids.astype(np.int32)}


def embeddings(model, x, torch) -> dict[str, np.ndarray]:
  """What a transformers CLIPModel / SiglipModel computes for `inputs()`: the image and text
  embeddings, the scale and (SigLIP) the bias."""
  pixels = torch.from_numpy(x["images"]).permute(0, 3, 1, 2)
  ids = torch.from_numpy(x["ids"].astype(np.int64))
  with torch.no_grad():
    out = model(input_ids=ids, pixel_values=pixels)
  scale = model.logit_scale.detach().exp().reshape(()).numpy()
  bias = getattr(model, "logit_bias", None)
  result = {
    "image": out.image_embeds.numpy(),
    "text": out.text_embeds.numpy(),
    "scale": np.asarray(scale, np.float32),
  }
  if bias is not None:
    result["bias"] = bias.detach().reshape(()).numpy()
  return result


def randomize(model, torch, seed: int) -> None:
  """Draws every tensor of `model` (transformers' init leaves LayerNorms at 1/0 and biases at 0),
  so a wrong mapping of any tensor shows."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name in ("logit_scale", "logit_bias"):
        continue
      std = 0.02 if "embedding" in name else 0.2
      p.copy_(
        torch.randn(p.shape, generator=gen) * std
        + (1.0 if "norm" in name and name.endswith("weight") else 0.0)
      )
    model.logit_scale.fill_(2.3)
    if hasattr(model, "logit_bias"):
      model.logit_bias.fill_(-4.5)


def param_counts(transformers, torch) -> dict[str, int]:
  counts = {}
  for name, config in FULL_SIZE.items():
    cls, cfg_cls = (
      (transformers.CLIPModel, transformers.CLIPConfig)
      if config["model_type"] == "clip"
      else (transformers.SiglipModel, transformers.SiglipConfig)
    )
    kw = {k: v for k, v in config.items() if k != "model_type"}
    with torch.device("meta"):
      model = cls(cfg_cls(**kw))
    counts[name] = int(sum(p.numel() for p in model.parameters()))
  return counts


def make(out_dir: str) -> None:
  import sys

  sys.path.insert(
    0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
  )
  from tests import peers

  peers.install_torchvision_stand_in()
  import torch
  import transformers

  x = inputs()
  for kind, cls, cfg_cls, config, seed in (
    ("clip", transformers.CLIPModel, transformers.CLIPConfig, CLIP_TINY, 0),
    ("siglip", transformers.SiglipModel, transformers.SiglipConfig, SIGLIP_TINY, 1),
  ):
    torch.manual_seed(seed)
    model = cls(cfg_cls(**config)).eval()
    randomize(model, torch, seed)
    directory = os.path.join(out_dir, f"hf_{kind}")
    model.save_pretrained(directory)  # config.json + model.safetensors, as on the hub
    expected = {f"expected_{k}": v for k, v in embeddings(model, x, torch).items()}
    if kind == "clip":  # the same weights with a non-legacy eos_token_id: first-eos pooling
      config_eos = json.loads(json.dumps(config))
      config_eos["text_config"]["eos_token_id"] = CLIP_EOS
      model_eos = cls(cfg_cls(**config_eos)).eval()
      model_eos.load_state_dict(model.state_dict())
      expected.update({f"eos_{k}": v for k, v in embeddings(model_eos, x, torch).items()})
    np.savez(os.path.join(directory, "expected.npz"), **x, **expected)
  with open(os.path.join(out_dir, "param_counts_hf.json"), "w") as f:
    json.dump(
      dict(
        transformers=transformers.__version__,
        configs=FULL_SIZE,
        counts=param_counts(transformers, torch),
      ),
      f,
      indent=1,
    )
    f.write("\n")


if __name__ == "__main__":
  make(os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures"))
