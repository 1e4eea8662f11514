"""Building a `TowerModel` from an `ml_collections` model config.

The config (usually `config.model` of a run config) names the modalities and their encoders:

```python
model = ml_collections.ConfigDict(dict(
    embed_dim=512,
    convention="clip",           # "clip" or "siglip": defaults for the three keys below
    scale_init=None,             # the initial scale t (not its log); None: the convention's
    bias_init=None,              # the initial bias b; None: the convention's
    max_scale=None,              # clip exp(log_scale) here; None: the convention's; inf: never
    dtype="float32",             # compute dtype of every encoder that does not set its own
    remat="none", scan=False,    # likewise, for the transformer encoders
    locked=(),                   # LiT: e.g. ("image",) or ("image/encoder",)
    encoders=dict(
        image=dict(kind="vit", variant="B/16", image_size=224, pool="cls"),
        text=dict(kind="text", variant="CLIP-B", vocab_size=49408, max_len=77, pool="eot"),
    ),
))
```

Each encoder config has `kind` (a key of `ENCODERS`), optional `proj_bias` and `proj` (the
tower's head: its bias, and whether there is one; `proj=False` needs the encoder's width to equal
`embed_dim`), and otherwise the fields of that encoder class (`ViT`, `TextTransformer`,
`MLPEncoder`, `CNN`); an unknown key fails with the list of known ones. The shared keys
(`dtype`, `remat`, `scan`) reach only the encoders that have that field (`CNN` and `MLPEncoder`
take `dtype` alone).

`decoder` (default None) adds a captioning decoder: a dict of the decoder's fields builds a
`CoCa` (image and `coca_text` encoders; keys and an example: `contrastive.models.coca_configs`).
"""

from __future__ import annotations

from collections.abc import Mapping
import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import ml_collections
from ml_collections import config_dict

from contrastive.models import cnn
from contrastive.models import coca_configs
from contrastive.models import decoder as decoder_lib
from contrastive.models import layers
from contrastive.models import mlp
from contrastive.models import text
from contrastive.models import towers
from contrastive.models import vit

# kind: encoder class.
ENCODERS: dict[str, type[nn.Module]] = {
  "vit": vit.ViT,
  "text": text.TextTransformer,
  "mlp": mlp.MLPEncoder,
  "cnn": cnn.CNN,
  "coca_text": decoder_lib.CocaText,
}

# Keys of the model config, and the encoder options they set for every encoder having them.
MODEL_KEYS = (
  "encoders",
  "embed_dim",
  "convention",
  "scale_init",
  "bias_init",
  "max_scale",
  "dtype",
  "remat",
  "scan",
  "locked",
  "decoder",
)
SHARED_ENCODER_KEYS = ("dtype", "remat", "scan")
TOWER_KEYS = ("kind", "proj_bias", "proj")


def _to_dict(config: Any) -> dict[str, Any]:
  if isinstance(config, ml_collections.ConfigDict):
    return config.to_dict()
  if isinstance(config, Mapping):
    return {
      k: (_to_dict(v) if isinstance(v, (Mapping, ml_collections.ConfigDict)) else v)
      for k, v in config.items()
    }
  raise ValueError(
    f"A model config must be a ConfigDict or a mapping, got {type(config).__name__}."
  )


def encoder_fields(kind: str) -> tuple[str, ...]:
  """The config keys an encoder of `kind` accepts (besides those of `TOWER_KEYS`)."""
  layers.check_choice(kind, ENCODERS, what="encoder kind")
  return tuple(
    f.name for f in dataclasses.fields(ENCODERS[kind]) if f.name not in ("parent", "name")
  )


def make_encoder(
  config: Mapping[str, Any] | ml_collections.ConfigDict,
  *,
  defaults: Mapping[str, Any] | None = None,
  modality: str = "?",
) -> nn.Module:
  """Builds one encoder from `{"kind": ..., **fields}` (keys of `TOWER_KEYS` are skipped).

  Args:
    config: the encoder config.
    defaults: values for fields the config does not set (only those the encoder has).
    modality: the modality name, for error messages.

  Raises:
    ValueError: no or an unknown `kind`, an unknown key, or a bad value (from the encoder).
  """
  config = _to_dict(config)
  if "kind" not in config:
    raise ValueError(
      f"The encoder config of modality {modality!r} has no 'kind'; known kinds: {sorted(ENCODERS)}."
    )
  kind = config["kind"]
  if kind not in ENCODERS:
    raise ValueError(
      f"Unknown encoder kind {kind!r} for modality {modality!r}; known kinds: {sorted(ENCODERS)}."
    )
  fields = encoder_fields(kind)
  kwargs = {k: v for k, v in config.items() if k not in TOWER_KEYS}
  unknown = sorted(set(kwargs) - set(fields))
  if unknown:
    raise ValueError(
      f"Unknown key {unknown[0]!r} in the {kind!r} encoder config of modality "
      f"{modality!r}; known keys: {sorted(fields + TOWER_KEYS)}."
    )
  for key, value in (defaults or {}).items():
    if key in fields and key not in kwargs:
      kwargs[key] = value
  for key in ("image_size", "widths"):  # lists from a config file; modules want tuples
    if isinstance(kwargs.get(key), list):
      kwargs[key] = tuple(kwargs[key])
  return ENCODERS[kind](**kwargs)


def make_model(config: Mapping[str, Any] | ml_collections.ConfigDict) -> towers.TowerModel:
  """Builds the `TowerModel` (a `CoCa` with `decoder`) a model config describes (see the module
  docstring for keys).

  Args:
    config: the model config: `encoders` (`{modality: encoder config}`) and `embed_dim` are
      required; every other key of `MODEL_KEYS` is optional.

  Returns:
    An unbound `TowerModel`; `model.init(rng, model.dummy_batch(), train=False)` makes its
    variables.

  Raises:
    ValueError: an unknown key, convention, encoder kind or size name, a modality without an
      encoder config, or an inconsistent size (e.g. an image size not divisible by the patch).

  Example:
    >>> model = make_model(model_config(image="mu/8", text="mu", image_size=32))
    >>> variables = model.init(jax.random.key(0), model.dummy_batch(2), train=False)
    >>> emb, extras = model.apply(variables, {"text": tokens}, train=False)
  """
  config = _to_dict(config)
  unknown = sorted(set(config) - set(MODEL_KEYS))
  if unknown:
    raise ValueError(f"Unknown model config key {unknown[0]!r}; known keys: {sorted(MODEL_KEYS)}.")
  for key in ("encoders", "embed_dim"):
    if config.get(key) is None:
      raise ValueError(f"The model config needs {key!r}.")
  convention = config.get("convention") or "clip"
  layers.check_choice(convention, towers.CONVENTIONS, what="scale/bias convention")
  init = dict(towers.CONVENTIONS[convention])
  for key in ("scale_init", "bias_init", "max_scale"):
    if config.get(key) is not None:
      init[key] = float(config[key])
  if init["max_scale"] is not None and math.isinf(init["max_scale"]):
    init["max_scale"] = None

  encoder_configs = config["encoders"]
  if not isinstance(encoder_configs, Mapping) or not encoder_configs:
    raise ValueError(
      f"The model config's 'encoders' must map modality names to encoder "
      f"configs, got {encoder_configs!r}."
    )
  if config.get("decoder") is not None:
    coca_configs.check_towers(encoder_configs)
  defaults = {k: config[k] for k in SHARED_ENCODER_KEYS if config.get(k) is not None}
  encoders, proj_bias, proj = {}, {}, {}
  for modality, enc_config in encoder_configs.items():
    if not isinstance(enc_config, Mapping):
      raise ValueError(
        f"Modality {modality!r} has no encoder config (got {enc_config!r}); give "
        f"{{'kind': one of {sorted(ENCODERS)}, ...}}."
      )
    encoders[modality] = make_encoder(enc_config, defaults=defaults, modality=modality)
    proj_bias[modality] = bool(enc_config.get("proj_bias", False))
    proj[modality] = bool(enc_config.get("proj", True))
  locked = config.get("locked") or ()
  if isinstance(locked, str):
    locked = (locked,)
  if config.get("decoder") is not None:
    return coca_configs.make_coca(
      encoders,
      config["decoder"],
      embed_dim=config["embed_dim"],
      defaults=defaults,
      locked=tuple(locked),
      **init,
    )
  return towers.TowerModel(
    encoders=encoders,
    embed_dim=config["embed_dim"],
    proj_bias=proj_bias,
    proj=proj,
    locked=tuple(locked),
    **init,
  )


def model_config(
  *,
  image: str | None = "mu/8",
  text: str | None = "mu",
  image_size: int = 32,
  vocab_size: int = 1024,
  max_len: int = 16,
  embed_dim: int = 64,
  convention: towers.Convention = "clip",
  decoder: str | None = None,
) -> ml_collections.ConfigDict:
  """A model config with an image ViT and a text transformer by size name (tiny defaults).

  A starting point for run configs: change or add keys afterwards
  (`cfg.encoders.image.pool = "map"`, `cfg.encoders.audio = dict(kind="vit", ...)`).

  Args:
    image: the ViT variant, e.g. `"B/16"`; None for no image tower.
    text: the text size, e.g. `"B"` or `"CLIP-B"`; None for no text tower.
    image_size: the image side.
    vocab_size, max_len: the text tower's vocabulary and position table.
    embed_dim: the shared embedding size.
    convention: `"clip"` or `"siglip"` scale and bias initialization.
    decoder: a captioning decoder's size (a `TEXT_SIZES` name, e.g. `"mu"`), making a CoCa:
      the text tower is then `coca_text` and the ViT has no final LayerNorm (the attentional
      pooler's come after), as in `coca_config`. None (the default): the `decoder` key is None.
  """
  encoders = {}
  if image is not None:
    encoders["image"] = dict(kind="vit", variant=image, image_size=image_size)
    if decoder is not None:
      encoders["image"]["final_norm"] = "none"
  if text is not None:
    kind = "text" if decoder is None else "coca_text"
    encoders["text"] = dict(kind=kind, variant=text, vocab_size=vocab_size, max_len=max_len)
  return ml_collections.ConfigDict(
    dict(
      encoders=encoders,
      embed_dim=embed_dim,
      convention=convention,
      scale_init=config_dict.placeholder(float),
      bias_init=config_dict.placeholder(float),
      max_scale=config_dict.placeholder(float),
      dtype="float32",
      remat="none",
      scan=False,
      locked=(),
      decoder=None if decoder is None else dict(variant=decoder, vocab_size=vocab_size),
    )
  )


def count_params(tree: Any) -> int:
  """The number of scalars in a pytree of arrays (or of `jax.ShapeDtypeStruct`s)."""
  return int(sum(math.prod(x.shape) for x in jax.tree.leaves(nn.meta.unbox(tree))))
