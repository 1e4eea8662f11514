"""Tiny imported checkpoints for the tests of what runs on one: random weights, saved in a
family's layout with `models.save_pretrained`, small enough to build in a second.

The CLIP one has OpenAI's 49,408-entry vocabulary, so its tokenizer is the built-in `clip` BPE.
The SigLIP one has the layout of transformers' `SiglipModel` (MAP head, no image projection,
bidirectional text pooled at the last token, logit bias) and no tokenizer file: only tests that
read its configs use it.
"""

from __future__ import annotations

import os

import flax
import flax.linen as nn
import jax
import ml_collections
import numpy as np
import pytest

from contrastive import models

VOCAB = 49_408
MAX_LEN = 16
IMAGE_SIZE = 32


def tiny_config(convention: str = "clip", family: str = "hf") -> ml_collections.ConfigDict:
  """A one-layer ViT and text transformer in a layout `family` holds exactly.

  open_clip's class token has a position embedding of its own (`cls_posemb`); transformers'
  CLIPModel adds its first position row to the class token, which this library holds as a class
  token without one.
  """
  cfg = models.model_config(
    image="mu/8",
    text="mu",
    image_size=IMAGE_SIZE,
    vocab_size=VOCAB,
    max_len=MAX_LEN,
    embed_dim=32,
    convention=convention,
  )
  if convention == "clip":
    cfg.encoders.image.update(
      pool="cls",
      pre_norm=True,
      act="quick_gelu",
      patch_bias=False,
      norm_eps=1e-5,
      cls_posemb=family == "open_clip",
    )
    cfg.encoders.text.update(
      causal=True, pool="eot", act="quick_gelu", norm_eps=1e-5, pad_id=None
    )  # CLIP attends to its padding (causally, after eot)
  else:
    cfg.encoders.image.update(pool="map", act="gelu_tanh", proj=False, norm_eps=1e-6)
    cfg.encoders.text.update(
      causal=False, pool="last", act="gelu_tanh", proj_bias=True, pad_id=None, norm_eps=1e-6
    )
  return cfg


def random_params(cfg: ml_collections.ConfigDict, seed: int = 0) -> dict:
  """Random float32 parameters of the model's shapes, drawn with numpy (no compilation).

  Norm gains near 1, everything else small, the logit scale at CLIP's initial `log(1/0.07)`.
  """
  model = models.make_model(cfg)
  abstract = jax.eval_shape(
    lambda: model.init(jax.random.key(0), model.dummy_batch(1), train=False)
  )
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = str(getattr(path[-1], "key", path[-1]))
    if name == "log_scale":
      return np.full(leaf.shape, np.log(1 / 0.07), np.float32)
    value = rng.normal(0.0, 0.05, leaf.shape).astype(np.float32)
    return value + 1.0 if name == "scale" else value

  return jax.tree_util.tree_map_with_path(draw, nn.unbox(abstract)["params"])


def save_tiny(
  path: str | os.PathLike, *, convention: str = "clip", family: str = "hf", seed: int = 0
) -> tuple[ml_collections.ConfigDict, dict]:
  """Writes a tiny random checkpoint to `path`; returns its model config and parameters."""
  cfg = tiny_config(convention, family)
  params = random_params(cfg, seed)
  models.save_pretrained(cfg, params, os.fspath(path), family=family)
  return cfg, params


def embed(pre, inputs: dict[str, np.ndarray]):
  """The loaded model on a fixture's inputs (`images` [batch, size, size, 3], `ids`
  [batch, seq_len]): `(embeddings, extras)` as the model's `apply` returns them."""
  model = models.make_model(pre.model_config)
  return model.apply(
    {"params": pre.params}, {"image": inputs["images"], "text": inputs["ids"]}, train=False
  )


def one_line_error(match: str | None, fn, *args, **kwargs) -> str:
  """`fn(*args, **kwargs)` raises a `PretrainedError` (whose message `re.search`es `match`, unless
  None) on one line; returns its message."""
  with pytest.raises(models.PretrainedError, match=match) as info:
    fn(*args, **kwargs)
  message = str(info.value)
  assert "\n" not in message, message
  return message


def assert_params_bit_exact(a, b) -> None:
  """Two params trees hold the same keys and the same float32 bytes (a round trip)."""
  a, b = (flax.traverse_util.flatten_dict(jax.tree.map(np.asarray, t), sep="/") for t in (a, b))
  assert sorted(a) == sorted(b)
  for key in a:
    assert a[key].dtype == b[key].dtype == np.float32, key
    assert a[key].shape == b[key].shape and a[key].tobytes() == b[key].tobytes(), key
