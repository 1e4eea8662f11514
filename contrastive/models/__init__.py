"""Encoders and the n-tower contrastive model (Flax Linen).

What the trainer uses:

```python
from contrastive import models, parallel

model = models.make_model(config.model)            # -> models.TowerModel (a flax.linen.Module)
variables = model.init(rng, model.dummy_batch(2), train=False)
params = flax.linen.unbox(variables)["params"]     # plain float32 arrays
emb, extras = model.apply({"params": params}, batch, train=True, rngs={"dropout": key})
loss = losses.softmax_loss(emb["image"], emb["text"], extras["scale"])      # or sigmoid_loss(
                                                   # ..., extras["scale"], extras["bias"])
```

- `model.apply(variables, batch, *, train)`: `batch` is `{modality: array}` for any subset of
  the model's modalities (`image`: `[batch, H, W, 3]` float; `text`: `[batch, seq_len]` int32,
  0 = padding). Returns `(embeddings, extras)`: `embeddings[modality]` is `[batch, embed_dim]`
  float32 with unit L2 norm; `extras["scale"]` is the clipped `exp(log_scale)` and
  `extras["bias"]` the logit bias or None, plus `extras["{modality}/features"]` (pooled,
  pre-projection `[batch, width]`) and `extras["{modality}/norm"]`. A key that is not a
  modality raises ValueError. With `train=True` and dropout or stochastic depth configured,
  pass `rngs={"dropout": key}`.
- Locking (LiT): `config.model.locked = ("image",)`; the model stops the locked tower's
  gradient, and `models.lock(tx, params, locked=model.locked)` (or `models.trainable_mask`,
  `models.trainable_labels` with `optax.multi_transform`/`optax.masked`) gives its leaves no
  update and no optimizer state. `models.weight_decay_mask(params)` selects kernels and
  embedding tables for weight decay.
- Sharding: every parameter carries logical axis names; `parallel.LOGICAL_RULES` maps them onto
  the mesh axes `data`, `fsdp`, `tensor`; `parallel.logical_shardings(abstract_variables, mesh)`
  gives the params' `NamedSharding`s (`parallel.sharded_init(init_fn, mesh, rng)` creates them
  in place) and `parallel.use_rules(mesh)` is the context to trace `apply` in, so that the
  activations follow the rules too (see `contrastive.parallel`).
- Checkpoint layouts: `models.stack_layers` / `models.unstack_layers` convert parameters between
  unrolled (`encoderblock_0`, ...) and scanned (`encoderblock`, stacked) layers.
- Published checkpoints: `models.load_pretrained(path, name=None) -> models.Pretrained`
  (`model_config`, float32 `params`, the checkpoint's `data` settings) reads open_clip / OpenAI
  CLIP, Hugging Face CLIP and SigLIP, and big_vision SigLIP checkpoints;
  `models.save_pretrained(pre_or_config, params, path, family="open_clip" | "hf")` writes them
  back (see `models.pretrained` and docs/pretrained.md).

Model config keys (`config.model`; see `config.py`): `encoders` (`{modality: {"kind": "vit" |
"text" | "mlp" | "cnn", "variant": ..., **encoder fields, "proj_bias": bool}}`), `embed_dim`,
`convention` (`"clip"` | `"siglip"`), `scale_init`, `bias_init`, `max_scale`, `dtype`, `remat`,
`scan`, `locked`. `models.model_config(image="B/16", text="B", ...)` builds one.

Sizes by name: `sizes.SIZES` (`mu`, `nano`, `micro`, `Ti`, `S`, `M`, `B`, `L`, `So400m`, `H`, `g`,
`G`; a ViT variant adds the patch, `"B/16"`) and `sizes.TEXT_SIZES` (the same plus `CLIP-B`,
`CLIP-L`, `CLIP-H`).
"""

from contrastive.models.cnn import CNN
from contrastive.models.config import ENCODERS
from contrastive.models.config import count_params
from contrastive.models.config import make_encoder
from contrastive.models.config import make_model
from contrastive.models.config import model_config
from contrastive.models.layers import ACTIVATIONS
from contrastive.models.layers import REMAT_POLICIES
from contrastive.models.layers import Encoder
from contrastive.models.layers import stack_layers
from contrastive.models.layers import unstack_layers
from contrastive.models.locking import lock
from contrastive.models.locking import trainable_labels
from contrastive.models.locking import trainable_mask
from contrastive.models.locking import weight_decay_mask
from contrastive.models.mlp import MLPEncoder
from contrastive.models.pretrained import Pretrained
from contrastive.models.pretrained import PretrainedError
from contrastive.models.pretrained import load_pretrained
from contrastive.models.pretrained import save_pretrained
from contrastive.models.sizes import SIZES
from contrastive.models.sizes import TEXT_SIZES
from contrastive.models.sizes import decode_text_variant
from contrastive.models.sizes import decode_vit_variant
from contrastive.models.text import TextTransformer
from contrastive.models.towers import CONVENTIONS
from contrastive.models.towers import Tower
from contrastive.models.towers import TowerModel
from contrastive.models.vit import ViT
from contrastive.models.vit import posemb_sincos_2d

__all__ = [
  "ACTIVATIONS",
  "CNN",
  "CONVENTIONS",
  "ENCODERS",
  "Encoder",
  "MLPEncoder",
  "Pretrained",
  "PretrainedError",
  "REMAT_POLICIES",
  "SIZES",
  "TEXT_SIZES",
  "TextTransformer",
  "Tower",
  "TowerModel",
  "ViT",
  "count_params",
  "decode_text_variant",
  "decode_vit_variant",
  "load_pretrained",
  "lock",
  "make_encoder",
  "make_model",
  "model_config",
  "posemb_sincos_2d",
  "save_pretrained",
  "stack_layers",
  "trainable_labels",
  "trainable_mask",
  "unstack_layers",
  "weight_decay_mask",
]
