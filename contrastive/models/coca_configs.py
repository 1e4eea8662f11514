"""CoCa model configs: the `decoder` key of a model config, and open_clip's CoCa sizes by name.

A model config with a `decoder` (a dict, not None) builds a `CoCa` (`models.make_model`):

```python
model = ml_collections.ConfigDict(dict(
    embed_dim=512,
    encoders=dict(
        image=dict(kind="vit", variant="B/32", image_size=224, pre_norm=True, cls_posemb=True,
                   patch_bias=False, final_norm="none", norm_eps=1e-5),
        text=dict(kind="coca_text", variant="CLIP-B", vocab_size=49408, max_len=76,
                  norm_eps=1e-5),
    ),
    decoder=dict(variant="CLIP-B", norm_eps=1e-5, pool_queries=256, pool_heads=8),
    ...                                # the other model keys, as for a TowerModel
))
```

`decoder` holds the fields of `MultimodalDecoder` (`variant` or `width`/`depth`/`mlp_dim`/
`num_heads`, `vocab_size` and `max_len`, which default to the text tower's, `act`, `dropout`,
`norm_eps`, `remat`, `scan`, `dtype`) and the image pooler's `pool_queries` (default 256) and
`pool_heads` (default 8). `coca_config("B/32")` gives open_clip's `coca_ViT-B-32` exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
from typing import Any

import flax.linen as nn
import ml_collections
from ml_collections import config_dict

from contrastive.models import layers
from contrastive.models.coca import MODALITIES
from contrastive.models.coca import CoCa
from contrastive.models.decoder import MultimodalDecoder

# Config keys of `decoder` that are CoCa's (the image pooler), besides MultimodalDecoder's fields.
POOL_KEYS = ("pool_queries", "pool_heads")


def decoder_keys() -> tuple[str, ...]:
  """The keys a model config's `decoder` accepts."""
  fields = tuple(
    f.name for f in dataclasses.fields(MultimodalDecoder) if f.name not in ("parent", "name")
  )
  return fields + POOL_KEYS


def check_towers(encoder_configs: Mapping[str, Any]) -> None:
  """Raises one line unless the encoders are a `vit` image tower and a `coca_text` text tower."""
  if not isinstance(encoder_configs, Mapping) or set(encoder_configs) != set(MODALITIES):
    names = list(encoder_configs) if isinstance(encoder_configs, Mapping) else encoder_configs
    raise ValueError(
      f"A model with a decoder (CoCa) needs exactly the encoders 'image' and 'text', got {names}."
    )
  for modality, want, why in (
    ("text", "coca_text", "the text tower with its class token"),
    ("image", "vit", "its pooler reads the ViT's tokens"),
  ):
    encoder = encoder_configs[modality]
    kind = encoder.get("kind") if isinstance(encoder, Mapping) else None
    if kind != want:
      raise ValueError(
        f"A model with a decoder (CoCa) needs encoders.{modality}.kind {want!r} ({why}), got "
        f"{kind!r}."
      )
  for modality, enc in encoder_configs.items():
    if isinstance(enc, Mapping) and (enc.get("proj_bias") or enc.get("proj", True) is False):
      raise ValueError(
        f"CoCa's towers have a bias-free head: encoders.{modality} cannot set proj_bias=True "
        f"or proj=False."
      )


def make_coca(
  encoders: Mapping[str, nn.Module],
  decoder_config: Mapping[str, Any],
  *,
  embed_dim: int,
  defaults: Mapping[str, Any],
  locked: Sequence[str],
  **init: float | None,
) -> CoCa:
  """Builds a `CoCa` from its built encoders and the model config's `decoder` dict.

  The decoder's `vocab_size` and `max_len` default to the text tower's, and the model's shared
  keys (`defaults`: `dtype`, `remat`, `scan`) reach it as they reach the encoders.

  Raises:
    ValueError: `decoder_config` is not a mapping or has an unknown key (the message lists the
      known ones), or a bad value.
  """
  if not isinstance(decoder_config, Mapping):
    raise ValueError(
      f"The model config's 'decoder' must be a dict of decoder fields or None, got "
      f"{decoder_config!r}; known keys: {sorted(decoder_keys())}."
    )
  config = dict(decoder_config)
  unknown = sorted(set(config) - set(decoder_keys()))
  if unknown:
    raise ValueError(
      f"Unknown key {unknown[0]!r} in the model config's decoder; known keys: "
      f"{sorted(decoder_keys())}."
    )
  pool = {key: config.pop(key) for key in POOL_KEYS if config.get(key) is not None}
  config = {k: v for k, v in config.items() if v is not None}
  text = encoders["text"]
  config.setdefault("vocab_size", text.vocab_size)
  config.setdefault("max_len", text.max_len)
  for key, value in defaults.items():
    config.setdefault(key, value)
  return CoCa(
    image_encoder=encoders["image"],
    text_encoder=text,
    decoder=MultimodalDecoder(**config),
    embed_dim=embed_dim,
    locked=tuple(locked),
    **pool,
    **init,
  )


# name: (image ViT variant, image size, text/decoder size, embed_dim, pool heads), after
# open_clip's model_configs/coca_ViT-B-32.json and coca_ViT-L-14.json; "mu" a tiny one for tests.
COCA_VARIANTS: dict[str, tuple[str, int, str, int, int]] = {
  "mu": ("mu/8", 32, "mu", 32, 2),
  "B/32": ("B/32", 224, "CLIP-B", 512, 8),
  "L/14": ("L/14", 224, "CLIP-L", 768, 8),  # the pooler's 8 heads: open_clip's vision_cfg
}


def coca_config(
  variant: str = "mu",
  *,
  image_size: int | None = None,
  vocab_size: int = 49408,
  max_len: int = 76,
  pool_queries: int = 256,
) -> ml_collections.ConfigDict:
  """A CoCa model config in open_clip's layout (`coca_ViT-B-32`, `coca_ViT-L-14`, or tiny).

  The ViT is open_clip's (a pre-LayerNorm, the class token's position row, no patch bias, no
  final LayerNorm: the pooler's own come after), GELU, LayerNorm epsilon 1e-5; the text
  tower and decoder have `max_len` 76 (open_clip's `context_length`) and CLIP's vocabulary.

  Args:
    variant: a key of `COCA_VARIANTS`.
    image_size: the image side (default: the variant's).
    vocab_size, max_len: the text tower's and decoder's vocabulary and longest text.
    pool_queries: the image pooler's queries (256 in open_clip's configs).

  Example:
    >>> cfg = coca_config("B/32")
    >>> model = make_model(cfg)            # a CoCa; cfg.decoder.variant == "CLIP-B"
  """
  layers.check_choice(variant, COCA_VARIANTS, what="CoCa variant")
  vit, size, text, embed_dim, heads = COCA_VARIANTS[variant]
  eps = 1e-5
  return ml_collections.ConfigDict(
    dict(
      embed_dim=embed_dim,
      convention="clip",
      scale_init=config_dict.placeholder(float),
      bias_init=config_dict.placeholder(float),
      max_scale=config_dict.placeholder(float),
      dtype="float32",
      remat="none",
      scan=False,
      locked=(),
      encoders=dict(
        image=dict(
          kind="vit",
          variant=vit,
          image_size=image_size or size,
          pre_norm=True,
          cls_posemb=True,
          patch_bias=False,
          final_norm="none",
          norm_eps=eps,
        ),
        text=dict(
          kind="coca_text", variant=text, vocab_size=vocab_size, max_len=max_len, norm_eps=eps
        ),
      ),
      decoder=dict(
        variant=text,
        vocab_size=vocab_size,
        max_len=max_len,
        norm_eps=eps,
        pool_queries=pool_queries,
        pool_heads=heads,
      ),
    )
  )
