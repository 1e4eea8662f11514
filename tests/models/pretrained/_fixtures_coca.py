"""Fixtures of open_clip's CoCa, made by open_clip itself (run with the peers' venv).

`make(out_dir)` builds two tiny random `open_clip.CoCa` models from model configs in open_clip's
CoCa format (`CONFIGS`: `vision_cfg` with `attentional_pool`, `text_cfg` with `embed_cls`, a
`multimodal_cfg`), saves each as open_clip saves them for the hub (`open_clip_config.json` and
`open_clip_model.safetensors`), and stores what open_clip computes for fixed inputs in
`expected.npz`:

- `images` `[b, H, W, 3]`, `tokens` `[b, L]` int32 (start id, text, end id, then the pad id 0;
  one row has id 0 inside its text, which CoCa's text tower masks as padding);
- `image_emb`, `text_emb` `[b, embed_dim]`: `encode_image` / `encode_text` with `normalize=True`;
- `caption_logits` `[b, L-1, vocab]`: `model(image, text)["logits"]`;
- `image_tokens` `[b, n_queries-1, embed_dim]`: the attentional pooler's decoder tokens;
- `scale` (`logit_scale.exp()`), `bias` (NaN: CoCa has none), `params` (the parameter count).

The two models: `open_clip_coca`, whose ViT is wider than the embedding (the pooler's
`MultiheadAttention` then keeps separate `q_proj_weight`, `k_proj_weight`, `v_proj_weight`, as
`coca_ViT-B-32` and `coca_ViT-L-14` do), and `open_clip_coca_fused`, whose ViT width equals the
embedding (a fused `in_proj_weight`) and which uses QuickGELU. The parameter counts of open_clip's
published CoCa configs are recorded with the others by `_fixtures_open_clip.param_counts`
(`open_clip_param_counts.json`). Nothing here imports `contrastive`.
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..")))

from tests import peers
from tests.models.pretrained import _fixtures_open_clip as fx

IMAGE, TEXT_LEN, VOCAB, BATCH = 16, 8, 64, 4
SOT, EOT = VOCAB - 2, VOCAB - 1  # as CLIP's tokenizer: the two largest ids

CONFIGS = {
  "open_clip_coca": dict(
    embed_dim=16,
    vision_cfg=dict(
      image_size=IMAGE,
      layers=2,
      width=24,
      head_width=12,
      mlp_ratio=2.0,
      patch_size=4,
      attentional_pool=True,
      attn_pooler_queries=5,
      attn_pooler_heads=2,
      output_tokens=True,
    ),
    text_cfg=dict(
      context_length=TEXT_LEN,
      vocab_size=VOCAB,
      width=16,
      heads=2,
      layers=2,
      mlp_ratio=2.0,
      embed_cls=True,
      output_tokens=True,
    ),
    multimodal_cfg=dict(
      context_length=TEXT_LEN, vocab_size=VOCAB, width=16, heads=2, layers=2, attn_pooler_heads=2
    ),
    custom_text=True,
  ),
  "open_clip_coca_fused": dict(
    embed_dim=16,
    quick_gelu=True,
    vision_cfg=dict(
      image_size=IMAGE,
      layers=1,
      width=16,
      head_width=8,
      mlp_ratio=2.0,
      patch_size=8,
      attentional_pool=True,
      attn_pooler_queries=3,
      attn_pooler_heads=4,
      output_tokens=True,
    ),
    text_cfg=dict(
      context_length=TEXT_LEN,
      vocab_size=VOCAB,
      width=16,
      heads=4,
      layers=1,
      embed_cls=True,
      output_tokens=True,
    ),
    multimodal_cfg=dict(
      context_length=TEXT_LEN, vocab_size=VOCAB, width=16, heads=4, layers=1, attn_pooler_heads=4
    ),
    custom_text=True,
  ),
}
PREPROCESS = dict(
  mean=[0.48145466, 0.4578275, 0.40821073],
  std=[0.26862954, 0.26130258, 0.27577711],
  interpolation="bicubic",
  resize_mode="shortest",
)


def build_model(cfg: dict):
  """An `open_clip.CoCa` of a CoCa `model_cfg`, on the CPU (as `create_model` builds it)."""
  import open_clip  # installed by peers.import_open_clip

  cfg = dict(cfg)
  cfg.pop("custom_text", None)
  return open_clip.CoCa(**cfg)


def inputs(seed: int):
  """`(images [b, 3, H, W], tokens [b, L])`: rows `[SOT, text..., EOT, 0, ...]` of several
  lengths (one fills the context), one with id 0 inside its text."""
  rng = np.random.default_rng(seed)
  images = rng.standard_normal((BATCH, 3, IMAGE, IMAGE)).astype(np.float32)
  tokens = np.zeros((BATCH, TEXT_LEN), np.int64)
  for row, length in zip(tokens, (TEXT_LEN - 2, 2, 4, 0)):
    row[0] = SOT
    row[1 : 1 + length] = rng.integers(1, SOT, length)
    row[1 + length] = EOT
  tokens[2, 2] = 0  # CLIP's "!" is id 0, which CoCa's text tower takes for padding
  return images, tokens


def outputs(model, images, tokens) -> dict[str, np.ndarray]:
  """What open_clip computes: unit embeddings, caption logits, the pooler's tokens, the scale."""
  import torch

  model.eval()
  with torch.no_grad():
    image_t, text_t = torch.from_numpy(images), torch.from_numpy(tokens)
    out = model(image_t, text_t)
    _, image_tokens = model._encode_image(image_t)
    return dict(
      image_emb=model.encode_image(image_t, normalize=True).numpy(),
      text_emb=model.encode_text(text_t, normalize=True).numpy(),
      caption_logits=out["logits"].numpy(),
      image_tokens=image_tokens.numpy(),
      scale=np.float32(model.logit_scale.exp().item()),
      bias=np.float32(np.nan),
      params=np.int64(sum(p.numel() for p in model.parameters())),
    )


def make(out_dir: str) -> None:
  peers.import_open_clip()
  import torch

  torch.manual_seed(0)
  for seed, (name, cfg) in enumerate(CONFIGS.items()):
    model = build_model(cfg)
    fx.randomize(model, 10 + seed)
    images, tokens = inputs(10 + seed)
    directory = os.path.join(out_dir, name)
    fx.save_hub_layout(model, cfg, PREPROCESS, directory, bin_=False)
    np.savez(
      os.path.join(directory, "expected.npz"),
      images=images.transpose(0, 2, 3, 1),
      tokens=tokens.astype(np.int32),
      **outputs(model, images, tokens),
    )
