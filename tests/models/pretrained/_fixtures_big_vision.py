"""A big_vision SigLIP `.npz` fixture, with the embeddings transformers computes for its weights.

`make(out_dir)` draws a tiny random `SiglipModel` (transformers), writes its weights in
big_vision's published layout (`params/img/...`, `params/txt/...`, `params/t`, `params/b`, blocks
scanned into one `encoderblock` with the layers on axis 0: the key names of
`big_vision/models/vit.py` and `proj/image_text/text_transformer.py`, the reverse of
transformers' `convert_siglip_to_hf.py`), and stores what the `SiglipModel` gives for fixed
inputs in `expected.npz`. Nothing here imports `contrastive`. Run with the peers' venv.
"""

from __future__ import annotations

import os

import numpy as np

try:
  from tests.models.pretrained import _fixtures_hf
except ImportError:  # run as a script
  import _fixtures_hf  # type: ignore

DEPTH = _fixtures_hf.TINY["num_hidden_layers"]
HEADS = _fixtures_hf.TINY["num_attention_heads"]


def _block(sd, hf: str, w: int) -> dict[str, np.ndarray]:
  """One transformer layer in big_vision's names (flax kernels: `[in, out]`, heads split)."""
  d = w // HEADS
  out = {
    "LayerNorm_0/scale": sd[f"{hf}.layer_norm1.weight"],
    "LayerNorm_0/bias": sd[f"{hf}.layer_norm1.bias"],
    "LayerNorm_1/scale": sd[f"{hf}.layer_norm2.weight"],
    "LayerNorm_1/bias": sd[f"{hf}.layer_norm2.bias"],
  }
  for bv, proj in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
    out[f"MultiHeadDotProductAttention_0/{bv}/kernel"] = sd[
      f"{hf}.self_attn.{proj}.weight"
    ].T.reshape(w, HEADS, d)
    out[f"MultiHeadDotProductAttention_0/{bv}/bias"] = sd[f"{hf}.self_attn.{proj}.bias"].reshape(
      HEADS, d
    )
  out["MultiHeadDotProductAttention_0/out/kernel"] = sd[
    f"{hf}.self_attn.out_proj.weight"
  ].T.reshape(HEADS, d, w)
  out["MultiHeadDotProductAttention_0/out/bias"] = sd[f"{hf}.self_attn.out_proj.bias"]
  for i, fc in enumerate(("fc1", "fc2")):
    out[f"MlpBlock_0/Dense_{i}/kernel"] = sd[f"{hf}.mlp.{fc}.weight"].T
    out[f"MlpBlock_0/Dense_{i}/bias"] = sd[f"{hf}.mlp.{fc}.bias"]
  return out


def _scanned(sd, hf: str, w: int) -> dict[str, np.ndarray]:
  layers = [_block(sd, f"{hf}.{i}", w) for i in range(DEPTH)]
  return {k: np.stack([layer[k] for layer in layers]) for k in layers[0]}


def to_big_vision(sd: dict[str, np.ndarray], w: int) -> dict[str, np.ndarray]:
  """A SiglipModel state_dict (numpy) as big_vision's flattened two-tower params."""
  d = w // HEADS
  head = "vision_model.head"
  q, k, v = np.split(sd[f"{head}.attention.in_proj_weight"], 3)
  qb, kb, vb = np.split(sd[f"{head}.attention.in_proj_bias"], 3)
  img = {
    "embedding/kernel": sd["vision_model.embeddings.patch_embedding.weight"].transpose(2, 3, 1, 0),
    "embedding/bias": sd["vision_model.embeddings.patch_embedding.bias"],
    "pos_embedding": sd["vision_model.embeddings.position_embedding.weight"][None],
    "Transformer/encoder_norm/scale": sd["vision_model.post_layernorm.weight"],
    "Transformer/encoder_norm/bias": sd["vision_model.post_layernorm.bias"],
    "MAPHead_0/probe": sd[f"{head}.probe"],
    "MAPHead_0/LayerNorm_0/scale": sd[f"{head}.layernorm.weight"],
    "MAPHead_0/LayerNorm_0/bias": sd[f"{head}.layernorm.bias"],
    "MAPHead_0/MultiHeadDotProductAttention_0/out/kernel": sd[
      f"{head}.attention.out_proj.weight"
    ].T.reshape(HEADS, d, w),
    "MAPHead_0/MultiHeadDotProductAttention_0/out/bias": sd[f"{head}.attention.out_proj.bias"],
  }
  for name, kernel, bias in (("query", q, qb), ("key", k, kb), ("value", v, vb)):
    img[f"MAPHead_0/MultiHeadDotProductAttention_0/{name}/kernel"] = kernel.T.reshape(w, HEADS, d)
    img[f"MAPHead_0/MultiHeadDotProductAttention_0/{name}/bias"] = bias.reshape(HEADS, d)
  for i, fc in enumerate(("fc1", "fc2")):
    img[f"MAPHead_0/MlpBlock_0/Dense_{i}/kernel"] = sd[f"{head}.mlp.{fc}.weight"].T
    img[f"MAPHead_0/MlpBlock_0/Dense_{i}/bias"] = sd[f"{head}.mlp.{fc}.bias"]
  img.update(
    {
      f"Transformer/encoderblock/{k}": x
      for k, x in _scanned(sd, "vision_model.encoder.layers", w).items()
    }
  )
  txt = {
    "Embed_0/embedding": sd["text_model.embeddings.token_embedding.weight"],
    "pos_embedding": sd["text_model.embeddings.position_embedding.weight"][None],
    "Encoder_0/encoder_norm/scale": sd["text_model.final_layer_norm.weight"],
    "Encoder_0/encoder_norm/bias": sd["text_model.final_layer_norm.bias"],
    "head/kernel": sd["text_model.head.weight"].T,
    "head/bias": sd["text_model.head.bias"],
  }
  txt.update(
    {
      f"Encoder_0/encoderblock/{k}": x
      for k, x in _scanned(sd, "text_model.encoder.layers", w).items()
    }
  )
  out = {f"params/img/{k}": x for k, x in img.items()}
  out.update({f"params/txt/{k}": x for k, x in txt.items()})
  out["params/t"], out["params/b"] = sd["logit_scale"].reshape(1), sd["logit_bias"].reshape(1)
  return {k: np.ascontiguousarray(x, np.float32) for k, x in out.items()}


def make(out_dir: str) -> None:
  import sys

  sys.path.insert(
    0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
  )
  from tests import peers

  peers.install_torchvision_stand_in()
  import torch
  import transformers

  torch.manual_seed(2)
  model = transformers.SiglipModel(transformers.SiglipConfig(**_fixtures_hf.SIGLIP_TINY)).eval()
  _fixtures_hf.randomize(model, torch, 2)
  sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
  directory = os.path.join(out_dir, "big_vision_siglip")
  os.makedirs(directory, exist_ok=True)
  np.savez(os.path.join(directory, "siglip_tiny.npz"), **to_big_vision(sd, _fixtures_hf.WIDTH))
  x = _fixtures_hf.inputs()
  expected = _fixtures_hf.embeddings(model, x, torch)
  np.savez(
    os.path.join(directory, "expected.npz"),
    **x,
    **{f"expected_{k}": v for k, v in expected.items()},
  )


if __name__ == "__main__":
  make(os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures"))
