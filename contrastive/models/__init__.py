"""Encoders and the n-tower contrastive model (Flax Linen).

```python
model = models.make_model(config.model)            # a TowerModel (a flax.linen.Module)
variables = model.init(rng, model.dummy_batch(2), train=False)
emb, extras = model.apply(variables, batch, train=False)   # emb[m]: [batch, embed_dim], unit norm
```

Every key of a model config, with its default: `models.model_config()` (what each key does: the
docstring of `contrastive.models.config`; sizes by name: `SIZES`, `TEXT_SIZES`). The inputs and
`extras` of `apply`: `TowerModel.__call__`. The guide is docs/models.md: encoders, sizes,
options, locking (LiT), sharding, the captioning decoder (CoCa) and `generate`, pretrained
checkpoints (docs/pretrained.md).
"""

from contrastive.models.cnn import CNN
from contrastive.models.coca import CoCa
from contrastive.models.coca_configs import COCA_VARIANTS
from contrastive.models.coca_configs import coca_config
from contrastive.models.config import ENCODERS
from contrastive.models.config import count_params
from contrastive.models.config import make_encoder
from contrastive.models.config import make_model
from contrastive.models.config import model_config
from contrastive.models.decoder import CocaText
from contrastive.models.decoder import MultimodalDecoder
from contrastive.models.generate import generate
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
from contrastive.models.towers import prior_bias
from contrastive.models.vit import ViT
from contrastive.models.vit import posemb_sincos_2d

__all__ = [
  "ACTIVATIONS",
  "CNN",
  "COCA_VARIANTS",
  "CONVENTIONS",
  "CoCa",
  "CocaText",
  "ENCODERS",
  "Encoder",
  "MLPEncoder",
  "MultimodalDecoder",
  "Pretrained",
  "PretrainedError",
  "REMAT_POLICIES",
  "SIZES",
  "TEXT_SIZES",
  "TextTransformer",
  "Tower",
  "TowerModel",
  "ViT",
  "coca_config",
  "count_params",
  "decode_text_variant",
  "decode_vit_variant",
  "generate",
  "load_pretrained",
  "lock",
  "make_encoder",
  "make_model",
  "model_config",
  "posemb_sincos_2d",
  "prior_bias",
  "save_pretrained",
  "stack_layers",
  "trainable_labels",
  "trainable_mask",
  "unstack_layers",
  "weight_decay_mask",
]
